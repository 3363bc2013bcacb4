"""Where run steps execute: one process per step (default), the run's process, or Celery workers.

``BAIZE_EXECUTOR=celery`` sends every step to the dagster-celery executor; the broker
settings come from ``BAIZE_CELERY_CONFIG`` (default ``deploy/celery.yaml``), the same
file the workers start with (``dagster-celery worker start -y deploy/celery.yaml``), so
the runs and the workers always agree on the broker.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from dagster import ExecutorDefinition, in_process_executor

from .core.config.pipeline import PROJECT_ROOT, ConfigError

DEFAULT_CELERY_CONFIG = PROJECT_ROOT / "deploy" / "celery.yaml"


def celery_config_path() -> Path:
    return Path(os.environ.get("BAIZE_CELERY_CONFIG") or DEFAULT_CELERY_CONFIG)


def executor_from_env() -> ExecutorDefinition | None:
    """The executor named by ``BAIZE_EXECUTOR``; None keeps Dagster's multiprocess default."""
    kind = os.environ.get("BAIZE_EXECUTOR", "multiprocess")
    if kind == "multiprocess":
        return None
    if kind == "in_process":
        return in_process_executor
    if kind == "celery":
        from dagster_celery import celery_executor

        path = celery_config_path()
        try:
            executor_config = yaml.safe_load(path.read_text(encoding="utf-8"))["execution"]["config"]
        except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read the Celery executor config (execution.config) from {path}: {exc}") from None
        return celery_executor.configured(executor_config)
    raise ConfigError(f"BAIZE_EXECUTOR must be 'multiprocess', 'in_process' or 'celery', not '{kind}'")
