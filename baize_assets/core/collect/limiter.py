"""Client-side request and token limits of one endpoint, for asyncio callers.

Requests are spaced evenly (one every ``60 / requests_per_minute`` seconds) rather than
let through in bursts, so the achieved rate approaches the limit from below over any
window, and the provider never has a reason to answer 429. Tokens are paced the same
way: each request reserves an estimate before it starts and settles the real count when
it ends. The provider's own signals pause everyone: a ``Retry-After`` on a 429, or
``x-ratelimit-remaining-*`` headers too low for the requests in flight, for the share of
their ``x-ratelimit-reset-*`` that gives back the shortfall. With a shared store,
"everyone" is every process using the same endpoint and key, and "in flight" counts
the requests of all of them.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import uuid
from typing import Mapping

from ..config.pipeline import RateLimitConfig
from .errors import MAX_RESET_PAUSE_S, parse_reset
from .shared_limits import LimitStore


class RateLimiter:
    """Paces the requests and tokens of one endpoint and key; shared by every concurrent caller.

    The pacing state lives in ``store`` under ``key``: an in-process store paces the
    callers of one process, a shared one (:mod:`.shared_limits`) every process that
    uses the same endpoint and key.
    """

    def __init__(self, limits: RateLimitConfig, store: LimitStore, key: str, stale_after_s: float = 600.0) -> None:
        self.limits = limits
        self.store = store
        self.key = key
        self._pace = 1.0 - limits.headroom
        # A request begun longer ago than this is over (its process gave up on it or died).
        self.stale_after_s = stale_after_s
        self._request_prefix = f"{uuid.uuid4().hex[:12]}-"  # request ids unique across processes and machines
        self._requests = itertools.count()

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
            # Its slot fell in the pause: it gives the slot's tokens back and queues again with them,
            # so the waiters a pause held back start one after another, not all at once when it ends.
            if token_cost:
                self.store.shift_tokens(self.key, -token_cost)

    def settle(self, estimated_tokens: int, used_tokens: int) -> None:
        """Correct a reservation by what the request really used."""
        if self.limits.tokens_per_minute:
            self.store.shift_tokens(self.key, self._token_seconds(used_tokens - estimated_tokens))

    def begin_request(self) -> str:
        """Count one more request in flight, for every process that shares the store; its id."""
        request = f"{self._request_prefix}{next(self._requests)}"
        self.store.begin_request(self.key, request)
        return request

    def end_request(self, request: str) -> int:
        """The request is over; how many others are still in flight, in every process."""
        return self.store.end_request(self.key, request, self.stale_after_s)

    def pause(self, seconds: float) -> None:
        """No request starts for ``seconds`` (a 429's ``Retry-After``, an exhausted quota)."""
        self.store.pause(self.key, seconds)

    def observe(self, headers: Mapping[str, str] | None, in_flight: int = 0, in_flight_tokens: int = 0) -> None:
        """Slow down on the provider's ``x-ratelimit-*`` headers before its quota runs out.

        The quota left must cover the requests (and tokens) in flight in every process
        sharing the limit, which the provider had not counted when it sent these headers,
        plus one more. When it does not, everyone pauses until the provider gives back the
        shortfall. ``x-ratelimit-reset-*`` is the time until the whole used quota
        (``limit - remaining``) is back; where this limiter paces that kind evenly, the
        quota was used evenly and comes back evenly, so the shortfall's share of the reset
        is enough. Unpaced requests may have used it in one burst that comes back only at
        the end, so then (or without a ``x-ratelimit-limit-*`` header) the pause is the whole reset.
        """
        if not headers:
            return
        paced = {"requests": self.limits.requests_per_minute, "tokens": self.limits.tokens_per_minute}
        for kind, needed in (("requests", in_flight + 1), ("tokens", max(in_flight_tokens, 1))):
            reset = parse_reset(headers.get(f"x-ratelimit-reset-{kind}"))
            try:
                remaining = int(float(headers[f"x-ratelimit-remaining-{kind}"]))
                limit = float(headers.get(f"x-ratelimit-limit-{kind}") or "nan")
            except (KeyError, ValueError):
                continue
            if remaining >= needed or not reset or not math.isfinite(reset) or reset <= 0:
                continue
            pause = reset
            if paced[kind] and math.isfinite(limit) and limit > remaining:
                pause = min(reset * (needed - remaining) / (limit - max(remaining, 0)), reset)
            self.pause(min(pause, MAX_RESET_PAUSE_S))
