"""The weekly refresh that changes nothing: what the retrain automation asks for, and what that costs.

On the shipped ``baize.yaml`` with the simulated teacher (real HTTP), in a fresh output folder
and Dagster instance: the whole graph once, as ``make demo`` runs it; then the weekly refresh
(every shard of every source rematerialized, its transcripts from the cache, the same
conversations); then one tick of the retrain automation as it was before data versions
(``AutomationCondition.eager()`` with the blocking-check clause: any new materialization of an
upstream) and as it is (an upstream's changed data version). What the old condition
requests is then run, as its sensor would launch it, counting the runs, the teacher's
requests and the seconds::

    .venv/bin/python benchmarks/bench_refresh.py

Both conditions are evaluated on the same instance, each from its own cursor taken
before the refresh.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from dagster import AutomationCondition, evaluate_automation_conditions, instance_for_test

import baize_assets.automation as automation
from baize_assets.components.baize_pipeline import build_definitions
from baize_assets.core.config.pipeline import load_config
from baize_assets.core.storage import shard_keys
from baize_assets.demo import QUIET_RUN_CONFIG, materialize_whole_graph
from baize_assets.jobs import corpus_job_name
from baize_assets.resources import default_resources
from baize_assets.teacher.server import SimulatedTeacher

CHAT = "/v1/chat/completions"
# The retrain condition before assets reported data versions of their content.
EAGER_CONDITION = (AutomationCondition.eager() & automation.NO_UPSTREAM_BLOCKING_CHECK_FAILED).with_label(
    "retrain_after_corpus_change")


def _definitions(config, condition):
    saved = automation.RETRAIN_CONDITION
    automation.RETRAIN_CONDITION = condition
    try:
        return build_definitions(config, default_resources())
    finally:
        automation.RETRAIN_CONDITION = saved


def _chat_requests(teacher: SimulatedTeacher) -> int:
    return teacher.stats()["requests_by_path"].get(CHAT, 0)


def main() -> int:
    with tempfile.TemporaryDirectory() as folder, SimulatedTeacher() as teacher, \
            instance_for_test(temp_dir=folder) as instance:
        os.environ.update({"BAIZE_OUTPUT_DIR": str(Path(folder) / "output"), "OPENAI_BASE_URL": teacher.base_url,
                           "OPENAI_API_KEY": "sk-bench-refresh"})
        config = load_config()
        if not config.automation.retrain_on_corpus_change:
            print("automation.retrain_on_corpus_change is off in baize.yaml: nothing to measure")
            return 1
        before, after = _definitions(config, EAGER_CONDITION), _definitions(config, automation.RETRAIN_CONDITION)
        started = time.monotonic()
        materialize_whole_graph(after, config, instance, log=lambda _line: None)
        print(f"the whole graph: {time.monotonic() - started:.0f} s, {_chat_requests(teacher)} teacher requests")
        cursors = {name: evaluate_automation_conditions(defs, instance).cursor
                   for name, defs in (("before", before), ("after", after))}

        calls, started = _chat_requests(teacher), time.monotonic()
        refresh_runs = 0
        for source in config.sources:
            for shard in shard_keys(source.shards):
                job = after.resolve_job_def(corpus_job_name(source.name))
                assert job.execute_in_process(instance=instance, partition_key=shard,
                                              run_config=QUIET_RUN_CONFIG).success
                refresh_runs += 1
        print(f"the weekly refresh: {refresh_runs} shard runs, {_chat_requests(teacher) - calls} teacher requests, "
              f"{time.monotonic() - started:.0f} s")

        ticks = {name: evaluate_automation_conditions(defs, instance, cursor=cursors[name])
                 for name, defs in (("before", before), ("after", after))}
        print(f"\n{'retrain condition':34s} {'requested':>9s} {'runs':>5s} {'teacher requests':>17s} {'seconds':>8s}")
        for name, label in (("before", "before: eager (new materialization)"),
                            ("after", "after: changed data version")):
            tick = ticks[name]
            requested = {(key, partition) for key in after.resolve_asset_graph().get_all_asset_keys()
                         for partition in tick.get_requested_partitions(key)}
            keys = sorted({key.to_user_string() for key, _ in requested})
            runs = sorted({partition for _, partition in requested}, key=str)  # the sensor's runs: one a partition
            calls, started = _chat_requests(teacher), time.monotonic()
            for partition in runs:
                selection = [key for key, p in requested if p == partition]
                job = after.resolve_implicit_job_def_def_for_assets(selection)
                assert job.execute_in_process(instance=instance, partition_key=partition, asset_selection=selection,
                                              run_config=QUIET_RUN_CONFIG).success
            print(f"{label:34s} {len(keys):9d} {len(runs):5d} {_chat_requests(teacher) - calls:17d} "
                  f"{time.monotonic() - started:8.0f}")
            if keys:
                print(f"{'':34s} {', '.join(keys)}")
        ok = ticks["after"].total_requested == 0 and ticks["before"].total_requested > 0
        print(f"\nan unchanged refresh requests nothing: {'yes' if ok else 'NO'}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
