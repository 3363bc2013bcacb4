"""Scale-out support: Dagster runs that share one teacher limit, and two dagster-celery workers
over RabbitMQ on a PostgreSQL instance that several tests share."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from dagster import AssetKey, DagsterEventType, DagsterInstance, materialize

from baize_assets.assets import build_assets
from baize_assets.core.config.pipeline import (
    PROJECT_ROOT,
    PipelineConfig,
    RateLimitConfig,
    RateLimitStoreConfig,
    SourceConfig,
    TeacherConfig,
)
from baize_assets.teacher.server import SimulatedTeacher, busiest_window

from .ops_support import (
    free_port,
    fresh_postgres_database,
    process_group,
    resources_for,
    stop_process_group,
    write_faq_csv,
)

BIN = Path(sys.executable).parent
CHAT = "/v1/chat/completions"

# -- runs against a teacher with a per-key limit

# The limit is LIMIT requests per WINDOW_S: a requests-per-minute limit expressed over a
# shorter window, so the test does not last minutes; the client's requests_per_minute is
# the same rate. With 8% headroom the busiest window should hold about 92% of the limit.
LIMIT, WINDOW_S = 60, 5.0


def limited_config(root: Path, shards: int, seeds_per_source: dict[str, int], store: str) -> PipelineConfig:
    """Csv sources of ``seeds_per_source`` questions (``faq`` in ``shards`` shards), paced to LIMIT per WINDOW_S."""
    teacher = TeacherConfig(
        max_concurrency=4, progress_every_s=2, retry_base_s=0.05, retry_max_s=1.0,
        rate_limit=RateLimitConfig(requests_per_minute=LIMIT * 60 / WINDOW_S, headroom=0.08),
        rate_limit_store=RateLimitStoreConfig(kind=store),
    )
    sources = []
    for name, count in seeds_per_source.items():
        csv = write_faq_csv(root / f"{name}.csv", [f"How does {name} topic {n} work in practice?"
                                                  for n in range(count)])
        sources.append(SourceConfig(name=name, format="csv", text_field="question", paths=[str(csv)],
                                    shards=shards if name == "faq" else 1))
    return PipelineConfig(teacher=teacher, sources=sources)


# A teacher's settings that refuse chat completions past LIMIT in any WINDOW_S.
LIMITED_TEACHER = {"requests_per_window": LIMIT, "rate_window_s": WINDOW_S, "latency_s": 0.05}


def assert_the_limit_held(server: SimulatedTeacher, seeds: int) -> None:
    stats = server.stats()
    busiest = busiest_window(stats["admitted_at_s"], WINDOW_S)
    assert stats["requests_by_outcome"].get("rate_limited_by_limit", 0) == 0, stats["requests_by_outcome"]
    assert stats["requests_by_path"][CHAT] == seeds  # no request was refused or retried
    assert 0.85 * LIMIT <= busiest <= LIMIT, busiest


def transcripts_steps_at_once(instance: DagsterInstance, run_ids: list[str]) -> int:
    """The most transcripts steps that were running at the same moment."""
    edges = []
    for run_id in run_ids:
        for event in instance.all_logs(run_id):
            step = event.step_key or ""
            if "transcripts" in step and event.dagster_event_type == DagsterEventType.STEP_START:
                edges.append((event.timestamp, 1))
            elif "transcripts" in step and event.dagster_event_type == DagsterEventType.STEP_SUCCESS:
                edges.append((event.timestamp, -1))
    running = most = 0
    for _, change in sorted(edges):
        running += change
        most = max(most, running)
    return most


# -- two dagster-celery workers


def wait_for_line(process, log: Path, text: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    output = log.read_text(errors="replace")
    raise AssertionError(f"'{text}' did not appear in {log} (exit code {process.poll()}):\n{output}")


@contextmanager
def celery_workers(root: Path, postgres_url: str, names: tuple[str, str], env: dict[str, str]) -> Iterator[dict]:
    """Start two workers of one step each on the deploy/ instance; yields the environment to run Dagster in.

    The instance's home is ``root / "dagster_home"``; ``env`` adds to this process's environment.
    Each worker has local folders of its own (``BAIZE_STATE_DIR``, ``TMPDIR``), as on two machines.
    """
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_POSTGRES_URL": postgres_url,
        "BAIZE_OUTPUT_DIR": str(root / "output"),
        "BAIZE_EXECUTOR": "celery",
        "PYTHONPATH": str(PROJECT_ROOT),
        # dagster-celery starts the ``celery`` program of this environment.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **env,
    }
    worker = [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
              "-y", str(PROJECT_ROOT / "deploy" / "celery.yaml")]
    one_step_each = ["--", "--concurrency", "1", "--without-mingle", "--without-gossip"]
    logs = [root / f"worker-{name}.log" for name in names]
    own = []
    for name in names:
        local = root / f"{name}-local"
        (local / "tmp").mkdir(parents=True)
        own.append({**env, "BAIZE_STATE_DIR": str(local / "state"), "TMPDIR": str(local / "tmp")})
    with (
        process_group([*worker, "-n", names[0], *one_step_each], logs[0], own[0]) as worker_a,
        process_group([*worker, "-n", names[1], *one_step_each], logs[1], own[1]) as worker_b,
    ):
        try:
            for process, log in zip((worker_a, worker_b), logs):
                wait_for_line(process, log, "ready.")
            yield env
        finally:
            # Both at once: each warm shutdown takes seconds.
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(stop_process_group, (worker_a, worker_b)))


def celery_worker_hosts(instance: DagsterInstance, run_ids: list[str]) -> set[str]:
    """The names of the Celery workers that ran steps of these runs."""
    hosts = set()
    for run_id in run_ids:
        for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT).records:
            metadata = record.event_log_entry.dagster_event.engine_event_data.metadata
            if "Celery worker" in metadata:
                hosts.add(metadata["Celery worker"].value.split("@")[0])
    return hosts


@dataclass
class CeleryDeployment:
    """Two running workers, their PostgreSQL instance, and the port their OPENAI_BASE_URL names.

    Starting the workers and loading code in them is most of a Celery test's time, so
    several tests share one deployment; each starts a teacher of its own on ``teacher_port``
    (:meth:`teacher`), so its counters and its rate window hold only that test's requests.
    """

    env: dict[str, str]
    postgres_url: str
    workers: tuple[str, str]
    teacher_port: int

    def teacher(self, **settings) -> SimulatedTeacher:
        return SimulatedTeacher(port=self.teacher_port, **settings)

    def dagster(self, *args: str) -> None:
        """A ``dagster`` command that must succeed."""
        subprocess.run([str(BIN / "dagster"), *args], env=self.env, check=True, capture_output=True, timeout=300)

    def run_at_once(self, commands: list[list[str]]) -> None:
        """``dagster`` commands started together; every one must succeed."""
        runs = [subprocess.Popen([str(BIN / "dagster"), *command], env=self.env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for command in commands]
        outputs = [run.communicate(timeout=300)[0] for run in runs]
        assert all(run.returncode == 0 for run in runs), "\n".join(outputs)

    def instance(self, monkeypatch) -> DagsterInstance:
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", self.postgres_url)
        return DagsterInstance.from_config(self.env["DAGSTER_HOME"])

    def materialize_here(self, config: PipelineConfig, selection: list[AssetKey], monkeypatch):
        """A run of ``selection`` in this process, on the workers' instance and outputs: for seeds,
        which call no teacher and need no worker, without another ``dagster`` process."""
        monkeypatch.setenv("OPENAI_API_KEY", self.env["OPENAI_API_KEY"])
        with self.instance(monkeypatch) as instance:
            return materialize(build_assets(config), selection=selection, instance=instance,
                               resources=resources_for(self.env["BAIZE_OUTPUT_DIR"]), raise_on_error=False)


@contextmanager
def celery_deployment(root: Path, workers: tuple[str, str], env: dict[str, str]) -> Iterator[CeleryDeployment]:
    """Workers on a fresh PostgreSQL database, with ``env`` and OPENAI_BASE_URL on a port kept for
    teachers; the teacher_api pool allows four steps at once."""
    port = free_port()
    with fresh_postgres_database() as url:
        # The state store (state_store.kind: postgres) shares the instance's database.
        env = {**env, "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
               "BAIZE_STATE_URL": url.replace("postgresql+psycopg2://", "postgresql://")}
        with celery_workers(root, url, workers, env) as worker_env:
            deployment = CeleryDeployment(worker_env, url, workers, port)
            # Pool limits are set once per deployment, as deploy/dagster.yaml says.
            deployment.dagster("instance", "concurrency", "set", "teacher_api", "4")
            yield deployment
