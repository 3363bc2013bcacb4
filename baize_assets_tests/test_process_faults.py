"""Process faults through real Dagster runs: SIGKILL mid-step, two runs of one partition, a webserver restart.

Every run that a fault hits is a real process: ``dagster asset materialize`` on the
project's definitions (the kills use Dagster's default multiprocess executor, so each
step is a child of the run's process), or a run that a live daemon launches for the
webserver. Set-up and reruns are runs in the test's process on the same instance. The
teacher is the simulated one with a latency, so a run can be caught mid-collection.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterEventType, DagsterRunStatus

from baize_assets.assets import (
    TINY_BASE_KEY,
    adapter_key,
    conversations_key,
    seed_key,
    training_set_key,
    transcripts_key,
)
from baize_assets.core.collect.cache import TranscriptCache
from baize_assets.core.collect.leases import LeaseTimeout, exclusive_lease
from baize_assets.core.config.pipeline import (
    AdapterConfig,
    PipelineConfig,
    SourceConfig,
    TeacherConfig,
    TinyBaseConfig,
    TrainingConfig,
)
from baize_assets.core.corpus.trainingset import TRAINING_SET_SCHEMA
from baize_assets.core.storage import Layout, write_parquet_atomic
from baize_assets.core.train.checkpoints import CHECKPOINT_FILE
from baize_assets.core.train.model_card import SUMMARY_FILE
from baize_assets.jobs import SEED_TABLES_JOB
from baize_assets.teacher.server import SimulatedTeacher

from .ops_support import (
    CommandLineDeployment,
    all_materializations,
    group_exited,
    materializations,
    process_group,
    write_config,
    write_faq_csv,
)
from .ops_ui_support import TEACHER_KEY, Deployment, graphql, log_tail, wait_for

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CHAT = "/v1/chat/completions"
SOURCE = "faq"
ADAPTER = "faq_bot"
TRANSCRIPTS = transcripts_key(SOURCE)


def chat_requests(server: SimulatedTeacher) -> int:
    return server.stats()["requests_by_path"].get(CHAT, 0)


def questions(count: int) -> list[str]:
    return [f"How do I look after plant number {n} in a dry summer?" for n in range(count)]


def collection_config(csv: Path, in_flight: int) -> PipelineConfig:
    """One csv source in a single shard, collected ``in_flight`` conversations at a time."""
    return PipelineConfig(
        teacher=TeacherConfig(max_concurrency=in_flight, max_retries=0, progress_every_s=1),
        sources=[SourceConfig(name=SOURCE, format="csv", text_field="question", paths=[str(csv)], shards=1)],
    )


def runs_of(instance, key) -> list:
    """The instance's runs that materialize ``key``, newest first."""
    return [run for run in instance.get_runs() if key in (run.asset_selection or ())]


def cached_conversations(path: Path) -> int:
    if not path.exists():
        return 0
    with TranscriptCache(path) as cache:
        return cache.count()


def poll_until(describe: str, probe, timeout_s: float, process: subprocess.Popen, log: Path) -> None:
    """Poll ``probe`` often (a run is caught mid-way); fail if ``process`` ends first."""
    deadline = time.monotonic() + timeout_s
    while not probe():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no {describe} (run exit code {process.poll()})\n{log_tail(log)}")
        time.sleep(0.05)


def assert_cache_and_shard_are_sound(deployment: CommandLineDeployment, seeds: int) -> None:
    """The cache is intact with one row per conversation; the shard is complete and nothing half-written is left."""
    layout = deployment.layout
    with sqlite3.connect(layout.transcript_cache(SOURCE)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows, keys = db.execute("SELECT COUNT(*), COUNT(DISTINCT cache_key) FROM conversations").fetchone()
    assert rows == keys == seeds  # no regeneration asked for, so no key twice
    frame = pd.read_parquet(layout.transcripts(SOURCE, 0))
    assert len(frame) == frame["seed_id"].nunique() == seeds
    assert frame["failure_kind"].isna().all() and frame["transcript"].str.len().gt(0).all()
    leftovers = [p for p in deployment.output.rglob("*") if ".tmp" in p.name]
    assert not leftovers, f"half-written files left behind: {leftovers}"


# -- the lease


# A process that takes a lease and keeps it until it is killed.
LEASE_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from baize_assets.core.collect.leases import exclusive_lease

    with exclusive_lease(Path(sys.argv[1]), holder="the killed holder"):
        print("held", flush=True)
        time.sleep(60)
    """
)


def test_a_lease_is_exclusive_says_who_holds_it_and_times_out(tmp_path):
    path = tmp_path / "shard-0.lease"
    lines = []
    with exclusive_lease(path, holder="run A"):
        with pytest.raises(LeaseTimeout, match=r"still held by run A \(pid \d+"):
            with exclusive_lease(path, holder="run B", log=lines.append, timeout_s=0.3, poll_s=0.05, log_every_s=0.1):
                pytest.fail("a second holder got the lease")
    assert lines[0].startswith(f"waiting for the lease {path}: held by run A (pid {os.getpid()} on ")
    assert any(line.startswith("still waiting for the lease") for line in lines[1:])
    with exclusive_lease(path, holder="run B", log=lines.append, timeout_s=0):
        assert json.loads(path.read_text())["holder"] == "run B"
    assert path.read_text() == ""  # released: nobody claims it


def test_a_lease_whose_holder_is_killed_is_free_at_once(tmp_path):
    path = tmp_path / "shard-0.lease"
    holder = subprocess.Popen(
        [sys.executable, "-c", LEASE_HOLDER, str(path)],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        lines = []
        with pytest.raises(LeaseTimeout):
            with exclusive_lease(path, holder="waiter", log=lines.append, timeout_s=0.2, poll_s=0.05):
                pass
        assert f"held by the killed holder (pid {holder.pid} on " in lines[0]
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()
    started = time.monotonic()
    with exclusive_lease(path, holder="waiter", timeout_s=2):
        assert time.monotonic() - started < 0.5


# -- dying with the parent


# A process that starts a child tied to it, says the child's pid, and waits to be killed.
PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time

    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())])
    print(child.pid, flush=True)
    time.sleep(60)
    """
)
TIED_CHILD = textwrap.dedent(
    """
    import sys, time
    from baize_assets.core.parent_death import die_with_parent

    die_with_parent(int(sys.argv[1]))
    print("tied", flush=True)
    time.sleep(60)
    """
)


def test_a_child_tied_to_its_parent_dies_when_the_parent_is_killed(tmp_path):
    log = tmp_path / "parent.log"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    with process_group([sys.executable, "-c", PARENT, TIED_CHILD], log, env) as parent:
        wait_for("the child to tie itself to its parent", lambda: log.read_text().endswith("tied\n"), 30,
                 lambda: log.read_text())
        child = int(log.read_text().split()[0])
        assert child in process_ids(parent.pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        wait_for("the child to die", lambda: child not in process_ids(parent.pid), 2)


def test_a_child_whose_parent_died_before_it_tied_itself_dies_at_once():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    child = subprocess.run([sys.executable, "-c", TIED_CHILD, str(gone.pid)], cwd=PROJECT_ROOT,
                           capture_output=True, text=True, timeout=30)
    assert child.returncode == -signal.SIGKILL and child.stdout == ""


# -- collection


@pytest.mark.slow
def test_a_transcripts_run_killed_with_sigkill_reruns_only_its_requests_in_flight(tmp_path):
    seeds, in_flight = 32, 4
    config = collection_config(write_faq_csv(tmp_path / "faq.csv", questions(seeds)), in_flight)
    with SimulatedTeacher(api_key=TEACHER_KEY, latency_s=0.3) as teacher:
        deployment = CommandLineDeployment(tmp_path, config, teacher.base_url, TEACHER_KEY)
        assert deployment.materialize_here([seed_key(SOURCE)]).success
        cache = deployment.layout.transcript_cache(SOURCE)
        log = deployment.log("killed")
        with deployment.materialize_process("killed", TRANSCRIPTS, "0") as run:
            poll_until("conversations in the cache", lambda: cached_conversations(cache) >= in_flight, 60, run, log)
            # Only the run's process, without a chance to clean up: its step's process must die with it.
            os.kill(run.pid, signal.SIGKILL)
            assert group_exited(run, timeout_s=10), "the transcripts step outlived its run"
        done = cached_conversations(cache)
        assert in_flight <= done < seeds, "the run was not killed mid-collection"
        with deployment.instance() as instance:
            (killed,) = runs_of(instance, TRANSCRIPTS)
            assert killed.status == DagsterRunStatus.STARTED  # nothing could record its end
            assert not materializations(instance, killed.run_id)

        teacher.latency_s = 0
        rerun = deployment.materialize_here([TRANSCRIPTS], partition="0")
        assert rerun.success
        (materialization,) = rerun.asset_materializations_for_node(TRANSCRIPTS.to_python_identifier())
        assert materialization.metadata["cached_answers"].value == done
        assert materialization.metadata["api_requests"].value == seeds - done
        asked_twice = chat_requests(teacher) - seeds
    # Only the requests in flight at the kill were lost and asked again.
    assert 0 <= asked_twice <= in_flight
    assert_cache_and_shard_are_sound(deployment, seeds)


@pytest.mark.slow
def test_two_runs_of_one_partition_at_once_pay_each_prompt_once(tmp_path):
    seeds, in_flight = 16, 4
    config = collection_config(write_faq_csv(tmp_path / "faq.csv", questions(seeds)), in_flight)
    # Slow enough that the second run reaches the shard while the first collects it.
    with SimulatedTeacher(api_key=TEACHER_KEY, latency_s=1.0) as teacher:
        deployment = CommandLineDeployment(tmp_path, config, teacher.base_url, TEACHER_KEY, executor="in_process")
        assert deployment.materialize_here([seed_key(SOURCE)]).success
        with deployment.materialize_process("a", TRANSCRIPTS, "0") as a, \
                deployment.materialize_process("b", TRANSCRIPTS, "0") as b:
            codes = [a.wait(timeout=120), b.wait(timeout=120)]
        assert codes == [0, 0], log_tail(deployment.log("a"), deployment.log("b"))
        assert chat_requests(teacher) == seeds  # each prompt paid once
    with deployment.instance() as instance:
        runs = runs_of(instance, TRANSCRIPTS)
        assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS] * 2
        logged = {run.run_id: [e.user_message for e in instance.all_logs(run.run_id)] for run in runs}
        paid = {}
        for run in runs:
            (record,) = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
            metadata = record.event_log_entry.dagster_event.step_materialization_data.materialization.metadata
            paid[run.run_id] = metadata["api_requests"].value
    (waiter,) = [run_id for run_id, lines in logged.items() if any("waiting for the lease" in m for m in lines)]
    (holder,) = set(logged) - {waiter}
    assert any(f"held by run {holder}" in m for m in logged[waiter])
    assert paid == {holder: seeds, waiter: 0}
    assert_cache_and_shard_are_sound(deployment, seeds)


# -- training


def training_config(in_subprocess: bool = True, **training) -> PipelineConfig:
    """MedQuAD's sample questions in one shard, and an adapter on the tiny base (briefly pretrained)."""
    settings = dict(
        learning_rate=5e-3, epochs=1000, effective_batch_size=4, micro_batch_size=4, warmup_steps=0,
        eval_size=0.2, eval_steps=1000, launcher={"kind": "subprocess" if in_subprocess else "in_process"},
    )
    return PipelineConfig(
        teacher=TeacherConfig(max_retries=0),
        tiny_base=TinyBaseConfig(pretrain_steps=5),
        sources=[
            SourceConfig(name=SOURCE, format="medquad", paths=[str(PROJECT_ROOT / "data/seeds/medquad/medquad.csv")],
                         shards=1)
        ],
        adapters=[AdapterConfig(name=ADAPTER, sources=[SOURCE], training=TrainingConfig(**settings | training))],
    )


def process_ids(group: int) -> list[int]:
    """Live (not zombie) processes of a process group, from ``/proc``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for f in folders if f.exists() for p in f.rglob("*")}


@pytest.mark.slow
def test_killing_the_run_process_kills_training_and_the_rerun_resumes(tmp_path):
    # About 0.1 s a step on a CPU: an orphan would go on training for seconds after the kill.
    training = dict(max_steps=40, checkpoint_steps=2)
    config = training_config(**training)
    with SimulatedTeacher(api_key=TEACHER_KEY) as teacher:
        deployment = CommandLineDeployment(tmp_path, config, teacher.base_url, TEACHER_KEY)
        for selection, partition in (([seed_key(SOURCE), TINY_BASE_KEY], None),
                                     ([TRANSCRIPTS, conversations_key(SOURCE)], "0"),
                                     ([training_set_key(ADAPTER)], None)):
            assert deployment.materialize_here(selection, partition).success
    layout = deployment.layout
    checkpoint = layout.adapter_checkpoints(ADAPTER) / CHECKPOINT_FILE
    log = deployment.log("killed")
    with deployment.materialize_process("killed", adapter_key(ADAPTER)) as run:
        poll_until("training checkpoint", checkpoint.exists, 120, run, log)
        run_processes = process_ids(run.pid)
        # The run's process alone: its step process and the training child are left without a parent.
        os.kill(run.pid, signal.SIGKILL)
        # Dagster's own log-mirroring helpers poll for their parent every second.
        assert group_exited(run, timeout_s=3), f"left running after the kill: {process_ids(run.pid)}"
    assert len(run_processes) >= 3  # the run, its step and the training child at least
    with deployment.instance() as instance:
        (killed,) = runs_of(instance, adapter_key(ADAPTER))
        workers = instance.get_records_for_run(killed.run_id, of_type=DagsterEventType.STEP_WORKER_STARTED).records
        assert workers, "the step did not run in a process of its own"
    before = snapshot(layout.adapter(ADAPTER), layout.adapter_checkpoints(ADAPTER))
    time.sleep(1)  # at a checkpoint every 2 steps, a training orphan would have written one by now
    assert snapshot(layout.adapter(ADAPTER), layout.adapter_checkpoints(ADAPTER)) == before
    assert not layout.adapter(ADAPTER).exists()

    # Rerun in this process: one training child less to start, and the checkpoint's fingerprint
    # leaves out where the training runs, so it resumes all the same.
    deployment.config = training_config(in_subprocess=False, **training)
    rerun = deployment.materialize_here([adapter_key(ADAPTER)])
    assert rerun.success
    (materialization,) = rerun.asset_materializations_for_node(adapter_key(ADAPTER).to_python_identifier())
    resumed = materialization.metadata["resumed_from_step"].value
    assert resumed > 0 and resumed % 2 == 0
    summary = json.loads((layout.adapter(ADAPTER) / SUMMARY_FILE).read_text())
    assert summary["resumed_from_step"] == resumed and summary["steps"] == 40


@pytest.mark.slow
def test_a_training_set_too_small_to_train_on_fails_naming_it_before_loading_a_model(tmp_path):
    config = training_config(in_subprocess=False)
    with SimulatedTeacher(api_key=TEACHER_KEY) as teacher:
        deployment = CommandLineDeployment(tmp_path, config, teacher.base_url, TEACHER_KEY)
        for selection, partition in (([seed_key(SOURCE)], None), ([TRANSCRIPTS, conversations_key(SOURCE)], "0"),
                                     ([training_set_key(ADAPTER)], None)):
            assert deployment.materialize_here(selection, partition).success
    path = deployment.layout.training_set(ADAPTER)
    built = pd.read_parquet(path)
    # No base model exists: an attempt to load one would fail differently.
    assert not deployment.layout.tiny_base().exists()
    for kept, noun in ((1, "conversation"), (0, "conversations")):
        write_parquet_atomic(built.head(kept), path, TRAINING_SET_SCHEMA)
        result = deployment.materialize_here([adapter_key(ADAPTER)])
        assert not result.success
        (failure,) = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
        description = failure.step_failure_data.user_failure_data.description
        assert description.startswith(
            f"{ADAPTER}/training_set holds {kept} {noun}; training needs at least 2 (1 for training, 1 held out) — "
        )
        assert "\n" not in description


# -- the webserver


LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on Error { message }
  }
}
"""
RUN_STATUS = """
query Status($id: ID!) {
  runOrError(runId: $id) {
    __typename
    ... on Run { status }
  }
}
"""


@pytest.mark.slow
def test_a_run_goes_on_and_is_recorded_through_a_webserver_restart(tmp_path):
    seeds = 10
    config = collection_config(write_faq_csv(tmp_path / "faq.csv", questions(seeds)), in_flight=1)
    # One conversation at a time, slowly, until the webserver is back; then at full speed.
    with SimulatedTeacher(api_key=TEACHER_KEY, latency_s=2.0) as teacher:
        deployment = Deployment(tmp_path, teacher.base_url, write_config(config, tmp_path / "baize.yaml"))

        def context() -> str:
            return log_tail(*(deployment.log(name) for name in ("daemon", "webserver-1", "webserver-2")))

        def run_status() -> str:
            result = graphql(deployment.base_url, RUN_STATUS, {"id": run_id})["runOrError"]
            assert result["__typename"] == "Run", result
            return result["status"]

        with deployment.instance() as instance, deployment.daemon("daemon"):
            with deployment.webserver("webserver-1") as first:
                # The seed tables are built here while the daemon and the webserver start.
                assert deployment.defs.resolve_job_def(SEED_TABLES_JOB).execute_in_process(instance=instance).success
                records_before = all_materializations(instance)
                deployment.wait_until_serving(first, "webserver-1")
                launched = graphql(deployment.base_url, LAUNCH_RUN, {"params": {
                    "selector": {
                        "repositoryLocationName": "baize_assets.definitions",
                        "repositoryName": "__repository__",
                        "jobName": "__ASSET_JOB",
                        "assetSelection": [{"path": TRANSCRIPTS.path}],
                    },
                    "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "0"}]},
                }})["launchRun"]
                assert launched["__typename"] == "LaunchRunSuccess", launched
                run_id = launched["run"]["runId"]
                wait_for("the run to ask the teacher", lambda: chat_requests(teacher) >= 1, 90, context)
                # Stopped as a service manager stops it: SIGTERM to its whole process group.
                os.killpg(first.pid, signal.SIGTERM)
                assert group_exited(first, timeout_s=20), context()
            stopped_at = time.time()
            assert instance.get_run_by_id(run_id).status == DagsterRunStatus.STARTED
            with deployment.webserver("webserver-2") as second:
                deployment.wait_until_serving(second, "webserver-2")
                assert run_status() == "STARTED", "the run did not go on while the webserver was down"
                assert chat_requests(teacher) < seeds
                teacher.latency_s = 0
                wait_for("the run to finish", lambda: run_status() in {"SUCCESS", "FAILURE", "CANCELED"}, 60, context)
                assert run_status() == "SUCCESS"
            record = instance.get_run_record_by_id(run_id)
            assert record.end_time > stopped_at
            # Its materialization, once, and every earlier record still there.
            assert materializations(instance, run_id) == [(TRANSCRIPTS.to_user_string(), "0")]
            assert all_materializations(instance) == records_before + 1
    assert chat_requests(teacher) == seeds
    assert len(pd.read_parquet(Layout(deployment.output).transcripts(SOURCE, 0))) == seeds
