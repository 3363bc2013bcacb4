"""Two dagster-celery workers over RabbitMQ on a PostgreSQL instance, for the scale-out tests."""

from __future__ import annotations

import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dagster import DagsterEventType, DagsterInstance

from baize_assets.core.config.pipeline import PROJECT_ROOT

from .ops_support import process_group

BIN = Path(sys.executable).parent


def wait_for_line(process, log: Path, text: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        time.sleep(0.5)
    output = log.read_text(errors="replace")
    raise AssertionError(f"'{text}' did not appear in {log} (exit code {process.poll()}):\n{output}")


@contextmanager
def celery_workers(tmp_path: Path, postgres_url: str, names: tuple[str, str], env: dict[str, str]) -> Iterator[dict]:
    """Start two workers of one step each on the deploy/ instance; yields the environment to run Dagster in.

    The instance's home is ``tmp_path / "dagster_home"``; ``env`` adds to this process's environment.
    """
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_POSTGRES_URL": postgres_url,
        "BAIZE_OUTPUT_DIR": str(tmp_path / "output"),
        "BAIZE_EXECUTOR": "celery",
        "PYTHONPATH": str(PROJECT_ROOT),
        # dagster-celery starts the ``celery`` program of this environment.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **env,
    }
    worker = [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
              "-y", str(PROJECT_ROOT / "deploy" / "celery.yaml")]
    one_step_each = ["--", "--concurrency", "1", "--without-mingle", "--without-gossip"]
    logs = [tmp_path / f"worker-{name}.log" for name in names]
    with (
        process_group([*worker, "-n", names[0], *one_step_each], logs[0], env) as worker_a,
        process_group([*worker, "-n", names[1], *one_step_each], logs[1], env) as worker_b,
    ):
        for process, log in zip((worker_a, worker_b), logs):
            wait_for_line(process, log, "ready.")
        yield env


def celery_worker_hosts(instance: DagsterInstance, run_ids: list[str]) -> set[str]:
    """The names of the Celery workers that ran steps of these runs."""
    hosts = set()
    for run_id in run_ids:
        for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT).records:
            metadata = record.event_log_entry.dagster_event.engine_event_data.metadata
            if "Celery worker" in metadata:
                hosts.add(metadata["Celery worker"].value.split("@")[0])
    return hosts
