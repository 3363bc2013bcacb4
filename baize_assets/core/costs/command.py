"""``baize estimate``: the forecast of the configuration's paid stages, printed; nothing is sent."""

from __future__ import annotations

import json
import sys

from ..config.pipeline import ConfigError, load_config, output_dir
from ..seeds.formats import SeedFileError
from ..storage import Layout
from .forecast import ForecastError
from .report import text_table, total_dollars
from .stages import STAGES, Selection, forecast_selection


def _selection(sources: list[str] | None, shards: str | None, stages: str) -> Selection:
    chosen = tuple(s.strip() for s in stages.split(",") if s.strip())
    unknown = sorted(set(chosen) - set(STAGES))
    if unknown:
        raise ValueError(f"--stages: unknown {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    try:
        shard_numbers = tuple(int(s) for s in shards.split(",")) if shards else None
    except ValueError:
        raise ValueError(f"--shards: {shards!r} is not a comma-separated list of shard numbers") from None
    return Selection(tuple(sources) if sources else None, shard_numbers, chosen)


def estimate_main(sources: list[str] | None, shards: str | None, stages: str, as_json: bool) -> int:
    try:
        config = load_config()
        selection = _selection(sources, shards, stages)
        declared = {s.name for s in config.sources}
        for name in selection.sources or ():
            if name not in declared:
                raise ValueError(f"--source: '{name}' is not declared (declared: {', '.join(sorted(declared))})")
        forecast = forecast_selection(config, Layout(output_dir()), selection)
    except (ConfigError, ForecastError, SeedFileError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if as_json:
        dollars, expected = total_dollars(forecast)
        print(json.dumps({"stages": [s.as_dict() for s in forecast],
                          "total_dollars": [round(dollars.low, 6), round(dollars.high, 6)],
                          "expected_dollars": round(expected, 6)}, indent=2))
    else:
        print(text_table(forecast))
    return 0
