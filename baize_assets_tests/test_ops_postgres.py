"""The production instance (deploy/dagster.yaml) on the PostgreSQL of this machine."""

import json
import shutil

import psycopg2
import pytest
from dagster import DagsterInstance, ReexecutionOptions, execute_job
from dagster._core.definitions.reconstruct import ReconstructableRepository

from baize_assets.core.config.pipeline import PROJECT_ROOT
from baize_assets.teacher.server import SimulatedTeacher

from .ops_support import fresh_postgres_database, materialized_in_run

# End to end through real Dagster runs and services: deselect with -m 'not slow'.
pytestmark = pytest.mark.slow

LOCATION = "baize_assets_tests.ops_location"
TEACHER_KEY = "sk-the-right-key"


@pytest.fixture
def postgres_instance(tmp_path, monkeypatch):
    """A DAGSTER_HOME holding deploy/dagster.yaml, on a fresh database dropped afterwards."""
    with fresh_postgres_database() as url:
        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copy(PROJECT_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", url)
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("BAIZE_OUTPUT_DIR", str(tmp_path / "output"))
        # Steps in the run's own process: the storage is what is under test, not the executor.
        monkeypatch.setenv("BAIZE_EXECUTOR", "in_process")
        with DagsterInstance.from_config(str(home)) as instance:
            yield instance, url


def run_job(instance, job_name, **kwargs):
    job = ReconstructableRepository.for_module(LOCATION, "defs").get_reconstructable_job(job_name)
    with execute_job(job, instance=instance, **kwargs) as result:
        return result.success, result.run_id


def test_a_partition_run_is_stored_in_postgres_and_reexecutes_from_failure(postgres_instance, monkeypatch):
    instance, url = postgres_instance
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    with SimulatedTeacher(api_key=TEACHER_KEY) as teacher:
        monkeypatch.setenv("OPENAI_BASE_URL", teacher.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", TEACHER_KEY)
        assert run_job(instance, "seed_tables")[0]

        # The teacher refuses the key: the transcripts step fails, the corpus step never runs.
        monkeypatch.setenv("OPENAI_API_KEY", "sk-revoked")
        ok, failed_run = run_job(instance, "medquad_corpus", tags={"dagster/partition": "1"})
        assert not ok and materialized_in_run(instance, failed_run) == set()

        monkeypatch.setenv("OPENAI_API_KEY", TEACHER_KEY)
        # Re-executed from failure, with the run's partition tag as the UI carries it over.
        ok, retry_run = run_job(
            instance,
            "medquad_corpus",
            reexecution_options=ReexecutionOptions.from_failure(failed_run, instance),
            tags=instance.get_run_by_id(failed_run).tags,
        )
    assert ok
    expected = {("medquad/transcripts", "1"), ("medquad/conversations", "1")}
    assert materialized_in_run(instance, retry_run) == expected

    # Read back from PostgreSQL itself, not through Dagster.
    with psycopg2.connect(url.replace("+psycopg2", "")) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT asset_key, partition FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
            (retry_run, "ASSET_MATERIALIZATION"),
        )
        rows = {("/".join(json.loads(key)), partition) for key, partition in cursor.fetchall()}
        cursor.execute("SELECT status FROM runs WHERE run_id = %s", (failed_run,))
        (failed_status,) = cursor.fetchone()
    assert rows == expected
    assert failed_status == "FAILURE"
    assert instance.get_run_by_id(retry_run).parent_run_id == failed_run
