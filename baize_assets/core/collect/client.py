"""One chat completion request to the teacher: what its outcome means for the run, what it cost.

Every way a request can end maps to one of the outcomes of :mod:`.errors`: a usable
answer, a retryable failure, a terminal failure of that seed, a fatal error that stops
the whole run (a bad key, a missing model, an exhausted quota, an endpoint that cannot
be reached), or a refused request field the run adapts to (:mod:`.request_profile`).
Endpoints that are OpenAI-compatible in name only are expected:

* the whole request, body included, runs under one deadline of ``timeout_s``: the
  HTTP client's timeout is per read, so a body sent a few bytes at a time would never
  time out;
* the body is checked before it is trusted: one that is not JSON, not UTF-8, not a
  chat completion, or without a text message is ``malformed`` (retried); a text longer
  than ``teacher.answer_char_limit`` is ``oversized`` (not retried: the same prompt
  gets the same runaway answer); no text at all because the completion budget ran out
  (a reasoning model that spent it thinking) is ``reasoning_exhausted`` (not retried);
* every message meant for a row, a log line or an exception goes through
  :meth:`TeacherClient.redact`, which removes the API key and the password of the
  base URL (``OPENAI_BASE_URL`` may carry ``user:password@``).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

import openai

from ..config.pipeline import TeacherConfig
from .errors import (
    BAD_REQUEST,
    CONNECTION,
    CONTENT_FILTER,
    CONTEXT_LENGTH,
    MALFORMED,
    OVERSIZED,
    RATE_LIMITED,
    REASONING_EXHAUSTED,
    SERVER_ERROR,
    TIMEOUT,
    ParameterRejected,
    RetryableError,
    TeacherFatalError,
    TerminalError,
    parse_retry_after,
    redact_url,
    url_secrets,
)
from .request_profile import RequestProfile, rejected_field, request_fields

# OpenAI error codes of a 400 that concern one prompt, not the whole run.
_PER_SEED_BAD_REQUEST_CODES = {"context_length_exceeded", "string_above_max_length", "invalid_prompt"}
# What the HTTP transport (httpx, httpx2) calls a failure to open a connection at all.
_CONNECT_FAILURES = {"ConnectError", "ConnectTimeout"}
# Request fields the openai client takes by name; any other goes in its extra_body.
_CLIENT_FIELDS = frozenset({"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
                            "stop", "reasoning_effort", "response_format", "seed"})
_MAX_MESSAGE_CHARS = 500
_MAX_FINISH_REASON_CHARS = 64
_MAX_MODEL_CHARS = 200
_MAX_TOKEN_COUNT = 2**53  # beyond it a count is nonsense and would overflow the table's int64


@dataclass
class Usage:
    """Token usage of a collection run, per model (as the teacher reported it)."""

    calls: Counter = field(default_factory=Counter)
    prompt_tokens: Counter = field(default_factory=Counter)
    completion_tokens: Counter = field(default_factory=Counter)  # hidden reasoning included, as OpenAI counts it
    reasoning_tokens: Counter = field(default_factory=Counter)

    def add(self, model: str, prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0) -> None:
        self.calls[model] += 1
        self.prompt_tokens[model] += prompt_tokens
        self.completion_tokens[model] += completion_tokens
        self.reasoning_tokens[model] += reasoning_tokens

    def merge(self, other: "Usage") -> None:
        for mine, theirs in ((self.calls, other.calls), (self.prompt_tokens, other.prompt_tokens),
                             (self.completion_tokens, other.completion_tokens),
                             (self.reasoning_tokens, other.reasoning_tokens)):
            mine.update(theirs)

    @property
    def total_tokens(self) -> int:
        return sum(self.prompt_tokens.values()) + sum(self.completion_tokens.values())

    def as_metadata(self) -> dict[str, int]:
        """Totals and per-model counts, named as dagster-openai names them."""
        metadata = {
            "openai.calls": sum(self.calls.values()),
            "openai.prompt_tokens": sum(self.prompt_tokens.values()),
            "openai.completion_tokens": sum(self.completion_tokens.values()),
            "openai.reasoning_tokens": sum(self.reasoning_tokens.values()),
            "openai.total_tokens": self.total_tokens,
        }
        for model in self.calls:
            metadata[f"openai.{model}.calls"] = self.calls[model]
            metadata[f"openai.{model}.prompt_tokens"] = self.prompt_tokens[model]
            metadata[f"openai.{model}.completion_tokens"] = self.completion_tokens[model]
            metadata[f"openai.{model}.reasoning_tokens"] = self.reasoning_tokens[model]
            metadata[f"openai.{model}.total_tokens"] = self.prompt_tokens[model] + self.completion_tokens[model]
        return metadata


@dataclass
class Completion:
    """A 200 answer whose body is a JSON object: what it cost, and the object, not yet checked."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    headers: Mapping[str, str]
    data: dict[str, Any]


@dataclass
class Answer:
    text: str
    finish_reason: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int = 0


def estimate_tokens(messages: list[dict[str, str]]) -> int:
    """A cheap upper-side guess of prompt tokens (about four characters a token)."""
    return sum(math.ceil(len(m["content"]) / 4) + 4 for m in messages)


def _could_not_connect(error: openai.APIConnectionError) -> bool:
    cause = error.__cause__
    return cause is not None and any(c.__name__ in _CONNECT_FAILURES for c in type(cause).__mro__)


def _token_count(usage: Any, name: str, details: str | None = None) -> int:
    if details is not None:
        usage = usage.get(details) if isinstance(usage, dict) else None
    value = usage.get(name) if isinstance(usage, dict) else None
    valid = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_TOKEN_COUNT
    return value if valid else 0


class TeacherClient:
    """The collector's view of the teacher: classified outcomes of chat completions."""

    def __init__(self, client: openai.AsyncOpenAI | openai.OpenAI, teacher: TeacherConfig, api_key: str) -> None:
        self.client = client
        self.teacher = teacher
        base_url = str(client.base_url)
        self.endpoint = redact_url(base_url).rstrip("/")
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = tuple(sorted({s for s in (api_key, *url_secrets(base_url)) if s}, key=len, reverse=True))

    def redact(self, message: str) -> str:
        for secret in self.secrets:
            message = message.replace(secret, "[redacted]")
        return message[:_MAX_MESSAGE_CHARS]

    def unreachable(self, error: RetryableError, attempts: int) -> TeacherFatalError:
        return TeacherFatalError(self.redact(
            f"cannot reach the {self.teacher.section} endpoint {self.endpoint}: {error} (after {attempts} attempts); "
            f"check {self.teacher.base_url_env}"
        ))

    def _retry_after(self, headers: Mapping[str, str] | None) -> float | None:
        # An endpoint's Retry-After is honored, but never an endless or nonsensical one.
        seconds = parse_retry_after(headers)
        if seconds is None or not math.isfinite(seconds):
            return None
        return min(seconds, max(self.teacher.retry_max_s, self.teacher.timeout_s))

    async def request(self, messages: list[dict[str, str]], stop: list[str] | None, profile: RequestProfile,
                      response_format: dict[str, Any] | None = None,
                      row_fields: Mapping[str, Any] | None = None) -> Completion:
        """One attempt; raises RetryableError, TerminalError, ParameterRejected or TeacherFatalError."""
        teacher = self.teacher
        fields = request_fields(teacher, profile, messages, stop, response_format, row_fields)
        extra = {name: value for name, value in fields.items() if name not in _CLIENT_FIELDS}
        named = {name: value for name, value in fields.items() if name in _CLIENT_FIELDS}
        try:
            async with asyncio.timeout(teacher.timeout_s):
                raw = await self.client.chat.completions.with_raw_response.create(**named, extra_body=extra or None)
                body = raw.content
        except TimeoutError:
            raise RetryableError(TIMEOUT, f"no complete answer within {teacher.timeout_s:g} s") from None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise TeacherFatalError(
                f"the {teacher.section} endpoint rejected the API key (HTTP {exc.status_code}); "
                f"check {teacher.api_key_env}"
            ) from None
        except openai.NotFoundError:
            raise TeacherFatalError(
                f"the {teacher.section} endpoint has no model '{self.redact(teacher.model)}' (HTTP 404); "
                f"check {teacher.section}.model in the configuration and {teacher.base_url_env}"
            ) from None
        except openai.BadRequestError as exc:
            if exc.code in _PER_SEED_BAD_REQUEST_CODES:
                raise TerminalError(CONTEXT_LENGTH if "length" in (exc.code or "") else BAD_REQUEST,
                                    self.redact(str(exc))) from None
            refused = rejected_field(exc.code, exc.param, exc.message, fields)
            if refused is not None:
                raise ParameterRejected(refused, self.redact(str(exc))) from None
            raise TeacherFatalError(f"the {teacher.section} endpoint rejected the request (HTTP 400): "
                                    f"{self.redact(str(exc))}") from None
        except openai.RateLimitError as exc:
            if exc.code == "insufficient_quota":
                raise TeacherFatalError("the teacher account has no quota left (HTTP 429 insufficient_quota)") \
                    from None
            raise RetryableError(RATE_LIMITED, self.redact(str(exc)), self._retry_after(exc.response.headers)) \
                from None
        except openai.APITimeoutError as exc:
            raise RetryableError(TIMEOUT, f"no answer within {teacher.timeout_s:g} s",
                                 reached=not _could_not_connect(exc)) from None
        except openai.APIConnectionError as exc:
            raise RetryableError(CONNECTION, self.redact(str(exc.__cause__ or exc) or "connection dropped"),
                                 reached=not _could_not_connect(exc)) from None
        except openai.APIStatusError as exc:
            refused = rejected_field(exc.code, exc.param, exc.message, fields)
            if exc.status_code in (422, 500) and refused is not None and "validation error" in exc.message.lower():
                raise ParameterRejected(refused, self.redact(str(exc))) from None  # a body its framework refused
            if exc.status_code == 402:  # Payment Required: the account, not the request
                reason = self.redact(str(exc.code)) if exc.code else "payment required"
                raise TeacherFatalError(f"the teacher account has no quota left (HTTP 402 {reason})") from None
            kind = SERVER_ERROR if exc.status_code >= 500 else f"http_{exc.status_code}"
            if exc.status_code >= 500 or exc.status_code in (408, 409):
                raise RetryableError(kind, self.redact(str(exc)), self._retry_after(exc.response.headers)) from None
            raise TerminalError(kind, self.redact(str(exc))) from None
        except openai.APIError as exc:
            raise RetryableError(MALFORMED, self.redact(str(exc))) from None
        return self._completion(body, raw.headers)

    def _completion(self, body: bytes, headers: Mapping[str, str]) -> Completion:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:  # ValueError covers bad JSON and bytes that are not UTF-8
            raise RetryableError(MALFORMED, self.redact(
                f"the answer is not valid JSON ({len(body)} bytes): {type(exc).__name__}: {exc}"
            )) from None
        return self.completion(data, headers)

    def completion(self, data: Any, headers: Mapping[str, str]) -> Completion:
        """A parsed answer body (a chat answer's, or a batch output line's) as a Completion, not yet checked."""
        if not isinstance(data, dict):
            raise RetryableError(MALFORMED, f"the answer is a JSON {type(data).__name__}, not a chat completion")
        usage = data.get("usage")
        model = data.get("model")
        return Completion(
            model=model[:_MAX_MODEL_CHARS] if isinstance(model, str) and model else self.teacher.model,
            prompt_tokens=_token_count(usage, "prompt_tokens"),
            completion_tokens=_token_count(usage, "completion_tokens"),
            reasoning_tokens=_token_count(usage, "reasoning_tokens", "completion_tokens_details"),
            headers=headers,
            data=data,
        )

    def answer(self, completion: Completion) -> Answer:
        """The text of a completion's first choice, or why there is none that can be used."""
        data = completion.data
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            error = data.get("error")
            if isinstance(error, dict):
                raise RetryableError(MALFORMED, self.redact(f"the answer is an error: {error.get('message')}"))
            raise RetryableError(MALFORMED, "the answer has no choices")
        choice = choices[0]
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise RetryableError(MALFORMED, "the answer's choice has no message")
        finish_reason = choice.get("finish_reason")
        finish_reason = finish_reason[:_MAX_FINISH_REASON_CHARS] if isinstance(finish_reason, str) else None
        content = message.get("content")
        if content is None and finish_reason == CONTENT_FILTER:
            content = ""  # withheld entirely: still an answer, which the corpus rejects by its finish reason
        if content is None and message.get("tool_calls"):
            raise RetryableError(MALFORMED, "the answer is a tool call, not text")
        if (content is None or isinstance(content, str) and not content.strip()) and finish_reason == "length":
            raise TerminalError(REASONING_EXHAUSTED, self._exhausted_message(completion))
        if not isinstance(content, str):
            raise RetryableError(MALFORMED, f"the answer has no text content ({type(content).__name__})")
        limit = self.teacher.answer_char_limit
        if len(content) > limit:
            raise TerminalError(OVERSIZED, f"the answer has {len(content):,} characters, over the limit of "
                                           f"{limit:,} ({self.teacher.section}.max_answer_chars)")
        try:
            content.encode("utf-8")
        except UnicodeEncodeError:  # an escaped lone surrogate: valid JSON, but no text to store
            raise RetryableError(MALFORMED, "the answer's text is not valid Unicode (a lone surrogate)") from None
        return Answer(content, finish_reason, completion.model, completion.prompt_tokens, completion.completion_tokens,
                      completion.reasoning_tokens)

    def _exhausted_message(self, completion: Completion) -> str:
        section, teacher = self.teacher.section, self.teacher
        spent = f"{completion.completion_tokens} completion tokens"
        if completion.reasoning_tokens:
            spent += f", {completion.reasoning_tokens} of them reasoning"
        effort = f" or lower {section}.reasoning_effort" + (f" ({teacher.reasoning_effort})"
                                                              if teacher.reasoning_effort else "")
        return (f"the model reached its completion budget ({spent}) without writing any answer; raise "
                f"{section}.max_tokens (now {teacher.max_tokens}){effort}")
