"""A shard's Batch API requests cut into batches within the provider's limits (``teacher.batch``).

OpenAI takes at most 50,000 requests and 200 MB in one batch input file, and holds at most
so many prompt tokens of a model in the batches it has not finished (a limit per model and
organization). The requests go out in order, each batch as large as the three limits let
it be: ``max_requests_per_batch``, ``max_bytes_per_batch`` and the enqueued-token limit,
less the estimated prompt tokens of the batches still in flight. A request that no batch
can hold is refused before anything is sent, naming the setting that keeps it out.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from ..config.teacher import BatchConfig

# The failure kind of a request too large for any batch.
REQUEST_TOO_LARGE = "batch_request_too_large"


@dataclass(frozen=True)
class BatchRequest:
    """One line of a batch input file: its ``custom_id``, its bytes and its estimated prompt tokens."""

    key: str
    line: bytes
    tokens: int


def batch_request(key: str, url: str, body: dict[str, Any], tokens: int) -> BatchRequest:
    line = {"custom_id": key, "method": "POST", "url": url, "body": body}
    return BatchRequest(key, (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"), tokens)


@dataclass(frozen=True)
class SplitLimits:
    """The limits one batch, and the batches in flight together, stay within."""

    max_requests: int
    max_bytes: int
    max_enqueued_tokens: int | None
    model: str
    tokens_setting: str  # where max_enqueued_tokens is set, for messages

    @classmethod
    def of(cls, batch: BatchConfig, model: str) -> "SplitLimits":
        by_model = model in batch.max_enqueued_tokens_by_model
        setting = "teacher.batch." + (f"max_enqueued_tokens_by_model.{model}" if by_model else "max_enqueued_tokens")
        return cls(batch.max_requests_per_batch, batch.max_bytes_per_batch, batch.enqueued_token_limit(model), model,
                   setting)

    def refusal(self, request: BatchRequest) -> str | None:
        """Why ``request`` fits in no batch, naming the setting to change; None when it fits."""
        if len(request.line) > self.max_bytes:
            return (f"the request's batch line is {len(request.line):,} bytes, more than one batch input file may "
                    f"hold (teacher.batch.max_bytes_per_batch: {self.max_bytes:,})")
        if self.max_enqueued_tokens is not None and request.tokens > self.max_enqueued_tokens:
            return (f"the request's ~{request.tokens:,} prompt tokens are more than {self.model} may have enqueued "
                    f"({self.tokens_setting}: {self.max_enqueued_tokens:,})")
        return None


class BatchQueue:
    """The requests waiting for a batch, in order, each one's line made once by ``make``."""

    def __init__(self, limits: SplitLimits, make: Callable[[str], BatchRequest]) -> None:
        self.limits, self._make = limits, make
        self._made: dict[str, BatchRequest] = {}
        self._waiting: deque[BatchRequest] = deque()

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def request(self, key: str) -> BatchRequest:
        if key not in self._made:
            self._made[key] = self._make(key)
        return self._made[key]

    def add(self, keys: list[str]) -> dict[str, str]:
        """Queue ``keys``; those no batch can hold stay out, returned with the reason."""
        refused = {}
        for key in keys:
            request = self.request(key)
            refusal = self.limits.refusal(request)
            if refusal is None:
                self._waiting.append(request)
            else:
                refused[key] = refusal
        return refused

    def next_batch(self, enqueued_tokens: int) -> list[BatchRequest]:
        """The requests of the next batch, beside ``enqueued_tokens`` in flight; empty while it must wait."""
        limits = self.limits
        room = None if limits.max_enqueued_tokens is None else limits.max_enqueued_tokens - enqueued_tokens
        taken: list[BatchRequest] = []
        size = tokens = 0
        while self._waiting and len(taken) < limits.max_requests:
            request = self._waiting[0]
            if size + len(request.line) > limits.max_bytes or (room is not None and tokens + request.tokens > room):
                break
            taken.append(self._waiting.popleft())
            size, tokens = size + len(request.line), tokens + request.tokens
        return taken
