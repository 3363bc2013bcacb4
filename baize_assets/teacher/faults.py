"""Fault injection of the simulated teacher: which chat completions fail, and how.

Whether the n-th valid chat completion faults, and with which kind, depends only on n
and the schedule's seed, so a run with faults is reproducible. The kinds, by what the
client sees:

* an error status: ``rate_limit`` (429 with ``Retry-After``), ``server_error`` (500),
  ``quota_402`` (402 ``insufficient_quota``);
* no answer in time: ``hang`` (answers only after ``hang_s``), ``slow_drip`` (the body
  a few bytes at a time, ``drip_interval_s`` apart, so a per-read timeout never hits);
* a broken body: ``invalid_json`` (cut short, with a matching Content-Length, as a proxy
  cutting a large body does), ``short_body`` (a Content-Length larger than what is sent,
  then the connection closes), ``non_utf8`` (bytes that are not UTF-8 in the text);
* a well-formed 200 that is no usable answer: ``malformed`` (text without markers),
  ``content_filter`` (cut, finish reason ``content_filter``), ``oversized``
  (``oversized_chars`` characters of text), ``empty_choices``, ``no_message`` (a choice
  without a message), ``tool_calls`` (content null and a tool call), ``not_a_completion``
  (valid JSON that is no chat completion: ``[]``, ``{"foo": 1}``, ...).

``DEFAULT_FAULT_KINDS`` are the first four kinds the server had; they are what a fault
rate picks from unless told otherwise.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Iterable, Sequence

from .protocol import ApiError
from .text import stable_rng

DEFAULT_FAULT_KINDS = ("rate_limit", "server_error", "hang", "malformed")
EXTRA_FAULT_KINDS = (
    "quota_402", "slow_drip", "invalid_json", "short_body", "non_utf8", "content_filter", "oversized",
    "empty_choices", "no_message", "tool_calls", "not_a_completion",
)  # fmt: skip
ALL_FAULT_KINDS = DEFAULT_FAULT_KINDS + EXTRA_FAULT_KINDS

MALFORMED_REPLIES = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.",
    "Sure! Here is the conversation you asked for. The human starts by asking about the topi",
    "I'm sorry, but I can't continue this transcript.",
    '{"choices": [{"text": "unexpected end of',
)
_NOT_A_COMPLETION = (b"[]", b'{"foo": 1}', b"null", b'"chat.completion"')
_OVERSIZED_WORD = "placeholder "
# Stands in for scripted raw bytes while the completion is serialised; no JSON text contains it.
_RAW_CONTENT = "\x00raw content\x00"


class FaultSchedule:
    """``rate`` of the chat completions fault with one of ``kinds``, reproducibly from ``seed``."""

    def __init__(self, rate: float, kinds: Iterable[str], seed: int) -> None:
        self.kinds = tuple(sorted(set(kinds)))
        unknown = set(self.kinds) - set(ALL_FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {list(ALL_FAULT_KINDS)}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault_rate must be between 0 and 1, got {rate}")
        if rate > 0 and not self.kinds:
            raise ValueError("fault_rate > 0 needs at least one fault kind")
        self.rate, self.seed = rate, seed
        self._lock = threading.Lock()
        self._count = 0

    def next(self) -> str | None:
        """The fault of the next valid chat completion, a function of its number and the seed."""
        with self._lock:
            self._count += 1
            number = self._count
        rng = stable_rng("fault", self.seed, number)
        if rng.random() < self.rate:
            return rng.choice(self.kinds)
        return None


def status_fault(kind: str | None, retry_after_s: float) -> ApiError | None:
    """The error answer of a status fault, or None for the other kinds."""
    if kind == "rate_limit":
        return ApiError(429, "Rate limit reached for requests (simulated).", "rate_limit_exceeded",
                        "rate_limit_exceeded", outcome="rate_limit", headers={"Retry-After": f"{retry_after_s:g}"})
    if kind == "server_error":
        return ApiError(500, "The server had an error while processing your request (simulated).",
                        "server_error", None, outcome="server_error")
    if kind == "quota_402":
        return ApiError(402, "You exceeded your current quota (simulated).", "insufficient_quota",
                        "insufficient_quota", outcome="quota_402")
    return None


def malformed_reply(seed: int, messages: Sequence[dict[str, Any]]) -> str:
    return stable_rng("malformed", seed, messages).choice(MALFORMED_REPLIES)


def faulty_text(kind: str | None, text: str, finish_reason: str, oversized_chars: int) -> tuple[str, str]:
    """The answer's text and finish reason under a fault that changes only those."""
    if kind == "content_filter":
        return text[: len(text) // 2], "content_filter"
    if kind == "oversized":
        return (_OVERSIZED_WORD * (oversized_chars // len(_OVERSIZED_WORD) + 1))[:oversized_chars], "stop"
    return text, finish_reason


def completion_body(kind: str | None, completion: dict[str, Any], raw_content: bytes | None,
                    fault_seed: int) -> bytes:
    """The bytes of a 200 answer carrying ``completion``, broken the way ``kind`` says.

    ``raw_content`` (scripted bytes) replaces the message content verbatim, between its
    quotes, whether or not that leaves valid JSON.
    """
    choice = completion["choices"][0]
    if kind == "empty_choices":
        completion = {**completion, "choices": []}
    elif kind == "no_message":
        completion = {**completion, "choices": [{"index": 0, "logprobs": None, "finish_reason": "stop"}]}
    elif kind == "tool_calls":
        call = {"id": f"call_{completion['id'][-12:]}", "type": "function",
                "function": {"name": "write_transcript", "arguments": json.dumps({"text": "placeholder"})}}
        message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
        completion = {**completion, "choices": [{**choice, "message": message, "finish_reason": "tool_calls"}]}
    elif kind == "not_a_completion":
        return stable_rng("not-a-completion", fault_seed, completion["id"]).choice(_NOT_A_COMPLETION)
    elif raw_content is not None:
        completion = {**completion, "choices": [{**choice, "message": {**choice["message"], "content": _RAW_CONTENT}}]}
    data = json.dumps(completion).encode()
    if raw_content is not None:  # a no-op where the fault dropped the message
        data = data.replace(json.dumps(_RAW_CONTENT).encode(), b'"' + raw_content + b'"', 1)
    if kind == "invalid_json":
        return data[: len(data) // 2]
    if kind == "non_utf8":
        return data.replace(b'"content": "', b'"content": "caf\xe9 \xff\xfe ', 1)
    return data
