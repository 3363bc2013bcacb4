"""How a teacher request can fail, and when to try again: the failure kinds, the errors, the retry timing.

Every module of the collector imports these from here and from nowhere else, so the
client, the limiter and the shared stores never import each other to name a failure.

Every way a request can end maps to one of four outcomes: a usable answer; a
:class:`RetryableError`, whose kind feeds the retry counts and the limiter; a
:class:`TerminalError` of that seed; or a :class:`TeacherFatalError` that stops the
whole run. A :class:`ParameterRejected` is a 400 about one request parameter that the
run can adapt to (:mod:`.request_profile`).
"""

from __future__ import annotations

import base64
import random
import re
from typing import Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

# Failure kinds that are not an HTTP status.
MALFORMED = "malformed"  # a body that is no usable chat completion (not JSON, no text, ...)
WRONG_FORMAT = "wrong_format"  # a usable answer not in the format asked for (a transcript without markers)
OVERSIZED = "oversized"
CONTEXT_LENGTH = "context_length"
BAD_REQUEST = "bad_request"
TIMEOUT = "timeout"
CONNECTION = "connection"
RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
REASONING_EXHAUSTED = "reasoning_exhausted"  # the completion budget ran out before any answer text
BUDGET_EXHAUSTED = "budget_exhausted"  # the run's budget left the seed unasked

CONTENT_FILTER = "content_filter"  # a finish reason: the provider withheld (part of) the answer

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# The longest pause a provider's reset header can impose: a broken or hostile header
# ("1e300s", "99999h") must not stall a run for ever.
MAX_RESET_PAUSE_S = 900.0


class TeacherFatalError(RuntimeError):
    """The teacher refused in a way no retry can fix (bad key, missing model, no quota, unreachable)."""


class RetryableError(Exception):
    """An attempt that failed in a way another attempt may not.

    ``reached`` is False only when no connection to the endpoint could be opened.
    """

    def __init__(self, kind: str, message: str, retry_after: float | None = None, reached: bool = True) -> None:
        super().__init__(message)
        self.kind, self.retry_after, self.reached = kind, retry_after, reached


class SeedFailure(Exception):
    """What ends a seed as a failure row; ``paid`` is what its answered requests cost, for that row.

    ``paid`` holds prompt, completion and reasoning tokens: answers in another format, a
    v1.5 conversation's turns before the failing one, a completion without text.
    """

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.paid = (0, 0, 0)

    def charged(self, prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0) -> "SeedFailure":
        """This failure, with these tokens added to what it cost."""
        prompt, completion, reasoning = self.paid
        self.paid = (prompt + prompt_tokens, completion + completion_tokens, reasoning + reasoning_tokens)
        return self


class TerminalError(SeedFailure):
    """A seed that no retry can help; it ends as a failure row of ``kind``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class BudgetStop(SeedFailure):
    """The run's budget cannot hold a request's worst case: the seed is left unasked (or its conversation
    unfinished)."""


class ParameterRejected(Exception):
    """A 400 naming one parameter of the request that the endpoint does not take (or not with that value)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Seconds before retry ``attempt`` (0 = the first retry): exponential, with full jitter,
    so workers that failed together do not retry together."""
    return random.uniform(0, min(max_s, base_s * 2**attempt))


def parse_reset(value: str | None) -> float | None:
    """Seconds in an ``x-ratelimit-reset-*`` value such as ``"1s"``, ``"6m0s"``, ``"20ms"``."""
    if not value:
        return None
    parts = _DURATION_PART.findall(value.strip())
    if not parts:
        try:
            return float(value)
        except ValueError:
            return None
    return sum(float(number) * _SECONDS_PER_UNIT[unit] for number, unit in parts)


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds; HTTP dates are ignored)."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(float(value) * scale, 0.0)
            except ValueError:
                continue
    return None


def redact_url(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:[redacted]@{host}"))


def url_secrets(url: str) -> tuple[str, ...]:
    """The password of ``url`` as written and decoded, and the Basic credentials derived from it."""
    parts = urlsplit(url)
    if not parts.password:
        return ()
    basic = base64.b64encode(f"{unquote(parts.username or '')}:{unquote(parts.password)}".encode()).decode()
    return parts.password, unquote(parts.password), basic
