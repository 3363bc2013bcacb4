"""One chat request to the teacher, as a worker of the collector sends it: paced, budgeted, retried.

Every attempt reserves its worst case in the run's budget and waits for the rate
limiter; 429, 5xx, timeouts, dropped connections and malformed answers are retried
with exponential backoff and full jitter, honoring ``Retry-After``; how each outcome is
classified is :mod:`.client`'s job. The first request goes alone, retries included,
until the endpoint answers anything: a bad key or model then costs one request, not
one per worker, and an endpoint nobody listens on stops the run before any other seed
is tried.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Callable

from ..config.pipeline import TeacherConfig
from .client import (
    CONTENT_FILTER,
    MALFORMED,
    RATE_LIMITED,
    Answer,
    RetryableError,
    TeacherClient,
    TeacherFatalError,
    TerminalError,
    Usage,
    estimate_tokens,
)
from .limiter import RateLimiter
from .pricing import Budget, Reservation
from .shared_limits import LimitStoreError


class BudgetStop(Exception):
    """The run's budget cannot hold this request's worst case: the seed is left unasked."""


class Abandoned(Exception):
    """Another worker hit a fatal error; this one leaves without a request."""


class TeacherCalls:
    """The requests of one collection: what they used, how often they were retried, the run's fatal error."""

    def __init__(self, teacher: TeacherConfig, client: TeacherClient, limiter: RateLimiter, budget: Budget) -> None:
        self.teacher = teacher
        self.client = client
        self.limiter = limiter
        self.budget = budget
        self.usage, self.retries = Usage(), Counter()
        self.requests = 0
        self.fatal: TeacherFatalError | None = None
        self._probe_task: asyncio.Task | None = None
        self._probe_done = asyncio.Event()

    def _fail_run(self, error: TeacherFatalError) -> TeacherFatalError:
        self.fatal = error
        self._probe_done.set()
        return error

    def _backoff(self, attempt: int) -> float:
        # Full jitter: workers that failed together do not retry together.
        return random.uniform(0, min(self.teacher.retry_max_s, self.teacher.retry_base_s * 2**attempt))

    async def _wait_for_probe(self) -> bool:
        """Wait while another worker's probe is out; True when this worker is probing."""
        if self._probe_done.is_set():
            return False
        current = asyncio.current_task()
        if self._probe_task is None:
            self._probe_task = current
        if self._probe_task is not current:
            await self._probe_done.wait()
        return not self._probe_done.is_set()

    async def call(
        self, messages: list[dict[str, str]], stop: list[str] | None, valid: Callable[[str], bool]
    ) -> Answer:
        """The teacher's answer to ``messages``, retried until ``valid`` accepts it or the retries run out."""
        teacher = self.teacher
        estimate = estimate_tokens(messages)
        try:
            for attempt in range(teacher.max_retries + 1):
                probing = await self._wait_for_probe()
                if self.fatal:
                    raise Abandoned()
                reservation = self.budget.reserve(estimate, teacher.max_tokens)
                if reservation is None:
                    raise BudgetStop()
                # Paced by what the answer will likely use, so corrections stay small and the pace even.
                paced = estimate + self._expected_completion_tokens()
                await self.limiter.acquire(paced)
                if self.fatal:
                    self.budget.settle(reservation)
                    raise Abandoned()
                self.requests += 1
                try:
                    answer = await self._request(messages, stop, paced, reservation)
                    # A filtered answer is final as it is: the corpus rejects it by its finish reason.
                    if answer.finish_reason != CONTENT_FILTER and not valid(answer.text):
                        raise RetryableError(MALFORMED, "the answer is not in the expected format: "
                                                        f"{self.client.redact(answer.text[:200])!r}")
                    return answer
                except RetryableError as error:
                    if error.reached:
                        self._probe_done.set()
                    self.retries[error.kind] += 1
                    if attempt == teacher.max_retries:
                        if probing and not self._probe_done.is_set():
                            raise self._fail_run(self.client.unreachable(error, attempt + 1)) from None
                        raise TerminalError(error.kind, f"{error} (after {attempt + 1} attempts)") from None
                    await asyncio.sleep(error.retry_after if error.retry_after is not None else self._backoff(attempt))
            raise AssertionError("unreachable: the last attempt returns or raises")
        except LimitStoreError as error:  # without its shared limits, no process may go on sending
            raise self._fail_run(error) from None
        finally:
            if self._probe_task is asyncio.current_task():
                self._probe_done.set()

    def _expected_completion_tokens(self) -> int:
        """The mean completion of the answers so far; ``max_tokens`` before the first."""
        calls = sum(self.usage.calls.values())
        return round(sum(self.usage.completion_tokens.values()) / calls) if calls else self.teacher.max_tokens

    async def _request(self, messages: list[dict[str, str]], stop: list[str] | None, paced: int,
                       reservation: Reservation) -> Answer:
        request = self.limiter.begin_request()
        try:
            completion = await self.client.request(messages, stop)
        except TeacherFatalError as error:
            self.budget.settle(reservation)
            raise self._fail_run(error) from None
        except RetryableError as error:
            self.budget.settle(reservation)
            if error.kind == RATE_LIMITED:
                self.limiter.pause(error.retry_after if error.retry_after is not None else self._backoff(0))
            raise
        except TerminalError:
            self.budget.settle(reservation)
            raise
        finally:
            # In flight besides this one, in every process: requests the provider may not have counted yet.
            others = self.limiter.end_request(request)
        self.budget.settle(reservation, completion.prompt_tokens, completion.completion_tokens)
        self.limiter.settle(paced, completion.prompt_tokens + completion.completion_tokens)
        self.limiter.observe(completion.headers, others, (others + 1) * paced)
        self.usage.add(completion.model, completion.prompt_tokens, completion.completion_tokens)
        return self.client.answer(completion)
