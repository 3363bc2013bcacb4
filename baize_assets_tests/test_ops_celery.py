"""Scale-out: steps of several shards executed by two Celery workers over RabbitMQ."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance

from baize_assets.core.config import PROJECT_ROOT
from baize_assets.teacher.server import SimulatedTeacher

from .ops_support import RABBITMQ, fresh_postgres_database, materialized_in_run, process_group, require_service

# End to end through real Dagster runs and services: deselect with -m 'not slow'.
pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
LOCATION = ["-m", "baize_assets_tests.ops_location"]


def wait_for_line(process, log: Path, text: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        time.sleep(0.5)
    output = log.read_text(errors="replace")
    raise AssertionError(f"'{text}' did not appear in {log} (exit code {process.poll()}):\n{output}")


def test_shards_run_their_steps_on_both_celery_workers(tmp_path, monkeypatch):
    require_service("RabbitMQ", RABBITMQ)
    with fresh_postgres_database() as url, SimulatedTeacher(latency_s=0.2) as teacher:
        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copy(PROJECT_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "DAGSTER_POSTGRES_URL": url,
            "BAIZE_OUTPUT_DIR": str(tmp_path / "output"),
            "BAIZE_EXECUTOR": "celery",
            "OPENAI_BASE_URL": teacher.base_url,
            "OPENAI_API_KEY": "sk-test-not-a-real-key",
            "PYTHONPATH": str(PROJECT_ROOT),
            # dagster-celery starts the ``celery`` program of this environment.
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        worker = [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                  "-y", str(PROJECT_ROOT / "deploy" / "celery.yaml")]
        one_step_each = ["--", "--concurrency", "1", "--without-mingle", "--without-gossip"]
        logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
        with (
            process_group([*worker, "-n", "baize-a", *one_step_each], logs[0], env) as worker_a,
            process_group([*worker, "-n", "baize-b", *one_step_each], logs[1], env) as worker_b,
        ):
            for process, log in zip((worker_a, worker_b), logs):
                wait_for_line(process, log, "ready.")
            execute = [str(BIN / "dagster"), "job", "execute", *LOCATION]
            subprocess.run([*execute, "-j", "seed_tables"], env=env, check=True, capture_output=True, timeout=300)
            shards = ["0", "1", "2"]
            # Pool limits are set once per deployment, as the deploy notes say; three
            # shards may call the teacher at once here.
            subprocess.run(
                [str(BIN / "dagster"), "instance", "concurrency", "set", "teacher_api", str(len(shards))],
                env=env, check=True, capture_output=True, timeout=120,
            )
            runs = [
                subprocess.Popen(
                    [*execute, "-j", "medquad_corpus", "--tags", json.dumps({"dagster/partition": shard})],
                    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                )
                for shard in shards
            ]
            outputs = [run.communicate(timeout=300)[0] for run in runs]
            assert all(run.returncode == 0 for run in runs), "\n".join(outputs)

        monkeypatch.setenv("DAGSTER_POSTGRES_URL", url)
        with DagsterInstance.from_config(str(home)) as instance:
            corpus_runs = [r for r in instance.get_runs() if r.job_name == "medquad_corpus"]
            assert sorted(r.tags["dagster/partition"] for r in corpus_runs) == shards
            hosts = set()
            for run in corpus_runs:
                assert materialized_in_run(instance, run.run_id) >= {
                    ("medquad/transcripts", run.tags["dagster/partition"]),
                    ("medquad/conversations", run.tags["dagster/partition"]),
                }
                for record in instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ENGINE_EVENT).records:
                    metadata = record.event_log_entry.dagster_event.engine_event_data.metadata
                    if "Celery worker" in metadata:
                        hosts.add(metadata["Celery worker"].value.split("@")[0])
    assert hosts == {"baize-a", "baize-b"}
