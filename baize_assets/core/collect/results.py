"""What a collection returns, whichever protocol asked: one row per seed, and the run's totals.

Chat mode (:mod:`.collector`), the Batch API (:mod:`.batch`) and several processes
(:mod:`.parallel`) all end a seed as one row: its identity and generation inputs, then
either the teacher's answer or a failure kind and message.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..config.pipeline import TeacherConfig
from .client import Usage
from .modes import Writer, self_chat_writer


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
    adaptations: int = 0  # request fields adapted to the endpoint's refusals
    # Answers paid for and not used (another format, no text, ...): tokens and dollars by failure kind.
    rejected_tokens: Counter = field(default_factory=Counter)
    rejected_dollars: Counter = field(default_factory=Counter)

    def rejected_cost(self) -> dict[str, dict[str, float]]:
        """What rejected answers cost, by failure kind: for the metadata."""
        return {kind: {"tokens": int(self.rejected_tokens[kind]), "dollars": round(self.rejected_dollars[kind], 6)}
                for kind in sorted(self.rejected_tokens)}


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
    # Only when set, so the keys of conversations asked without them stay what they were.
    optional = {"reasoning_effort": teacher.reasoning_effort, "extra_body": teacher.extra_body,
                "response_format": writer.response_format}
    inputs.update((name, value) for name, value in optional.items() if value)
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
