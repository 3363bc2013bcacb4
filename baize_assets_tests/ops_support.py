"""Support for the operations tests: small configurations, required services, subprocesses."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterEventType,
    DagsterInstance,
    EnvVar,
    materialize,
)
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster_openai import OpenAIResource

from baize_assets.assets import build_assets
from baize_assets.core.config.pipeline import (
    PROJECT_ROOT,
    AdapterConfig,
    PipelineConfig,
    SourceConfig,
    TrainingConfig,
)
from baize_assets.core.storage import Layout
from baize_assets.pipes_messages import subprocess_client
from baize_assets.resources import BaizeStorage

POSTGRES = ("127.0.0.1", 5432)
RABBITMQ = ("127.0.0.1", 5672)
REDIS = ("127.0.0.1", 6379)
REDIS_URL = f"redis://{REDIS[0]}:{REDIS[1]}/0"


def missing_requirement(message: str) -> None:
    """Fail under CI (the machine provides every requirement there), skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI needs it")
    pytest.skip(message)


def require_service(name: str, address: tuple[str, int]) -> None:
    """A service the test talks to must be reachable."""
    try:
        socket.create_connection(address, timeout=2).close()
    except OSError as exc:
        missing_requirement(f"{name} is not reachable on {address[0]}:{address[1]} ({exc})")


def faq_config(csv_path: Path, shards: int = 4, **automation) -> PipelineConfig:
    """One small csv source and one adapter trained for a single step."""
    return PipelineConfig(
        sources=[SourceConfig(name="faq", format="csv", text_field="question", paths=[str(csv_path)], shards=shards)],
        adapters=[AdapterConfig(name="faq_bot", sources=["faq"], training=TrainingConfig(max_steps=1))],
        automation=automation,
    )


def write_faq_csv(path: Path, questions: list[str]) -> Path:
    path.write_text("question\n" + "".join(f'"{q}"\n' for q in questions), encoding="utf-8")
    return path


def write_config(config: PipelineConfig, path: Path) -> Path:
    """``config`` as a YAML file for BAIZE_CONFIG (only what differs from the defaults)."""
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True)), encoding="utf-8")
    return path


def resources_for(output_dir: Path | str) -> dict:
    return {
        "storage": BaizeStorage(output_dir=str(output_dir)),
        "openai": OpenAIResource(api_key=EnvVar("OPENAI_API_KEY")),
        "pipes_subprocess_client": subprocess_client(),
    }


def report_materialization(instance: DagsterInstance, key, partition: str | None = None,
                           data_version: str = "1") -> None:
    """A materialization of ``key`` as a run records it, with the data version its content has."""
    instance.report_runless_asset_event(AssetMaterialization(asset_key=key, partition=partition,
                                                             tags={DATA_VERSION_TAG: data_version}))


def materializations(instance: DagsterInstance, run_id: str) -> list[tuple[str, str | None]]:
    """Every materialization record of a run, as (asset key, partition), repeats included."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    return [
        (r.event_log_entry.dagster_event.asset_key.to_user_string(), r.event_log_entry.dagster_event.partition)
        for r in records
    ]


def materialized_in_run(instance: DagsterInstance, run_id: str) -> set[tuple[str, str | None]]:
    """What a run materialized, as a set of (asset key, partition)."""
    return set(materializations(instance, run_id))


def all_materializations(instance: DagsterInstance) -> int:
    """How many materialization records the instance holds, over all its runs."""
    return sum(len(materializations(instance, run.run_id)) for run in instance.get_runs())


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; dropped afterwards. Yields its SQLAlchemy URL."""
    import psycopg2

    require_service("PostgreSQL", POSTGRES)
    name = f"baize_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host=POSTGRES[0], port=POSTGRES[1], user="postgres", dbname="postgres")
    admin.autocommit = True
    try:
        admin.cursor().execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+psycopg2://postgres@{POSTGRES[0]}:{POSTGRES[1]}/{name}"
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Prepended to each script: its ``start_together()`` says the process has imported, then sleeps
# until the start time the test sends every process at once.
START_TOGETHER = textwrap.dedent(
    """
    import sys, time

    def start_together():
        print("ready", flush=True)
        time.sleep(max(float(sys.stdin.readline()) - time.time(), 0))
    """
)


def run_together(script: str, args_per_process: list[list[str]], env: dict) -> list:
    """``script`` in one process per argument list, begun together once all have imported; their JSON outputs."""
    processes = [subprocess.Popen([sys.executable, "-c", START_TOGETHER + script, *args], env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for args in args_per_process]
    for process in processes:
        # Nothing else is written before the start time comes, so this line is all the pipe holds.
        if process.stdout.readline() != "ready\n":
            raise AssertionError(f"a process did not start: {process.communicate(timeout=60)[1]}")
    start_at = f"{time.time() + 0.2}\n"  # the time it takes to send it to every process
    for process in processes:
        process.stdin.write(start_at)
        process.stdin.flush()
    outputs = [process.communicate(timeout=60) for process in processes]
    assert all(p.returncode == 0 for p in processes), "\n".join(err for _, err in outputs)
    return [json.loads(out) for out, _ in outputs]


@contextmanager
def process_group(args: list[str], log_path: Path, env: dict) -> Iterator[subprocess.Popen]:
    """Start a command in its own process group; stop that group (and only it) on exit."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield process
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen, timeout_s: float = 20) -> None:
    """SIGTERM the group, then SIGKILL what is left of it after ``timeout_s``.

    Members (a code server, a run) can outlive a leader that has already exited, so the
    group itself is signalled and waited for, not only the leader.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        if group_exited(process, timeout_s):
            break
    process.wait()


def group_exited(process: subprocess.Popen, timeout_s: float) -> bool:
    """Whether every process of the group of ``process`` is gone within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        process.poll()  # reaps the leader, which would otherwise stay in the group as a zombie
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


class CommandLineDeployment:
    """The project's definitions run with the ``dagster`` command line on a temporary instance.

    The configuration goes to a YAML file named by BAIZE_CONFIG, outputs under
    BAIZE_OUTPUT_DIR, runs into a SQLite instance in DAGSTER_HOME: what a user who
    runs ``dagster asset materialize -m baize_assets.definitions`` has. The same
    instance and output folder serve runs made in this process with ``materialize``.
    """

    def __init__(self, root: Path, config: PipelineConfig, teacher_url: str, api_key: str = "sk-test-not-a-real-key",
                 executor: str = "multiprocess") -> None:
        self.config = config
        self.home = root / "dagster_home"
        self.home.mkdir()
        (self.home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        self.output = root / "output"
        self.layout = Layout(self.output)
        self.logs = root / "logs"
        self.logs.mkdir()
        self.teacher_url, self.api_key = teacher_url, api_key
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "BAIZE_CONFIG": str(write_config(config, root / "baize.yaml")),
            "BAIZE_OUTPUT_DIR": str(self.output),
            "BAIZE_EXECUTOR": executor,
            "OPENAI_BASE_URL": teacher_url,
            "OPENAI_API_KEY": api_key,
            "PYTHONPATH": str(PROJECT_ROOT),
        }

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_config(str(self.home))

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def materialize_process(self, name: str, selection: AssetKey, partition: str | None = None):
        """A ``dagster asset materialize`` process of ``selection``, in its own process group."""
        command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize",
                   "-m", "baize_assets.definitions", "--select", selection.to_user_string()]
        if partition is not None:
            command += ["--partition", partition]
        return process_group(command, self.log(name), self.env)

    def materialize_here(self, selection: list[AssetKey], partition: str | None = None):
        """A run of ``selection`` in this process (in-process executor), on the same instance and outputs."""
        resources = {
            "storage": BaizeStorage(output_dir=str(self.output)),
            "openai": OpenAIResource(api_key=self.api_key, base_url=self.teacher_url),
            "pipes_subprocess_client": subprocess_client(),
        }
        with self.instance() as instance:
            return materialize(build_assets(self.config), selection=selection, partition_key=partition,
                               instance=instance, resources=resources, raise_on_error=False)
