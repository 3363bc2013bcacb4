"""Scale-out: steps of several shards executed by two Celery workers over RabbitMQ."""

import json
import subprocess

import pytest
from dagster import DagsterInstance

from baize_assets.teacher.server import SimulatedTeacher

from .celery_support import BIN, celery_worker_hosts, celery_workers
from .ops_support import RABBITMQ, fresh_postgres_database, materialized_in_run, require_service

# End to end through real Dagster runs and services: deselect with -m 'not slow'.
pytestmark = pytest.mark.slow

LOCATION = ["-m", "baize_assets_tests.ops_location"]


def test_shards_run_their_steps_on_both_celery_workers(tmp_path, monkeypatch):
    require_service("RabbitMQ", RABBITMQ)
    with fresh_postgres_database() as url, SimulatedTeacher(latency_s=0.2) as teacher:
        teacher_env = {"OPENAI_BASE_URL": teacher.base_url, "OPENAI_API_KEY": "sk-test-not-a-real-key"}
        with celery_workers(tmp_path, url, ("baize-a", "baize-b"), teacher_env) as env:
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
        with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            corpus_runs = [r for r in instance.get_runs() if r.job_name == "medquad_corpus"]
            assert sorted(r.tags["dagster/partition"] for r in corpus_runs) == shards
            for run in corpus_runs:
                assert materialized_in_run(instance, run.run_id) >= {
                    ("medquad/transcripts", run.tags["dagster/partition"]),
                    ("medquad/conversations", run.tags["dagster/partition"]),
                }
            hosts = celery_worker_hosts(instance, [run.run_id for run in corpus_runs])
    assert hosts == {"baize-a", "baize-b"}
