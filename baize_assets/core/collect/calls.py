"""One chat request to the teacher, as a worker of the collector sends it: paced, budgeted, retried, adapted.

Every attempt reserves its worst case in the run's budget and waits for the rate
limiter; 429, 5xx, timeouts, dropped connections and malformed answers are retried
with exponential backoff and full jitter, honoring ``Retry-After``; how each outcome is
classified is :mod:`.client`'s job. The first request goes alone, retries included,
until the endpoint answers anything: a bad key or model then costs one request, not
one per worker, and an endpoint nobody listens on stops the run before any other seed
is tried. A field the endpoint refuses changes the run's request profile once, for every
process of the run (:mod:`.request_profile`), and the request goes again. An answer in
another format than asked is asked again at most ``format_retries`` times: each retry
costs as much as the first request, and a teacher that slipped once often slips again.
What rejected answers cost is counted per failure kind.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Callable

from ..config.pipeline import TeacherConfig
from .client import Answer, Completion, TeacherClient, Usage, estimate_tokens
from .errors import (
    CONTENT_FILTER,
    RATE_LIMITED,
    WRONG_FORMAT,
    BudgetStop,
    ParameterRejected,
    RetryableError,
    TeacherFatalError,
    TerminalError,
    backoff_s,
)
from .limiter import RateLimiter
from .pricing import Budget, Reservation, dollars
from .request_profile import adaptation, cut_at_stop, describe, starting_profile
from .shared_limits import LimitStore, LimitStoreError

# A request adapted this often and still refused is refused for good.
_MAX_ADAPTATIONS_PER_REQUEST = 8


class Abandoned(Exception):
    """Another worker hit a fatal error; this one leaves without a request."""


class _WrongFormat(Exception):
    """A paid-for answer that is not in the format asked for."""


class TeacherCalls:
    """The requests of one collection: what they used, how often they were retried, the run's fatal error.

    ``profiles`` and ``profile_key`` are where the run's request profile is shared (the
    limit store, under the run's ledger, endpoint and model); ``warn`` gets one line per
    adaptation.
    """

    def __init__(self, teacher: TeacherConfig, client: TeacherClient, limiter: RateLimiter, budget: Budget,
                 profiles: LimitStore, profile_key: str, warn: Callable[[str], None]) -> None:
        self.teacher = teacher
        self.client = client
        self.limiter = limiter
        self.budget = budget
        self.usage, self.retries = Usage(), Counter()
        self.requests = 0
        self.adaptations = 0  # fields this process adapted (another process's count is its own)
        self.rejected_tokens, self.rejected_dollars = Counter(), Counter()  # paid for, not used; by failure kind
        self.fatal: TeacherFatalError | None = None
        self.profiles, self.profile_key, self.warn = profiles, profile_key, warn
        self.profile = starting_profile(teacher.model).adapted(profiles.adaptations(profile_key))
        self._probe_task: asyncio.Task | None = None
        self._probe_done = asyncio.Event()

    def _fail_run(self, error: TeacherFatalError) -> TeacherFatalError:
        self.fatal = error
        self._probe_done.set()
        return error

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

    # long: one request's whole retry loop; each outcome's handling is a few lines beside the others
    async def call(self, messages: list[dict[str, str]], stop: list[str] | None, valid: Callable[[str], bool],
                   response_format: dict[str, Any] | None = None, row_fields: dict[str, Any] | None = None) -> Answer:
        """The teacher's answer to ``messages``, retried until ``valid`` accepts it or the retries run out."""
        teacher = self.teacher
        estimate = estimate_tokens(messages)
        attempt = slips = adapted = 0
        paid = [0, 0, 0]  # what this call's rejected answers cost: prompt, completion, reasoning tokens
        try:
            while True:
                probing = await self._wait_for_probe()
                if self.fatal:
                    raise Abandoned()
                try:
                    completion = await self._send(messages, stop, response_format, row_fields, estimate)
                    return self._answer(completion, stop, valid, paid)
                except (TerminalError, BudgetStop) as failure:
                    failure.charged(*paid)
                    raise
                except ParameterRejected as rejected:
                    adapted += 1
                    self._adapt(rejected, adapted)
                except _WrongFormat as slip:
                    slips += 1
                    if slips > teacher.format_retries:
                        raise TerminalError(WRONG_FORMAT, f"{slip} (after {slips} answers in another format; "
                                                          f"{teacher.section}.format_retries is "
                                                          f"{teacher.format_retries})").charged(*paid) from None
                    self.retries[WRONG_FORMAT] += 1
                except RetryableError as error:
                    if error.reached:
                        self._probe_done.set()
                    self.retries[error.kind] += 1
                    if attempt == teacher.max_retries:
                        if probing and not self._probe_done.is_set():
                            raise self._fail_run(self.client.unreachable(error, attempt + 1)) from None
                        raise TerminalError(error.kind, f"{error} (after {attempt + 1} attempts)").charged(
                            *paid) from None
                    await asyncio.sleep(error.retry_after if error.retry_after is not None
                                        else backoff_s(attempt, teacher.retry_base_s, teacher.retry_max_s))
                    attempt += 1
        except LimitStoreError as error:  # without its shared limits, no process may go on sending
            raise self._fail_run(error) from None
        finally:
            if self._probe_task is asyncio.current_task():
                self._probe_done.set()

    async def _send(self, messages: list[dict[str, str]], stop: list[str] | None,
                    response_format: dict[str, Any] | None, row_fields: dict[str, Any] | None,
                    estimate: int) -> Completion:
        """One request, reserved in the budget and paced by the limiter; the completion it was paid for."""
        reservation = self.budget.reserve(estimate, self.teacher.max_tokens)
        if reservation is None:
            raise BudgetStop()
        # Paced by what the answer will likely use, so corrections stay small and the pace even.
        paced = estimate + self._expected_completion_tokens()
        await self.limiter.acquire(paced)
        if self.fatal:
            self.budget.settle(reservation)
            raise Abandoned()
        self.requests += 1
        return await self._request(messages, stop, response_format, row_fields, paced, reservation)

    def _answer(self, completion: Completion, stop: list[str] | None, valid: Callable[[str], bool],
                paid: list[int]) -> Answer:
        """The usable answer a completion holds; what it cost is counted against its kind, and added to the
        call's ``paid``, when it holds none."""
        try:
            answer = self.client.answer(completion)
            if self.profile.stops_on_client:
                answer.text, cut = cut_at_stop(answer.text, stop)
                answer.finish_reason = "stop" if cut else answer.finish_reason
            # A filtered answer is final as it is: the corpus rejects it by its finish reason.
            if answer.finish_reason != CONTENT_FILTER and not valid(answer.text):
                raise _WrongFormat("the answer is not in the expected format: "
                                   f"{self.client.redact(answer.text[:200])!r}")
            return answer
        except (RetryableError, TerminalError) as error:
            self._count_rejected(error.kind, completion, paid)
            raise
        except _WrongFormat:
            self._count_rejected(WRONG_FORMAT, completion, paid)
            raise

    def _count_rejected(self, kind: str, completion: Completion, paid: list[int]) -> None:
        for index, tokens in enumerate((completion.prompt_tokens, completion.completion_tokens,
                                        completion.reasoning_tokens)):
            paid[index] += tokens
        self.rejected_tokens[kind] += completion.prompt_tokens + completion.completion_tokens
        self.rejected_dollars[kind] += dollars(self.budget.price, completion.prompt_tokens,
                                               completion.completion_tokens) or 0.0

    def _adapt(self, rejected: ParameterRejected, adapted: int) -> None:
        """Change the run's profile so the refused field is no longer sent, or stop the run when it cannot."""
        stored = self.profiles.adaptations(self.profile_key)
        current = starting_profile(self.teacher.model).adapted(stored)
        if not current.sends(rejected.param):
            self.profile = current  # another process of the run adapted already
            return
        action = adaptation(rejected.param, current, stored)
        if action is None or adapted > _MAX_ADAPTATIONS_PER_REQUEST:
            raise self._fail_run(TeacherFatalError(
                f"the {self.teacher.section} endpoint rejected the request (HTTP 400) and no change of its fields "
                f"helps: {rejected}"))
        if self.profiles.add_adaptation(self.profile_key, rejected.param, action):
            self.adaptations += 1
            change = describe(rejected.param, action, current)
            self.warn(f"the {self.teacher.section} endpoint refused the field '{rejected.param}' for model "
                      f"'{self.teacher.model}' ({rejected}); from now on this run {change}")
        self.profile = starting_profile(self.teacher.model).adapted(self.profiles.adaptations(self.profile_key))

    def _expected_completion_tokens(self) -> int:
        """The mean completion of the answers so far; ``max_tokens`` before the first."""
        calls = sum(self.usage.calls.values())
        return round(sum(self.usage.completion_tokens.values()) / calls) if calls else self.teacher.max_tokens

    async def _request(self, messages: list[dict[str, str]], stop: list[str] | None,
                       response_format: dict[str, Any] | None, row_fields: dict[str, Any] | None, paced: int,
                       reservation: Reservation) -> Completion:
        request = self.limiter.begin_request()
        try:
            completion = await self.client.request(messages, stop, self.profile, response_format, row_fields)
        except TeacherFatalError as error:
            self.budget.settle(reservation)
            raise self._fail_run(error) from None
        except RetryableError as error:
            self.budget.settle(reservation)
            if error.kind == RATE_LIMITED:
                self.limiter.pause(error.retry_after if error.retry_after is not None
                                   else backoff_s(0, self.teacher.retry_base_s, self.teacher.retry_max_s))
            raise
        except (TerminalError, ParameterRejected):
            self.budget.settle(reservation)
            raise
        finally:
            # In flight besides this one, in every process: requests the provider may not have counted yet.
            others = self.limiter.end_request(request)
        self.budget.settle(reservation, completion.prompt_tokens, completion.completion_tokens)
        self.limiter.settle(paced, completion.prompt_tokens + completion.completion_tokens)
        self.limiter.observe(completion.headers, others, (others + 1) * paced)
        self.usage.add(completion.model, completion.prompt_tokens, completion.completion_tokens,
                       completion.reasoning_tokens)
        return completion
