"""Forecast against spend: v1, v1.5 and the Batch API on the shipped sources, over real HTTP.

For each way of collecting, in a fresh output folder: forecast shard 0 of every self-chat
source, collect it, then forecast shards 1-3 and collect them. The first source's shard 0
has no history; every later step is priced from what was collected before (its own
source's shards once they are enough, else the other sources'). Prints, per step, the forecast range, the expected
figure, the measured spend and their ratio, and whether the spend fell inside the range::

    .venv/bin/python benchmarks/bench_forecast.py

The teacher is the simulated one (priced like gpt-4o-mini by the shipped ``baize.yaml``),
so the figures say how well the method predicts a teacher from its own history; a real
teacher's answers vary more from seed to seed, which the range takes from the history too.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from baize_assets.core.collect.batch import collect_transcripts_batch
from baize_assets.core.collect.cache import TranscriptCache
from baize_assets.core.collect.collector import collect_transcripts
from baize_assets.core.config.pipeline import PipelineConfig, load_config
from baize_assets.core.costs.stages import transcripts_forecast
from baize_assets.core.seeds.table import load_seed_table
from baize_assets.core.storage import Layout
from baize_assets.teacher.server import SimulatedTeacher

WAYS = {"v1": {}, "v1.5": {"mode": "v1.5"}, "batch": {"api": "batch", "batch": {"poll_interval_s": 0.05}}}


def _config(settings: dict) -> PipelineConfig:
    config = load_config()
    return PipelineConfig.model_validate({**config.model_dump(), "teacher": {**config.teacher.model_dump(),
                                                                           **settings}})


def _collect(config: PipelineConfig, layout: Layout, server: SimulatedTeacher, source, shards: list[int]) -> float:
    seeds = load_seed_table(source).seeds
    seeds = seeds[seeds["shard"].isin(shards)].reset_index(drop=True)
    collect = collect_transcripts_batch if config.teacher.api == "batch" else collect_transcripts
    with TranscriptCache(layout.transcript_cache(source.name)) as cache:
        return collect(seeds, config.teacher, "sk-bench", server.base_url, lambda _: None, cache=cache).spent_dollars


def main() -> int:
    print(f"{'way':6s} {'step':50s} {'forecast':>21s} {'expected':>9s} {'spent':>9s} {'ratio':>6s}  in range")
    inside = total = 0
    for way, settings in WAYS.items():
        config = _config(settings)
        with tempfile.TemporaryDirectory() as folder, SimulatedTeacher(batch_completion_delay_s=0.05) as server:
            layout = Layout(Path(folder))
            for source in (s for s in config.sources if s.is_self_chat):
                for shards in ([0], [1, 2, 3]):
                    forecast = transcripts_forecast(config, layout, source, shards)
                    spent = _collect(config, layout, server, source, shards)
                    ok = forecast.dollars.low <= spent <= forecast.dollars.high
                    inside, total = inside + ok, total + 1
                    basis = "no history" if forecast.basis.startswith("no history") else "history"
                    label = f"{forecast.stage} ({basis})"
                    print(f"{way:6s} {label:50s} ${forecast.dollars.low:.5f}-${forecast.dollars.high:.5f} "
                          f"${forecast.expected_dollars:.5f} ${spent:.5f} {spent / forecast.expected_dollars:6.2f}  "
                          f"{'yes' if ok else 'NO'}")
    print(f"\nspend inside the forecast range: {inside} of {total} steps")
    return 0 if inside == total else 1


if __name__ == "__main__":
    sys.exit(main())
