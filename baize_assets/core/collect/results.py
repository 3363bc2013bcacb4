"""What a collection returns, whichever protocol asked: one row per seed, and the run's totals.

Chat mode (:mod:`.collector`), the Batch API (:mod:`.batch`) and several processes
(:mod:`.parallel`) all end a seed as one row: its identity and generation inputs, then
either the teacher's answer or a failure kind and message.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..config.pipeline import ModelPrice, TeacherConfig
from .cache import CollectionStats
from .client import Usage, estimate_tokens
from .errors import BUDGET_EXHAUSTED
from .modes import Writer, self_chat_writer
from .pricing import dollars


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


def history_key(teacher: TeacherConfig, writer: Writer | None = None) -> str:
    """What a collection's cost is recorded under: what asks (mode, prompt version, structured output) and who
    answers (model, effort), not the sampling details."""
    writer = writer or self_chat_writer(teacher)
    return json.dumps({"mode": writer.mode, "prompt_version": writer.prompt_version, "model": teacher.model,
                       "reasoning_effort": teacher.reasoning_effort,
                       "structured": writer.response_format is not None}, sort_keys=True)


def collection_stats(rows: list[dict[str, Any]], usage: Usage, requests: int, writer: Writer) -> CollectionStats:
    """What the rows asked now (not from the cache, not left unasked by the budget) cost, with ``usage`` and
    ``requests`` the collection's totals."""
    asked = [r for r in rows if not r.get("cached") and r.get("failure_kind") != BUDGET_EXHAUSTED]
    answered = [r["prompt_tokens"] + r["completion_tokens"] for r in asked if r.get("failure_kind") is None]
    return CollectionStats(
        rows=len(asked), requests=requests, prompt_tokens=sum(usage.prompt_tokens.values()),
        completion_tokens=sum(usage.completion_tokens.values()), answered=len(answered),
        answered_tokens=float(sum(answered)), answered_tokens_sq=float(sum(t * t for t in answered)),
        prompt_estimate=sum(estimate_tokens(writer.first_messages(r["seed"])) for r in asked),
    )


def seed_row(seed: dict, key: str, inputs: dict[str, Any], teacher: TeacherConfig) -> dict[str, Any]:
    """The columns every row of a seed has, asked now under ``inputs`` (see :func:`generation_inputs`)."""
    return {
        "seed_id": seed["seed_id"], "seed": seed["seed"], "source": seed["source"], "shard": int(seed["shard"]),
        "prompt_version": inputs["prompt_version"], "model": teacher.model,
        "temperature": teacher.temperature, "max_tokens": teacher.max_tokens,
        "generation_mode": inputs["mode"], "cached": False, "cache_key": key,
    }  # fmt: skip


def paid_fields(paid: tuple[int, int, int], price: ModelPrice | None) -> dict[str, Any]:
    """The token and dollar columns of a failure row: what its answered requests cost (zeros when none)."""
    prompt, completion, reasoning = paid
    return {"prompt_tokens": prompt, "completion_tokens": completion, "reasoning_tokens": reasoning,
            "total_tokens": prompt + completion, "dollars": dollars(price, prompt, completion)}


def cached_row(stored: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """A seed's row from its cached conversation: what made the conversation, not what asks now."""
    return {**stored, **row, "cached": True, "prompt_version": stored["prompt_version"], "model": stored["model"]}
