"""A run killed mid-way on the PostgreSQL instance is re-executed from failure.

One shard's corpus job runs in a ``dagster job execute`` process with Dagster's default
multiprocess executor, so each step has a process of its own. Once the transcripts step has
succeeded and the next step's process is starting, the whole process group gets SIGKILL: no
handler runs, as after an out-of-memory kill or a lost machine.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    ReexecutionOptions,
    RunsFilter,
    execute_job,
    reconstructable,
)

from baize_assets.assets import conversations_key, transcripts_key
from baize_assets.core.config.pipeline import PROJECT_ROOT, load_config
from baize_assets.core.storage import Layout
from baize_assets.definitions import build_definitions
from baize_assets.jobs import SEED_TABLES_JOB, corpus_job_name
from baize_assets.teacher.server import SimulatedTeacher

from .ops_location import CONFIG_PATH
from .ops_support import group_exited, materialized_in_run, process_group, resources_for
from .ops_ui_support import log_tail
from .test_ops_postgres import TEACHER_KEY, postgres_instance  # noqa: F401 - the PostgreSQL instance fixture

# End to end through real Dagster runs and services: deselect with -m 'not slow'.
pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
SOURCE = "medquad"
SHARD = "1"
JOB = corpus_job_name(SOURCE)


def corpus_job():
    """The corpus job of ``ops_location``, built afresh from the current environment.

    ``ops_location`` builds its definitions once per process, with the output folder and
    executor of whichever test imported it first; this job sees the ones of this test.
    """
    definitions = build_definitions(
        load_config(CONFIG_PATH), resources=resources_for(Path(os.environ["BAIZE_OUTPUT_DIR"]))
    )
    return definitions.resolve_job_def(JOB)


def run_in_process(instance: DagsterInstance, output: Path, job_name: str, partition: str | None = None):
    job = build_definitions(load_config(CONFIG_PATH), resources=resources_for(output)).resolve_job_def(job_name)
    result = job.execute_in_process(instance=instance, partition_key=partition, raise_on_error=False)
    assert result.success, f"{job_name} failed"
    return result.run_id


def step_events(instance: DagsterInstance, run_id: str, event_type: DagsterEventType) -> set[str]:
    return {r.event_log_entry.step_key for r in instance.get_records_for_run(run_id, of_type=event_type).records}


def check_results(instance: DagsterInstance, run_id: str) -> dict[str, bool]:
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
    evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in records]
    return {e.check_name: e.passed for e in evaluations}


def latest_materialization_run(instance: DagsterInstance, key: AssetKey) -> str:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[SHARD]), limit=1
    ).records
    return records[0].run_id


def wait_until_mid_run(instance: DagsterInstance, process, log: Path, timeout_s: float = 60) -> str:
    """The run's id once a first step has succeeded and a later step's process is starting."""
    first_step = transcripts_key(SOURCE).to_python_identifier()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        runs = instance.get_runs(RunsFilter(job_name=JOB))
        if runs:
            run_id = runs[0].run_id
            succeeded = step_events(instance, run_id, DagsterEventType.STEP_SUCCESS)
            starting = step_events(instance, run_id, DagsterEventType.STEP_WORKER_STARTING)
            if first_step in succeeded and starting - succeeded:
                return run_id
        time.sleep(0.1)
    raise AssertionError(f"the run did not reach its second step (exit code {process.poll()})\n{log_tail(log)}")


def test_a_run_killed_mid_way_is_reexecuted_from_failure(postgres_instance, tmp_path, monkeypatch):  # noqa: F811
    instance, _ = postgres_instance
    output = Path(os.environ["BAIZE_OUTPUT_DIR"])
    with SimulatedTeacher(api_key=TEACHER_KEY) as teacher:
        monkeypatch.setenv("OPENAI_BASE_URL", teacher.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", TEACHER_KEY)
        run_in_process(instance, output, SEED_TABLES_JOB)

        env = {**os.environ, "BAIZE_EXECUTOR": "multiprocess", "PYTHONPATH": str(PROJECT_ROOT)}
        command = [str(BIN / "dagster"), "job", "execute", "-m", "baize_assets_tests.ops_location", "-j", JOB,
                   "--tags", json.dumps({"dagster/partition": SHARD})]
        log = tmp_path / "killed-run.log"
        with process_group(command, log, env) as run_process:
            killed_run = wait_until_mid_run(instance, run_process, log)
            os.killpg(run_process.pid, signal.SIGKILL)
            assert group_exited(run_process, timeout_s=20), "the killed run left processes behind"

        succeeded_before = step_events(instance, killed_run, DagsterEventType.STEP_SUCCESS)
        killed_materializations = materialized_in_run(instance, killed_run)
        run = instance.get_run_by_id(killed_run)
        # Nothing in the killed process could record its end; run monitoring in the daemon
        # marks such a run failed, as done here.
        assert run.status == DagsterRunStatus.STARTED
        instance.report_run_failed(run, "The run's process was killed.")

        # The partition comes with the killed run's tags, as the UI carries them over.
        with execute_job(
            reconstructable(corpus_job),
            instance=instance,
            reexecution_options=ReexecutionOptions.from_failure(killed_run, instance),
            tags=run.tags,
        ) as result:
            assert result.success
            retry_run = result.run_id

        # A normal, uninterrupted run of the same shard, on an instance and output folder of its own.
        reference_output = tmp_path / "reference"
        with DagsterInstance.ephemeral() as reference_instance:
            run_in_process(reference_instance, reference_output, SEED_TABLES_JOB)
            reference_run = run_in_process(reference_instance, reference_output, JOB, SHARD)
            reference_steps = step_events(reference_instance, reference_run, DagsterEventType.STEP_SUCCESS)
            reference_materializations = materialized_in_run(reference_instance, reference_run)
            reference_checks = check_results(reference_instance, reference_run)

    assert instance.get_run_by_id(killed_run).status == DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(retry_run).parent_run_id == killed_run
    # Killed mid-way: some steps had succeeded, not all.
    assert transcripts_key(SOURCE).to_python_identifier() in succeeded_before
    assert succeeded_before < reference_steps
    # The re-execution ran exactly the steps the killed run had not finished.
    assert step_events(instance, retry_run, DagsterEventType.STEP_START) == reference_steps - succeeded_before
    assert step_events(instance, retry_run, DagsterEventType.STEP_SUCCESS) == reference_steps - succeeded_before

    # Together the two runs materialized what a normal run does, each asset partition once,
    # and the killed run's records are all still there.
    retry_materializations = materialized_in_run(instance, retry_run)
    assert materialized_in_run(instance, killed_run) == killed_materializations
    assert killed_materializations | retry_materializations == reference_materializations
    assert not killed_materializations & retry_materializations
    assert latest_materialization_run(instance, transcripts_key(SOURCE)) == killed_run
    assert latest_materialization_run(instance, conversations_key(SOURCE)) == retry_run
    assert check_results(instance, retry_run) == reference_checks
    assert all(reference_checks.values())

    # And the corpus on disk is the one a normal run writes.
    shard = int(SHARD)
    for path_of in (Layout.transcripts, Layout.conversations):
        pd.testing.assert_frame_equal(
            pd.read_parquet(path_of(Layout(str(output)), SOURCE, shard)),
            pd.read_parquet(path_of(Layout(str(reference_output)), SOURCE, shard)),
        )
