"""Self-chat collection: the teacher writes a Baize conversation for every seed.

Built to run Baize's ~160,000 teacher calls unattended:

* **concurrent** — a fixed pool of workers on the ``openai`` async client keeps
  ``max_concurrency`` conversations in flight;
* **paced** — a client-side limiter keeps requests and tokens per minute under the
  endpoint's limits and pauses on ``Retry-After`` and exhausted ``x-ratelimit-*`` headers,
  one limit per endpoint and key shared by every process (:mod:`.shared_limits`);
* **retried** — 429, 5xx, timeouts, dropped connections and malformed answers are retried
  with exponential backoff and full jitter, honoring ``Retry-After``; an answer in another
  format at most ``format_retries`` times; errors no retry can fix stop at once: a bad
  key, a forbidden or missing model, an exhausted quota (the whole run), a prompt too long
  for the context, an oversized answer, a completion budget spent before any text (that
  seed). A field the endpoint refuses (a reasoning model's ``max_tokens``) is adapted once
  for the whole run (:mod:`.request_profile`). The first
  request goes alone, retries included, so a bad key costs one request, not one per
  worker, and an endpoint that cannot be reached stops the run before any other seed is
  tried (:mod:`.calls`); how each outcome of a request is classified is :mod:`.client`'s job;
* **durable** — every finished conversation is committed to the source's cache as it
  arrives, keyed by a hash of the seed and every generation input, so a killed run loses
  only the requests in flight and a rerun asks only for what is missing;
* **budgeted** — tokens and dollars are counted per call; a per-run cap, reserved in a
  ledger every process of the run shares, stops new requests cleanly and the seeds left
  over become ``budget_exhausted`` rows;
* **modes** — Baize v1 (one call writes the transcript) and v1.5 (turn by turn), both
  guarded against loops (rounds, tokens, repeated turns), or one answer per row, the
  teacher as judge (:mod:`.modes`);
* **one process** — :mod:`.parallel` runs several when one core is the limit; :mod:`.batch`
  asks through the Batch API instead.

Every seed ends as exactly one row: a transcript, or a failure kind and message.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any, Callable

import openai
import pandas as pd

from ..config.pipeline import TeacherConfig
from .cache import TranscriptCache, cache_key
from .calls import Abandoned, TeacherCalls
from .client import TeacherClient
from .errors import BUDGET_EXHAUSTED, BudgetStop, TeacherFatalError, TerminalError
from .limiter import RateLimiter
from .modes import Writer, self_chat_writer
from .pricing import Budget, dollars
from .request_profile import unsent_settings
from .results import (
    CollectionResult,
    cached_row,
    collection_stats,
    generation_inputs,
    history_key,
    paid_fields,
    seed_row,
)
from .shared_limits import LimitStore, MemoryLimitStore, limit_key
from .transcript import transcripts_frame


class _Collector:
    """A pool of ``max_concurrency`` workers, each writing one seed's conversation at a time."""

    def __init__(
        self,
        seeds: pd.DataFrame,
        teacher: TeacherConfig,
        calls: TeacherCalls,
        cache: TranscriptCache | None,
        budget: Budget,
        log: Callable[[str], None],
        progress_every_s: float,
        writer: Writer | None = None,
    ) -> None:
        self.seeds = seeds.to_dict("records")
        self.writer = writer or self_chat_writer(teacher)
        self.teacher = teacher
        self.cache = cache
        self.budget = budget
        self.log = log
        self.progress_every_s = progress_every_s
        self.inputs = generation_inputs(teacher, self.writer)
        self.calls = calls
        self.failures: Counter = Counter()
        self.rows: list[dict] = []
        self.cached = 0
        self._started = time.monotonic()

    # -- one conversation

    def _failure_row(self, row: dict[str, Any], kind: str, message: str,
                     paid: tuple[int, int, int] = (0, 0, 0)) -> dict[str, Any]:
        self.failures[kind] += 1
        return {**row, **paid_fields(paid, self.budget.price), "failure_kind": kind, "failure_message": message}

    async def _conversation(self, seed: dict, key: str) -> dict[str, Any]:
        row = seed_row(seed, key, self.inputs, self.teacher)
        if self.budget.exhausted:
            return self._failure_row(row, BUDGET_EXHAUSTED, self._budget_message())
        try:
            made = await self.writer.write(self.calls.call, seed["seed"], self.teacher)
        except BudgetStop as stop:
            return self._failure_row(row, BUDGET_EXHAUSTED, self._budget_message(), stop.paid)
        except TerminalError as error:
            return self._failure_row(row, error.kind, str(error), error.paid)
        made["total_tokens"] = made["prompt_tokens"] + made["completion_tokens"]
        made["dollars"] = dollars(self.budget.price, made["prompt_tokens"], made["completion_tokens"])
        row.update(made)
        if self.cache is not None:
            self.cache.put(key, row["seed_id"], row)
        return row

    def _budget_message(self) -> str:
        settings = self.budget.config.model_dump(exclude_none=True)
        return f"the run's budget ({settings}) was reached after {self.budget.run_spending()}"

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
            f"{self.calls.requests} requests, failures {dict(self.failures) or 'none'}, "
            f"retries {dict(self.calls.retries) or 'none'}"
        )

    async def _report(self) -> None:
        last_log = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, self.progress_every_s))
            if time.monotonic() - last_log >= self.progress_every_s:
                last_log = time.monotonic()
                self.log(self.progress_line())

    async def run(self) -> None:
        for line in unsent_settings(self.teacher, self.calls.profile, self.teacher.section):
            self.calls.warn(line)
        keys = [cache_key(seed["seed"], self.inputs) for seed in self.seeds]
        stored = self.cache.get_many(keys) if self.cache is not None else {}
        queue: asyncio.Queue[tuple[dict, str]] = asyncio.Queue()
        for seed, key in zip(self.seeds, keys):
            if key in stored:
                self.cached += 1
                self.rows.append(cached_row(stored[key], seed_row(seed, key, self.inputs, self.teacher)))
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
        except (Abandoned, TeacherFatalError):
            pass  # raised below, once every worker has stopped
        finally:
            for task in [*workers, reporter]:
                task.cancel()
            await asyncio.gather(*workers, reporter, return_exceptions=True)
        self.log(self.progress_line())
        if self.cache is not None:
            stats = collection_stats(self.rows, self.calls.usage, self.calls.requests, self.writer)
            self.cache.record_collection(history_key(self.teacher, self.writer), stats)
        if self.calls.fatal:
            raise self.calls.fatal


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
    warn: Callable[[str], None] | None = None,
) -> CollectionResult:
    """Ask the teacher for one self-chat conversation per seed row (or, with ``writer``, its kind of answer).

    ``base_url`` None means the ``openai`` client's own default (``OPENAI_BASE_URL``
    or OpenAI itself). With a ``cache``, conversations it holds are reused and new ones
    are stored as they arrive. ``limit_store`` holds the rate limit of the endpoint and
    key, the budget's ``ledger`` (a Dagster run's id) and the run's request profile,
    shared with every other process that uses it; None keeps them within this call. The
    limit and the ledger are used only when a limit or a cap is configured, or, for the
    ledger, to record the spending once at the end. ``warn`` (``log`` when None) gets the
    lines that say a setting is not sent or a refused field was adapted.
    """

    async def run() -> _Collector:
        # Retries are ours (they feed the limiter and the failure counts), so the client's are off.
        # Connecting times out before the request's deadline, so an endpoint that never accepts a
        # connection is told apart from one that is slow to answer.
        timeout = openai.Timeout(teacher.timeout_s, connect=teacher.timeout_s * 0.9)
        async with openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0) as client:
            limits = teacher.rate_limit_for(str(client.base_url))
            limited = limits.requests_per_minute is not None or limits.tokens_per_minute is not None
            endpoint = limit_key(str(client.base_url), api_key)
            # Without a limit nothing needs sharing: pauses stay in this process, at no I/O per request.
            limiter = RateLimiter(limits, shared if limited else MemoryLimitStore(), endpoint,
                                  stale_after_s=2 * teacher.timeout_s)
            calls = TeacherCalls(teacher, TeacherClient(client, teacher, api_key), limiter, budget, shared,
                                 f"{budget.ledger}:{endpoint}:{teacher.model}", warn or log)
            collector = _Collector(seeds, teacher, calls, cache, budget, log,
                                   progress_every_s or teacher.progress_every_s, writer)
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
        usage=collector.calls.usage,
        failures=collector.failures,
        retries=collector.calls.retries,
        seconds=time.monotonic() - started,
        requests=collector.calls.requests,
        cached=collector.cached,
        spent_tokens=collector.budget.spent_tokens,
        spent_dollars=collector.budget.spent_dollars if collector.budget.price is not None else None,
        partial=collector.failures[BUDGET_EXHAUSTED] > 0,
        adaptations=collector.calls.adaptations,
        rejected_tokens=collector.calls.rejected_tokens,
        rejected_dollars=collector.calls.rejected_dollars,
    )
