"""Self-chat collection: the teacher writes a Baize conversation for every seed.

Built to run Baize's ~160,000 teacher calls unattended:

* **concurrent** — a fixed pool of workers on the ``openai`` async client keeps
  ``max_concurrency`` conversations in flight;
* **paced** — a client-side limiter keeps requests and tokens per minute under the
  endpoint's limits and pauses on ``Retry-After`` and exhausted ``x-ratelimit-*`` headers,
  one limit per endpoint and key shared by every process (:mod:`.shared_limits`);
* **retried** — 429, 5xx, timeouts, dropped connections and malformed answers are retried
  with exponential backoff and full jitter, honoring ``Retry-After``; errors no retry can
  fix stop at once: a bad key, a forbidden or missing model, an exhausted quota (the whole
  run), a prompt too long for the context, an oversized answer (that seed). The first
  request goes alone, retries included, so a bad key costs one request, not one per
  worker, and an endpoint that cannot be reached stops the run before any other seed is
  tried. How each outcome of a request is classified is :mod:`.teacher_client`'s job;
* **durable** — every finished conversation is committed to the source's cache as it
  arrives, keyed by a hash of the seed and every generation input, so a killed run loses
  only the requests in flight and a rerun asks only for what is missing;
* **budgeted** — tokens and dollars are counted per call; a per-run cap, reserved in a
  ledger every process of the run shares, stops new requests cleanly and the seeds left
  over become ``budget_exhausted`` rows;
* **modes** — Baize v1 (one call writes the transcript) and v1.5 (turn by turn), both
  guarded against loops (rounds, tokens, repeated turns), or one answer per row, the
  teacher as judge (:mod:`.selfchat_modes`);
* **one process** — :mod:`.parallel_collect` runs several when one core is the limit.

Every seed ends as exactly one row: a transcript, or a failure kind and message.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import openai
import pandas as pd

from ..config.pipeline import TeacherConfig
from .cache import TranscriptCache, cache_key
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
from .modes import Writer, self_chat_writer
from .pricing import Budget, Reservation, dollars
from .shared_limits import LimitStore, LimitStoreError, MemoryLimitStore, limit_key
from .transcript import transcripts_frame

# The failure kind of a seed the run's budget left unasked (the others: teacher_client).
BUDGET_EXHAUSTED = "budget_exhausted"


class _BudgetStop(Exception):
    pass


class _Abandoned(Exception):
    """Another worker hit a fatal error; this one leaves without a request."""


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
    return inputs


class _Collector:
    def __init__(
        self,
        seeds: pd.DataFrame,
        teacher: TeacherConfig,
        client: TeacherClient,
        cache: TranscriptCache | None,
        limiter: RateLimiter,
        budget: Budget,
        log: Callable[[str], None],
        progress_every_s: float,
        writer: Writer | None = None,
    ) -> None:
        self.seeds = seeds.to_dict("records")
        self.writer = writer or self_chat_writer(teacher)
        self.teacher = teacher
        self.client = client
        self.cache = cache
        self.limiter = limiter
        self.budget = budget
        self.log = log
        self.progress_every_s = progress_every_s
        self.inputs = generation_inputs(teacher, self.writer)
        self.usage, self.failures, self.retries = Usage(), Counter(), Counter()
        self.rows: list[dict] = []
        self.requests = 0
        self.cached = 0
        self.fatal: TeacherFatalError | None = None
        # The first call goes alone until the endpoint answers anything: a bad key or model
        # then costs one request, and an endpoint nobody listens on stops the run.
        self._probe_task: asyncio.Task | None = None
        self._probe_done = asyncio.Event()
        self._started = time.monotonic()

    # -- one request, with retries

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

    async def _call(self, messages: list[dict[str, str]], stop: list[str] | None,
                    valid: Callable[[str], bool]) -> Answer:
        teacher = self.teacher
        estimate = estimate_tokens(messages)
        try:
            for attempt in range(teacher.max_retries + 1):
                probing = await self._wait_for_probe()
                if self.fatal:
                    raise _Abandoned()
                reservation = self.budget.reserve(estimate, teacher.max_tokens)
                if reservation is None:
                    raise _BudgetStop()
                # Paced by what the answer will likely use, so corrections stay small and the pace even.
                paced = estimate + self._expected_completion_tokens()
                await self.limiter.acquire(paced)
                if self.fatal:
                    self.budget.settle(reservation)
                    raise _Abandoned()
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

    # -- one conversation

    def _base_row(self, seed: dict, key: str) -> dict[str, Any]:
        return {
            "seed_id": seed["seed_id"], "seed": seed["seed"], "source": seed["source"], "shard": int(seed["shard"]),
            "prompt_version": self.inputs["prompt_version"], "model": self.teacher.model,
            "temperature": self.teacher.temperature, "max_tokens": self.teacher.max_tokens,
            "generation_mode": self.writer.mode, "cached": False, "cache_key": key,
        }

    def _failure_row(self, row: dict[str, Any], kind: str, message: str) -> dict[str, Any]:
        self.failures[kind] += 1
        return {**row, "failure_kind": kind, "failure_message": message}

    async def _conversation(self, seed: dict, key: str) -> dict[str, Any]:
        row = self._base_row(seed, key)
        if self.budget.exhausted:
            return self._failure_row(row, BUDGET_EXHAUSTED, self._budget_message())
        try:
            made = await self.writer.write(self._call, seed["seed"], self.teacher)
        except _BudgetStop:
            return self._failure_row(row, BUDGET_EXHAUSTED, self._budget_message())
        except TerminalError as error:
            return self._failure_row(row, error.kind, str(error))
        made["total_tokens"] = made["prompt_tokens"] + made["completion_tokens"]
        made["dollars"] = dollars(self.budget.price, made["prompt_tokens"], made["completion_tokens"])
        row.update(made)
        if self.cache is not None:
            self.cache.put(key, row["seed_id"], row)
        return row

    def _budget_message(self) -> str:
        spent = f"{self.budget.elsewhere_tokens + self.budget.spent_tokens} tokens"
        if self.budget.price is not None:
            spent += f", ${self.budget.elsewhere_dollars + self.budget.spent_dollars:.4f}"
        return f"the run's budget ({self.budget.config.model_dump(exclude_none=True)}) was reached after {spent}"

    # -- the run

    def progress_line(self) -> str:
        done, total = len(self.rows), len(self.seeds)
        elapsed = time.monotonic() - self._started
        fresh = done - self.cached
        rate = fresh / elapsed if elapsed > 0 else 0.0
        eta = f"{(total - done) / rate:.0f} s" if rate > 0 else "unknown"
        spent = f"{self.budget.spent_tokens} tokens"
        if self.budget.price is not None:
            spent += f", ${self.budget.spent_dollars:.4f}"
        return (
            f"{self.writer.progress.format(done=done, total=total)} ({self.cached} cached), {rate:.1f}/s, ETA {eta}, "
            f"{spent}, "
            f"{self.requests} requests, failures {dict(self.failures) or 'none'}, "
            f"retries {dict(self.retries) or 'none'}"
        )

    async def _report(self) -> None:
        last_log = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, self.progress_every_s))
            if time.monotonic() - last_log >= self.progress_every_s:
                last_log = time.monotonic()
                self.log(self.progress_line())

    async def run(self) -> None:
        keys = [cache_key(seed["seed"], self.inputs) for seed in self.seeds]
        stored = self.cache.get_many(keys) if self.cache is not None else {}
        queue: asyncio.Queue[tuple[dict, str]] = asyncio.Queue()
        for seed, key in zip(self.seeds, keys):
            if key in stored:
                self.cached += 1
                self.rows.append({**stored[key], **self._base_row(seed, key), "cached": True,
                                  "prompt_version": stored[key]["prompt_version"], "model": stored[key]["model"]})
            else:
                queue.put_nowait((seed, key))

        async def worker() -> None:
            while not queue.empty():
                seed, key = queue.get_nowait()
                self.rows.append(await self._conversation(seed, key))

        reporter = asyncio.create_task(self._report())
        workers = [asyncio.create_task(worker()) for _ in range(min(self.teacher.max_concurrency, queue.qsize()))]
        try:
            await asyncio.gather(*workers)
        except (_Abandoned, TeacherFatalError):
            pass  # raised below, once every worker has stopped
        finally:
            for task in [*workers, reporter]:
                task.cancel()
            await asyncio.gather(*workers, reporter, return_exceptions=True)
        self.log(self.progress_line())
        if self.fatal:
            raise self.fatal


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed: the client's own work per call is the bottleneck at
    high concurrency, and uvloop's event loop takes about a sixth of it off."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def collect_transcripts(
    seeds: pd.DataFrame,
    teacher: TeacherConfig,
    api_key: str,
    base_url: str | None = None,
    log: Callable[[str], None] = print,
    progress_every_s: float | None = None,
    cache: TranscriptCache | None = None,
    limit_store: LimitStore | None = None,
    ledger: str | None = None,
    writer: Writer | None = None,
) -> CollectionResult:
    """Ask the teacher for one self-chat conversation per seed row (or, with ``writer``, its kind of answer).

    ``base_url`` None means the ``openai`` client's own default (``OPENAI_BASE_URL``
    or OpenAI itself). With a ``cache``, conversations it holds are reused and new ones
    are stored as they arrive. ``limit_store`` holds the rate limit of the endpoint and
    key and the budget's ``ledger`` (a Dagster run's id), shared with every other process
    that uses it; None keeps both within this call. Either is used only when a limit or a
    cap is configured, or, for the ledger, to record the spending once at the end.
    """

    async def run() -> _Collector:
        # Retries are ours (they feed the limiter and the failure counts), so the client's are off.
        # Connecting times out before the request's deadline, so an endpoint that never accepts a
        # connection is told apart from one that is slow to answer.
        timeout = openai.Timeout(teacher.timeout_s, connect=teacher.timeout_s * 0.9)
        async with openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0) as client:
            limits = teacher.rate_limit_for(str(client.base_url))
            limited = limits.requests_per_minute is not None or limits.tokens_per_minute is not None
            # Without a limit nothing needs sharing: pauses stay in this process, at no I/O per request.
            limiter = RateLimiter(limits, shared if limited else MemoryLimitStore(),
                                  limit_key(str(client.base_url), api_key), stale_after_s=2 * teacher.timeout_s)
            collector = _Collector(
                seeds, teacher, TeacherClient(client, teacher, api_key), cache, limiter, budget,
                log, progress_every_s or teacher.progress_every_s, writer,
            )
            try:
                await collector.run()
            finally:
                budget.close()
            return collector

    shared = limit_store if limit_store is not None else MemoryLimitStore()
    budget = Budget(teacher.budget, teacher.prices.get(teacher.model), shared, ledger or f"collection-{uuid.uuid4()}")

    started = time.monotonic()
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        collector = runner.run(run())
    return CollectionResult(
        transcripts=transcripts_frame(collector.rows),
        usage=collector.usage,
        failures=collector.failures,
        retries=collector.retries,
        seconds=time.monotonic() - started,
        requests=collector.requests,
        cached=collector.cached,
        spent_tokens=collector.budget.spent_tokens,
        spent_dollars=collector.budget.spent_dollars if collector.budget.price is not None else None,
        partial=collector.failures[BUDGET_EXHAUSTED] > 0,
    )
