"""What a collection returns, whichever protocol asked: one row per seed, and the run's totals.

Chat mode (:mod:`.collector`), the Batch API (:mod:`.batch`) and several processes
(:mod:`.parallel`) all end a seed as one row: its identity and generation inputs, then
either the teacher's answer or a failure kind and message.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..config.pipeline import TeacherConfig
from .client import Usage
from .modes import Writer, self_chat_writer

# The failure kind of a seed the run's budget left unasked (the others: collect.client).
BUDGET_EXHAUSTED = "budget_exhausted"


@dataclass
class CollectionResult:
    transcripts: pd.DataFrame
    usage: Usage  # calls answered in this run (cached conversations cost nothing)
    failures: Counter  # seeds that ended as failure rows, by kind
    retries: Counter  # retried attempts, by kind
    seconds: float
    requests: int  # HTTP requests sent, retries included
    cached: int  # conversations reused from the cache
    spent_tokens: int
    spent_dollars: float | None  # None when the model has no price
    partial: bool  # the budget stopped the run before every seed was asked


def generation_inputs(teacher: TeacherConfig, writer: Writer | None = None) -> dict[str, Any]:
    """Everything besides the seed that shapes a conversation: the cache key's inputs."""
    writer = writer or self_chat_writer(teacher)
    inputs = {
        "mode": writer.mode,
        "prompt_version": writer.prompt_version,
        "model": teacher.model,
        "temperature": teacher.temperature,
        "top_p": teacher.top_p,
        "max_tokens": teacher.max_tokens,
        "max_rounds": teacher.max_rounds,
    }
    if writer.mode == "v1.5":
        inputs["max_conversation_tokens"] = teacher.max_conversation_tokens
    return inputs


def seed_row(seed: dict, key: str, inputs: dict[str, Any], teacher: TeacherConfig) -> dict[str, Any]:
    """The columns every row of a seed has, asked now under ``inputs`` (see :func:`generation_inputs`)."""
    return {
        "seed_id": seed["seed_id"], "seed": seed["seed"], "source": seed["source"], "shard": int(seed["shard"]),
        "prompt_version": inputs["prompt_version"], "model": teacher.model,
        "temperature": teacher.temperature, "max_tokens": teacher.max_tokens,
        "generation_mode": inputs["mode"], "cached": False, "cache_key": key,
    }  # fmt: skip


def cached_row(stored: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """A seed's row from its cached conversation: what made the conversation, not what asks now."""
    return {**stored, **row, "cached": True, "prompt_version": stored["prompt_version"], "model": stored["model"]}
