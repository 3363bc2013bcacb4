"""``costs/forecast``: what every paid stage not yet paid for will cost, before it runs (``baize estimate``).

With ``teacher.budget.max_forecast_dollars`` set, its blocking check fails when the
expected cost exceeds the limit; the collecting assets then depend on the forecast and
their jobs materialize it first, so a scheduled refresh or a backfill of those jobs stops
before its first request.
"""

import json
from typing import Callable, TypeVar

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ..core.config.pipeline import PipelineConfig
from ..core.costs.forecast import FORECAST_VERSION, ForecastError, StageForecast
from ..core.costs.report import assumptions, markdown_table, total_dollars
from ..core.costs.stages import forecast_selection
from ..core.storage import write_text_atomic
from ..resources import BaizeStorage
from .keys import COST_FORECAST_KEY, COSTS_GROUP, seed_key
from .metadata import text_version

FORECAST_CHECK = "forecast_within_limit"
T = TypeVar("T")


def forecast_metadata(forecast: StageForecast | None, spent_dollars: float | None) -> dict:
    """A collecting step's forecast beside what it spent: floats under the same keys everywhere, so the
    UI plots them per partition over runs."""
    metadata = {} if spent_dollars is None else {"spend_dollars": round(spent_dollars, 6)}
    if forecast is None:
        return metadata
    metadata.update({
        "forecast_dollars_low": round(forecast.dollars.low, 6),
        "forecast_dollars_high": round(forecast.dollars.high, 6),
        "forecast_dollars_expected": round(forecast.expected_dollars, 6),
    })
    if spent_dollars is not None and forecast.expected_dollars > 0:
        metadata["forecast_ratio"] = round(spent_dollars / forecast.expected_dollars, 4)
    return metadata


def partition_forecast(context: AssetExecutionContext, forecast: Callable[[], T]) -> T | None:
    """A collecting step's own forecast, made before it asks anything; None (and why, in the log) when it
    cannot be priced: the step itself needs no price."""
    try:
        return forecast()
    except (ForecastError, OSError, ValueError) as error:
        context.log.info(f"no forecast for this step: {error}")
        return None


def forecast_gate(config: PipelineConfig) -> list[AssetKey]:
    """What a paid step depends on besides its input: the forecast, when its limit gates the collecting jobs."""
    return [COST_FORECAST_KEY] if config.teacher.budget.max_forecast_dollars is not None else []


def build_cost_forecast_asset(config: PipelineConfig) -> AssetsDefinition:
    limit = config.teacher.budget.max_forecast_dollars
    checks = [AssetCheckSpec(FORECAST_CHECK, asset=COST_FORECAST_KEY, blocking=True,
                             description=f"the expected cost of what is not yet paid for is at most ${limit:g} "
                                         "(teacher.budget.max_forecast_dollars)")] if limit is not None else []

    @asset(
        key=COST_FORECAST_KEY,
        deps=[seed_key(s.name) for s in config.sources],
        group_name=COSTS_GROUP,
        kinds={"json"},
        check_specs=checks,
        code_version=FORECAST_VERSION,
        description=(
            "What every paid stage not yet paid for will cost (transcripts, Baize v2 scores, judged evaluations), "
            "priced from what earlier collections of the same prompts and models cost; a low and a high figure "
            "per stage, nothing sent. `baize estimate` prints the same."
        ),
    )
    def forecast(context: AssetExecutionContext, storage: BaizeStorage) -> MaterializeResult:
        try:
            stages = forecast_selection(config, storage.layout)
        except ForecastError as error:
            raise Failure(description=str(error)) from None
        dollars, expected = total_dollars(stages)
        text = json.dumps({
            "stages": [s.as_dict() for s in stages], "total_dollars": [round(dollars.low, 6), round(dollars.high, 6)],
            "expected_dollars": round(expected, 6)}, indent=2) + "\n"
        path = write_text_atomic(text, storage.layout.cost_forecast())
        metadata = {
            "forecast_dollars_low": round(dollars.low, 6),
            "forecast_dollars_high": round(dollars.high, 6),
            "forecast_dollars_expected": round(expected, 6),
            "forecast": MetadataValue.md(markdown_table(stages)),
            "assumptions": MetadataValue.md("\n".join(f"- {line}" for line in assumptions(stages))),
            "path": MetadataValue.path(str(path)),
        }
        if limit is None:
            return MaterializeResult(metadata=metadata, data_version=text_version(text))
        within = expected <= limit
        if not within:
            context.log.warning(f"the forecast (${expected:.4f} expected) exceeds teacher.budget.max_forecast_dollars "
                                f"(${limit:g}): the runs it gates stop here")
        return MaterializeResult(metadata=metadata, data_version=text_version(text), check_results=[AssetCheckResult(
            check_name=FORECAST_CHECK, passed=within, severity=AssetCheckSeverity.ERROR,
            description=(f"expected ${expected:.4f} (${dollars.low:.4f} to ${dollars.high:.4f}) against a limit of "
                         f"${limit:g}" + ("" if within else "; raise the limit or narrow the run to go on")),
            metadata={"expected_dollars": round(expected, 6), "limit_dollars": float(limit)},
        )])

    return forecast
