"""Run the whole graph end to end on the offline defaults, as real Dagster runs.

Starts the simulated teacher as its own process (real HTTP), points the ``openai``
client at it, then materializes the graph in the Dagster instance of ``DAGSTER_HOME``
(the project's ``dagster.yaml``): the seed tables, every shard of every source, and the
adapters. The same runs show up in ``dagster dev`` afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .core.config.pipeline import PROJECT_ROOT, output_dir
from .core.storage import Layout, read_parquet, shard_keys

# Step logs at INFO: the run's full DEBUG event stream stays in the instance.
# The demo prints one line per run and the results; each step's own log stays in the
# instance (the UI shows it), and a warning still reaches the terminal.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

# Any key works against the simulated teacher; a real endpoint needs OPENAI_API_KEY.
SIMULATED_API_KEY = "sk-simulated-offline-demo"


@contextmanager
def simulated_teacher_process(*extra_args: str) -> Iterator[str]:
    """Start ``python -m baize_assets.teacher`` on a free port; yield its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "baize_assets.teacher", "--port", "0", *extra_args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        base_url = process.stdout.readline().strip()
        if not base_url.startswith("http"):
            raise RuntimeError(f"the simulated teacher did not start (exit code {process.poll()})")
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _use_project_instance() -> None:
    # The project's dagster.yaml keeps the instance in a git-ignored .dagster/ folder.
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT))
    os.chdir(os.environ["DAGSTER_HOME"])


def materialize_whole_graph(defs, config, instance, log=print) -> list[str]:
    """Materialize every asset: seed tables, each shard of each source, then the adapters.

    One Dagster run per job and shard, as a schedule or a backfill would launch them.
    Returns the run ids.
    """
    from .jobs import (
        COST_FORECAST_JOB,
        SEED_TABLES_JOB,
        TRAIN_ADAPTERS_JOB,
        corpus_job_name,
        distilled_training_job_name,
        feedback_job_name,
    )

    runs = [(SEED_TABLES_JOB, None), (COST_FORECAST_JOB, None)]
    runs += [(corpus_job_name(s.name), shard) for s in config.sources for shard in shard_keys(s.shards)]
    runs += [(TRAIN_ADAPTERS_JOB, None)]
    for plan in config.self_distillation:
        for source in map(config.source, config.adapter(plan.adapter).sources):
            runs += [(feedback_job_name(plan.adapter_name, source.name), shard) for shard in shard_keys(source.shards)]
        runs += [(distilled_training_job_name(plan.adapter_name), None)]
    run_ids = []
    for job_name, partition_key in runs:
        label = f"{job_name}[{partition_key}]" if partition_key else job_name
        log(label)
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, partition_key=partition_key, raise_on_error=False, run_config=QUIET_RUN_CONFIG
        )
        if not result.success:
            raise RuntimeError(f"run {result.run_id} of {label} failed; see `dagster dev` or the log above")
        run_ids.append(result.run_id)
    return run_ids


def _distilled_summary(config, layout: Layout, plan) -> str:
    """Baize v2 in one line: what the judge gave, what v2 trained on, v1's and v2's held-out loss."""
    import json

    import pandas as pd

    scores = pd.concat(
        read_parquet(layout.feedback_scores(plan.adapter_name, source.name, shard), columns=["score"])
        for source in map(config.source, config.adapter(plan.adapter).sources)
        for shard in shard_keys(source.shards)
    )
    trained = (read_parquet(layout.training_set(plan.adapter_name), columns=["split"])["split"] == "train").sum()
    losses = [json.loads(layout.evaluation(name).read_text())["adapter_eval_loss"]
              for name in (plan.adapter, plan.adapter_name)]
    return (f"v2 of {plan.adapter}: {scores['score'].notna().sum()} answers judged, mean score "
            f"{scores['score'].mean():.1f} (simulated judge), best answers of {trained} seeds; "
            f"held-out loss v1 {losses[0]:.3f}, v2 {losses[1]:.3f}")


def _cost_summary(instance, run_ids: list[str], layout: Layout) -> str:
    """The forecast made before the paid runs, against what they spent (0 when the caches held everything)."""
    import json

    from dagster import DagsterEventType

    forecast = json.loads(layout.cost_forecast().read_text())
    spent = 0.0
    for run_id in run_ids:
        for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records:
            metadata = record.asset_materialization.metadata
            key = record.asset_materialization.asset_key.path[-1]
            entry = metadata.get("judge_spend_dollars" if key == "evaluation" else "spend_dollars")
            if entry is not None and key != "conversations":  # a corpus shard repeats its transcripts' spend
                spent += entry.value
    low, high = forecast["total_dollars"]
    return (f"cost: forecast ${forecast['expected_dollars']:.4f} (${low:.4f} to ${high:.4f}) before the runs, "
            f"spent ${spent:.4f} (priced like gpt-4o-mini; the simulated teacher costs nothing)")


def _judge_summary(layout: Layout, adapter: str) -> str:
    """The judge section of an adapter's evaluation in a few words, or nothing when it was not judged."""
    import json

    judge = json.loads(layout.evaluation(adapter).read_text()).get("judge")
    if judge is None:
        return ""
    return (f"judge: {judge['relative_score_pct']}% of the {judge['reference']}'s score on {judge['questions']} "
            f"questions, {judge['wins']}/{judge['ties']}/{judge['losses']} win/tie/loss (simulated judge)")


def run_demo() -> int:
    _use_project_instance()
    from dagster import DagsterInstance

    from .definitions import config, defs

    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    with simulated_teacher_process() as base_url:
        os.environ["OPENAI_BASE_URL"] = base_url
        os.environ.setdefault("OPENAI_API_KEY", SIMULATED_API_KEY)
        log(f"simulated teacher (placeholder answers, not a real model) at {base_url}")
        instance = DagsterInstance.get()
        run_ids = materialize_whole_graph(defs, config, instance, log)

    layout = Layout(output_dir())
    print(f"\ndone in {time.monotonic() - started:.0f}s. Outputs under {layout.root}:")
    for source in config.sources:
        print(f"  {source.name:14s} {layout.root / source.name}")
    for name in [a.name for a in config.adapters] + [p.adapter_name for p in config.self_distillation]:
        print(f"  adapter {name:20s} {layout.adapter(name)}")
        if judged := _judge_summary(layout, name):
            print(f"{'':31s}{judged}")
    for plan in config.self_distillation:
        print(f"{'':31s}{_distilled_summary(config, layout, plan)}")
    print(f"  {_cost_summary(instance, run_ids, layout)}")
    print(f"  Dagster instance  {Path(os.environ['DAGSTER_HOME']) / '.dagster'}")
    if config.adapters:
        first = layout.adapter(config.adapters[0].name)
        print(f"\nTalk to an adapter:  .venv/bin/baize chat --adapter {first}")
        print("Browse the lineage:  DAGSTER_HOME=$PWD .venv/bin/dagster dev")
    return 0
