"""Shared fixtures: the project's configuration made fast, a simulated teacher, and one S3 server a session."""

from __future__ import annotations

import os

import pytest

from baize_assets.core.config.pipeline import PipelineConfig, load_config
from baize_assets.teacher.server import SimulatedTeacher

from .object_store_support import s3_store  # noqa: F401  (one server for every module that uses it)

# Parallel test workers share the cores: each worker, and what it starts, gets its share of
# them for torch's thread pool instead of one thread per core each. Read before torch loads.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))


def fast_config(max_steps: int = 2) -> PipelineConfig:
    """The project's own baize.yaml, with adapter training cut to a few steps."""
    config = load_config()
    adapters = [
        adapter.model_copy(update={"training": adapter.training.model_copy(update={"max_steps": max_steps})})
        for adapter in config.adapters
    ]
    return config.model_copy(update={"adapters": adapters})


def one_quora_shard_config(**sections) -> PipelineConfig:
    """The shipped quora source as one shard and its adapter, no v2 and no judge; ``sections``
    are top-level settings merged over the shipped ones (e.g. ``corpus={"judge_filter": ...}``)."""
    shipped = fast_config()
    base = shipped.model_dump(mode="json")
    quora = next(s for s in base["sources"] if s["name"] == "quora")
    quora["paths"] = [str(p) for p in shipped.source("quora").resolved_paths()]
    general = next(a for a in base["adapters"] if a["name"] == "baize_general")
    return PipelineConfig.model_validate({
        **base, "sources": [{**quora, "shards": 1}], "adapters": [{**general, "sources": ["quora"]}],
        "self_distillation": [], "judge": {**base["judge"], "enabled": False},
        **{name: {**base[name], **values} for name, values in sections.items()},
    })


@pytest.fixture(scope="session")
def teacher():
    """A simulated OpenAI-compatible teacher on a free local port, for the whole session."""
    with SimulatedTeacher() as server:
        yield server


@pytest.fixture
def teacher_env(teacher, monkeypatch):
    """Point the openai client at the simulated teacher, as a user would with env vars."""
    monkeypatch.setenv("OPENAI_BASE_URL", teacher.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    return teacher


def pytest_collection_modifyitems(items):
    """The files with end-to-end tests first (in their own order), then the rest.

    ``make test`` hands whole files to parallel workers in this order: started first, the
    long files run beside each other and the short ones fill in at the end, instead of one
    long file starting last while the other worker idles.
    """
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
