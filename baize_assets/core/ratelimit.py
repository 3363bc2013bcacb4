"""Client-side request and token limits of one endpoint, for asyncio callers.

Requests are spaced evenly (one every ``60 / requests_per_minute`` seconds) rather than
let through in bursts, so the achieved rate approaches the limit from below over any
window, and the provider never has a reason to answer 429. Tokens are paced the same
way: each request reserves an estimate before it starts and settles the real count when
it ends. The provider's own signals pause everyone: a ``Retry-After`` on a 429, or
``x-ratelimit-remaining-*`` headers that reach zero before their ``x-ratelimit-reset-*``.
With a shared store, "everyone" is every process using the same endpoint and key.
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import TYPE_CHECKING, Mapping

from .config import RateLimitConfig

if TYPE_CHECKING:  # shared_limits builds on teacher_client, which reads this module's headers
    from .shared_limits import LimitStore

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
    """Paces the requests and tokens of one endpoint and key; shared by every concurrent caller.

    The pacing state lives in ``store`` under ``key``: an in-process store paces the
    callers of one process, a shared one (:mod:`.shared_limits`) every process that
    uses the same endpoint and key.
    """

    def __init__(self, limits: RateLimitConfig, store: LimitStore, key: str) -> None:
        self.limits = limits
        self.store = store
        self.key = key
        self._pace = 1.0 - limits.headroom

    def _token_seconds(self, tokens: int) -> float:
        return tokens * 60.0 / (self.limits.tokens_per_minute * self._pace) if self.limits.tokens_per_minute else 0.0

    async def acquire(self, estimated_tokens: int) -> None:
        """Wait until one more request of about ``estimated_tokens`` tokens may start.

        Each request takes the next slot in the store, one interval after the last one
        taken by anyone, so waiters queue in order and small wake-up delays do not add up.
        A pause written while it slept (by any process) sends it to take a new slot after it.
        """
        rpm = self.limits.requests_per_minute
        interval = 60.0 / (rpm * self._pace) if rpm else 0.0
        token_cost = self._token_seconds(estimated_tokens)
        while True:
            wait = self.store.take_slot(self.key, interval, token_cost)
            if wait <= 0:
                return
            await asyncio.sleep(wait)
            paused = self.store.pause_left(self.key)
            if paused <= 0:
                return
            await asyncio.sleep(paused)
            token_cost = 0.0  # the tokens were reserved with the first slot

    def settle(self, estimated_tokens: int, used_tokens: int) -> None:
        """Correct a reservation by what the request really used."""
        if self.limits.tokens_per_minute:
            self.store.shift_tokens(self.key, self._token_seconds(used_tokens - estimated_tokens))

    def pause(self, seconds: float) -> None:
        """No request starts for ``seconds`` (a 429's ``Retry-After``, an exhausted quota)."""
        self.store.pause(self.key, seconds)

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
