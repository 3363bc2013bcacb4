"""Client-side request and token limits of one endpoint, for asyncio callers.

Requests are spaced evenly (one every ``60 / requests_per_minute`` seconds) rather than
let through in bursts, so the achieved rate approaches the limit from below over any
window, and the provider never has a reason to answer 429. Tokens are paced the same
way: each request reserves an estimate before it starts and settles the real count when
it ends. The provider's own signals pause everyone: a ``Retry-After`` on a 429, or
``x-ratelimit-remaining-*`` headers that reach zero before their ``x-ratelimit-reset-*``.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from typing import Callable, Mapping

from .config import RateLimitConfig

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# The longest pause a provider's reset header can impose: a broken or hostile header
# ("1e300s", "99999h") must not stall a run for ever.
MAX_RESET_PAUSE_S = 900.0


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


class RateLimiter:
    """Paces requests and tokens of one endpoint; shared by every concurrent caller."""

    def __init__(self, limits: RateLimitConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._origin = 0.0  # start time of ticket 0 of the request queue
        self._tickets = 0
        self._tokens_free_at = 0.0  # when every reserved token has been paid off at the allowed rate
        self._paused_until = 0.0

    async def acquire(self, estimated_tokens: int) -> None:
        """Wait until one more request of about ``estimated_tokens`` tokens may start.

        Each request takes a ticket; ticket ``n`` starts at ``origin + n * interval``, so
        waiters queue in order and small wake-up delays do not add up. A waiter that
        wakes much later than its slot (a stalled loop, a pause) moves the origin forward,
        so the queue behind it keeps the limit's spacing instead of catching up in a burst.
        """
        now = self._clock()
        pace = 1.0 - self.limits.headroom
        interval = 60.0 / (self.limits.requests_per_minute * pace) if self.limits.requests_per_minute else 0.0
        ticket = self._tickets
        self._tickets += 1
        if self._origin + ticket * interval < now:
            self._origin = now - ticket * interval  # idle: the queue starts again from now
        token_start = 0.0
        if self.limits.tokens_per_minute:
            token_start = max(now, self._tokens_free_at)
            self._tokens_free_at = token_start + estimated_tokens * 60.0 / (self.limits.tokens_per_minute * pace)
        while True:
            slot = self._origin + ticket * interval
            start = max(slot, token_start, self._paused_until)
            if start <= now:
                break
            await asyncio.sleep(start - now)
            now = self._clock()
        if interval and now - slot > interval / 2:
            self._origin += now - slot

    def settle(self, estimated_tokens: int, used_tokens: int) -> None:
        """Correct a reservation by what the request really used."""
        if self.limits.tokens_per_minute:
            pace = 1.0 - self.limits.headroom
            self._tokens_free_at += (used_tokens - estimated_tokens) * 60.0 / (self.limits.tokens_per_minute * pace)

    def pause(self, seconds: float) -> None:
        """No request starts for ``seconds`` (a 429's ``Retry-After``, an exhausted quota)."""
        until = self._clock() + seconds
        if until > self._paused_until:
            self._paused_until = until

    def observe(self, headers: Mapping[str, str] | None, in_flight: int = 0, in_flight_tokens: int = 0) -> None:
        """Slow down on the provider's ``x-ratelimit-*`` headers before its quota runs out.

        The quota left must cover the requests (and tokens) already in flight, which the
        provider has not counted yet when it sent these headers, plus one more.
        """
        if not headers:
            return
        for kind, needed in (("requests", in_flight + 1), ("tokens", max(in_flight_tokens, 1))):
            remaining = headers.get(f"x-ratelimit-remaining-{kind}")
            reset = parse_reset(headers.get(f"x-ratelimit-reset-{kind}"))
            try:
                exhausted = remaining is not None and int(float(remaining)) < needed
            except ValueError:
                continue
            if exhausted and reset and math.isfinite(reset) and reset > 0:
                self.pause(min(reset, MAX_RESET_PAUSE_S))
