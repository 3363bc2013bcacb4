"""Self-chat collection through OpenAI's Batch API (``teacher.api: batch``; Baize v1 only).

The shard's requests for seeds not in the cache go out as JSONL files (one line a seed,
``custom_id`` = the conversation's cache key), each uploaded with ``purpose="batch"`` and
run as a batch on ``/v1/chat/completions``. Then:

* **within limits** — batches of at most ``teacher.batch.max_requests_per_batch`` requests
  and ``max_bytes_per_batch`` bytes, each waiting while it would take the model's estimated
  enqueued prompt tokens over the limit (:mod:`.batch_plan`); a batch failed for the
  enqueued tokens goes again after a wait, one failed for a per-batch limit stops the run;
* **durable** — each batch id is written to the source's transcript cache file the moment
  the batch exists, so a killed or restarted run waits on the same batches instead of
  submitting (and paying for) them again; each line's conversation goes to the same cache
  as chat mode's, so a rerun of a finished shard makes no request at all;
* **checked** — every output line is mapped back to its seed by ``custom_id`` and its
  body classified by the same checks as a chat answer (:mod:`.batch_lines`); missing,
  duplicated and unknown ``custom_id`` lines are counted, never turned into rows;
* **retried** — failed lines, and the unfinished seeds of an expired, cancelled or failed
  batch, go into a follow-up batch as soon as their batch ends, up to ``max_retries`` times
  (an answer in another format up to ``format_retries`` times), then become failure rows;
* **shaped** — each line's body follows the model's request profile (:mod:`.request_profile`:
  a reasoning model's ``max_completion_tokens``, no ``temperature`` or ``stop``), with
  ``teacher.extra_body``;
* **budgeted** — each request's worst case is reserved before its batch is submitted, at
  batch prices (``teacher.batch``); seeds that do not fit become ``budget_exhausted`` rows.

Every seed ends as one row, as in chat mode (:mod:`.collector`); batches are recorded in :mod:`.batch_jobs`.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import openai
import pandas as pd

from ..config.pipeline import ModelPrice, TeacherConfig
from .batch_jobs import BatchJobs
from .batch_lines import LINE_PROBLEMS, TOKEN_LIMIT_FAILURE, first_lines, line_completion, unfinished_reason
from .batch_plan import REQUEST_TOO_LARGE, BatchQueue, BatchRequest, SplitLimits, batch_request
from .cache import TranscriptCache, cache_key
from .client import Completion, TeacherClient, Usage, estimate_tokens
from .errors import BUDGET_EXHAUSTED, CONTENT_FILTER, WRONG_FORMAT, RetryableError, TeacherFatalError, TerminalError
from .modes import Writer, self_chat_writer
from .pricing import Budget, Reservation, dollars
from .request_profile import request_fields, starting_profile
from .results import (
    CollectionResult,
    cached_row,
    collection_stats,
    generation_inputs,
    history_key,
    paid_fields,
    seed_row,
)
from .shared_limits import LimitStore, MemoryLimitStore
from .transcript import transcripts_frame

CHAT_ENDPOINT = "/v1/chat/completions"
FINISHED_STATUSES = {"completed", "failed", "expired", "cancelled"}
Waiting = dict[str, tuple[set[str], set[str]]]  # batch id -> (its seeds still to collect, all its requests)


def batch_price(teacher: TeacherConfig) -> ModelPrice | None:
    """The model's batch price: its own under ``teacher.batch.prices``, else its price times the factor."""
    if teacher.model in teacher.batch.prices:
        return teacher.batch.prices[teacher.model]
    price = teacher.prices.get(teacher.model)
    if price is None:
        return None
    factor = teacher.batch.price_factor
    return ModelPrice(input_per_million=price.input_per_million * factor,
                      output_per_million=price.output_per_million * factor)


@dataclass
class BatchCollectionResult(CollectionResult):
    batch_ids: list[str] = field(default_factory=list)  # every batch waited on, resumed ones included
    resumed_batches: int = 0  # batches submitted by an earlier run and collected by this one
    line_problems: Counter = field(default_factory=Counter)  # missing, duplicated, unknown custom_ids

    def batch_metadata(self) -> dict[str, Any]:
        return {"batch_ids": ", ".join(self.batch_ids), "resumed_batches": self.resumed_batches,
                "batch_line_problems": {kind: self.line_problems[kind] for kind in LINE_PROBLEMS}}


@dataclass
class _Failure:
    kind: str
    message: str


class _BatchCollector:
    def __init__(self, seeds: pd.DataFrame, teacher: TeacherConfig, client: openai.OpenAI, checker: TeacherClient,
                 cache: TranscriptCache | None, jobs: BatchJobs, log: Callable[[str], None], budget: Budget,
                 writer: Writer) -> None:
        if writer.one_call is None:
            raise ValueError(f"the Batch API sends one request per row; mode {writer.mode!r} asks turn by turn")
        self.seeds = seeds.to_dict("records")
        self.teacher, self.client, self.checker, self.cache, self.jobs = teacher, client, checker, cache, jobs
        self.log, self.budget, self.writer, self.one_call = log, budget, writer, writer.one_call
        self.inputs = generation_inputs(teacher, writer)
        self.usage, self.failures, self.retries, self.line_problems = Usage(), Counter(), Counter(), Counter()
        self.requests = self.cached = self.resumed = 0
        self.batch_ids: list[str] = []
        self.seed_of: dict[str, dict] = {}  # cache key -> its first seed row
        self.outcomes: dict[str, dict[str, Any] | _Failure] = {}  # cache key -> conversation or failure
        self.attempts: Counter = Counter()
        self.format_slips: Counter = Counter()
        self.rejected_tokens, self.rejected_dollars = Counter(), Counter()
        self.paid: dict[str, tuple[int, int, int]] = {}  # per cache key: what its rejected answers cost
        self.reservations: dict[str, Reservation] = {}
        self.profile = starting_profile(teacher.model)
        self.queue = BatchQueue(SplitLimits.of(teacher.batch, teacher.model), self._line)

    # -- the API, with its refusals classified

    def _api(self, what: str, call: Callable[[], Any], not_found_raises: bool = False) -> Any:
        """``call()``, one request; a refusal no retry fixes stops the run (a 404 is raised as is if asked)."""
        self.requests += 1
        try:
            return call()
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise TeacherFatalError(f"the teacher endpoint rejected the API key (HTTP {exc.status_code}) while "
                                    f"{what}; check OPENAI_API_KEY") from None
        except openai.APIConnectionError as exc:
            raise TeacherFatalError(self.checker.redact(
                f"cannot reach the teacher endpoint {self.checker.endpoint} while {what}: {exc.__cause__ or exc}; "
                "check OPENAI_BASE_URL (a recorded batch is resumed by the next run)")) from None
        except openai.APIStatusError as exc:
            if isinstance(exc, openai.NotFoundError) and not_found_raises:
                raise
            raise TeacherFatalError(self.checker.redact(
                f"the teacher endpoint refused {what} (HTTP {exc.status_code}): {exc}")) from None

    # -- submitting

    def _messages(self, key: str) -> list[dict[str, str]]:
        return self.one_call.messages(self.seed_of[key]["seed"])

    def _admit(self, requests: list[BatchRequest]) -> list[str]:
        """The keys of the requests whose worst case fits the budget, reserved; the others end as
        budget_exhausted."""
        admitted = []
        for request in requests:
            reservation = self.budget.reserve(request.tokens, self.teacher.max_tokens)
            if reservation is None:
                self.outcomes[request.key] = _Failure(BUDGET_EXHAUSTED, self._budget_message())
            else:
                self.reservations[request.key] = reservation
                admitted.append(request.key)
        return admitted

    def _budget_message(self) -> str:
        spent = self.budget.run_spending() + (" at batch prices" if self.budget.price is not None else "")
        return (f"the run's budget ({self.budget.config.model_dump(exclude_none=True)}) could not hold this "
                f"request's worst case before submission, after {spent}")

    def _line(self, key: str) -> BatchRequest:
        messages = self._messages(key)
        body = request_fields(self.teacher, self.profile, messages, None, self.writer.response_format)
        return batch_request(key, CHAT_ENDPOINT, body, estimate_tokens(messages))

    def _launch(self, waiting: Waiting) -> None:
        """Submit batches from the queue while the limits leave room beside the batches in flight."""
        while self.queue:  # in flight: the estimated prompt tokens of their requests this shard knows
            requests = self.queue.next_batch(sum(self.queue.request(k).tokens for _, keys in waiting.values()
                                                 for k in keys if k in self.seed_of))
            if not requests:
                return
            admitted = set(self._admit(requests))
            if admitted:
                batch_id = self._submit([request for request in requests if request.key in admitted])
                self.attempts.update(admitted)
                waiting[batch_id] = (admitted, set(admitted))
                self.batch_ids.append(batch_id)

    def _submit(self, requests: list[BatchRequest]) -> str:
        data = b"".join(request.line for request in requests)
        upload = self._api("uploading the batch input", lambda: self.client.files.create(
            file=("self-chat-requests.jsonl", data), purpose="batch"))
        batch = self._api("creating the batch", lambda: self.client.batches.create(
            input_file_id=upload.id, endpoint=CHAT_ENDPOINT, completion_window=self.teacher.batch.completion_window,
            metadata={"purpose": "baize self-chat"}))
        # Before anything else can fail: the batch is paid for.
        self.jobs.record(batch.id, upload.id, [request.key for request in requests])
        self.log(f"batch {batch.id}: submitted {len(requests)} requests ({upload.id}, {len(data):,} bytes)")
        return batch.id

    # -- waiting and collecting

    def _poll(self, waiting: Waiting) -> tuple[bool, list[str]]:
        """Check every batch once and collect those that ended: whether any did, and the keys to ask again."""
        again: list[str] = []
        ended = False
        for batch_id in list(waiting):
            try:
                batch = self._api("checking a batch", lambda b=batch_id: self.client.batches.retrieve(b),
                                  not_found_raises=True)
            except openai.NotFoundError:
                # Gone from the endpoint (another endpoint, or its files expired): ask again.
                self.log(f"batch {batch_id}: not found at the endpoint; its requests are submitted again")
                self.jobs.mark_collected(batch_id)
                again += sorted(waiting.pop(batch_id)[0])
                ended = True
                continue
            counts = batch.request_counts
            done = f"{counts.completed}/{counts.total} done, {counts.failed} failed" if counts else "no counts yet"
            self.log(f"batch {batch_id}: {batch.status}, {done}")
            if batch.status in FINISHED_STATUSES:
                again += self._collect(batch, *waiting.pop(batch_id))
                ended = True
        return ended, again

    def _download(self, file_id: str | None) -> list[str]:
        if not file_id:
            return []
        content = self._api("downloading batch results", lambda: self.client.files.content(file_id))
        return content.content.decode("utf-8", "replace").splitlines()

    def _collect(self, batch: Any, pending: set[str], submitted: set[str]) -> list[str]:
        """Map a finished batch's lines back to their seeds; returns the keys to ask again."""
        try:
            kind, message = unfinished_reason(batch, self.teacher.batch, self.queue.limits.tokens_setting,
                                              self.checker.redact)
        except TeacherFatalError:
            self.jobs.mark_collected(batch.id)  # the rerun asks for its seeds again, in smaller batches
            raise
        texts = self._download(batch.output_file_id) + self._download(batch.error_file_id)
        lines = first_lines(texts, pending, submitted, self.line_problems)
        again = [key for key, line in lines.items() if self._settle_line(key, line)]
        unfinished = sorted(pending - lines.keys())
        if batch.status == "completed":
            self.line_problems["missing_custom_ids"] += len(unfinished)
        for key in unfinished:
            self.budget.settle(self.reservations.pop(key, Reservation(0, 0.0)))
            self.retries[kind] += 1
            self.outcomes[key] = _Failure(kind, message)
        self.jobs.mark_collected(batch.id)
        return again + unfinished

    def _settle_line(self, key: str, line: dict[str, Any]) -> bool:
        """Record one line's outcome; True when it is worth asking again."""
        reservation = self.reservations.pop(key, Reservation(0, 0.0))
        completion: Completion | None = None
        try:
            completion = line_completion(line, self.checker)
            self.budget.settle(reservation, completion.prompt_tokens, completion.completion_tokens)
            reservation = Reservation(0, 0.0)
            self.usage.add(completion.model, completion.prompt_tokens, completion.completion_tokens,
                           completion.reasoning_tokens)
            answer = self.checker.answer(completion)
            if answer.finish_reason != CONTENT_FILTER and not self.one_call.valid(answer.text):
                self.format_slips[key] += 1
                again = self.format_slips[key] <= self.teacher.format_retries
                message = f"the answer is not in the expected format: {self.checker.redact(answer.text[:200])!r}"
                raise (RetryableError if again else TerminalError)(WRONG_FORMAT, message)
        except (RetryableError, TerminalError) as exc:
            self.budget.settle(reservation)
            if completion is not None:
                self._count_rejected(key, exc.kind, completion)
            self.outcomes[key] = _Failure(exc.kind, str(exc))
            if isinstance(exc, TerminalError):
                return False
            self.retries[exc.kind] += 1
            return True
        made = {
            **self.one_call.fields(answer, self.teacher),
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
            "dollars": dollars(self.budget.price, answer.prompt_tokens, answer.completion_tokens),
        }
        self.outcomes[key] = made
        if self.cache is not None:
            seed = self.seed_of[key]
            self.cache.put(key, seed["seed_id"], {**seed_row(seed, key, self.inputs, self.teacher), **made})
        return False

    def _count_rejected(self, key: str, kind: str, completion: Completion) -> None:
        prompt, completion_tokens, reasoning = self.paid.get(key, (0, 0, 0))
        self.paid[key] = (prompt + completion.prompt_tokens, completion_tokens + completion.completion_tokens,
                          reasoning + completion.reasoning_tokens)
        self.rejected_tokens[kind] += completion.prompt_tokens + completion.completion_tokens
        self.rejected_dollars[kind] += dollars(self.budget.price, completion.prompt_tokens,
                                               completion.completion_tokens) or 0.0

    # -- rows

    def _key(self, seed: dict) -> str:
        return cache_key(seed["seed"], self.inputs)

    def run(self) -> list[dict[str, Any]]:
        keys = [self._key(seed) for seed in self.seeds]
        self.seed_of = {}
        for seed, key in zip(self.seeds, keys):
            self.seed_of.setdefault(key, seed)
        stored = self.cache.get_many(keys) if self.cache is not None else {}
        pending = [key for key in dict.fromkeys(keys) if key not in stored]
        # Batches an earlier run submitted are waited on, not submitted again: they are paid for.
        waiting = {batch_id: (submitted & set(pending), submitted)
                   for batch_id, submitted in self.jobs.uncollected(pending).items()}
        for batch_id, (keys_in_batch, _) in waiting.items():
            self.log(f"batch {batch_id}: resuming the wait on {len(keys_in_batch)} requests of an earlier run")
            self.attempts.update(keys_in_batch)
        self.resumed, self.batch_ids = len(waiting), list(waiting)
        in_flight = set().union(*(keys_in_batch for keys_in_batch, _ in waiting.values()))
        refused = self.queue.add([key for key in pending if key not in in_flight])
        self.outcomes.update((key, _Failure(REQUEST_TOO_LARGE, reason)) for key, reason in refused.items())
        self._collect_all(waiting)
        return self._rows(keys, stored)

    def _collect_all(self, waiting: Waiting) -> None:
        """Submit, wait on and collect batches until every request has its outcome."""
        held: list[tuple[float, str]] = []  # (when, key): seeds of batches failed for the model's enqueued tokens
        while True:
            now = time.monotonic()
            self.queue.add([key for when, key in held if when <= now])
            held = [(when, key) for when, key in held if when > now]
            self._launch(waiting)
            if not waiting and not held:
                return
            ended, again = self._poll(waiting)
            for key in again:
                failure = self.outcomes.get(key)
                if self.attempts[key] > self.teacher.max_retries:
                    if isinstance(failure, _Failure):
                        failure.message += f" (after {self.attempts[key]} batches)"
                elif isinstance(failure, _Failure) and failure.kind == TOKEN_LIMIT_FAILURE:
                    # Sent again once other batches had time to finish: after 1, 2, 4, ... poll intervals.
                    wait = self.teacher.batch.poll_interval_s * 2 ** (self.attempts[key] - 1)
                    held.append((time.monotonic() + wait, key))
                else:
                    self.queue.add([key])  # a follow-up: into the next batch with room
            if not (ended and self.queue):  # a batch that ended may leave room for the next at once
                time.sleep(self.teacher.batch.poll_interval_s)

    def _rows(self, keys: list[str], stored: dict[str, dict]) -> list[dict[str, Any]]:
        rows = []
        for seed, key in zip(self.seeds, keys):
            row = seed_row(seed, key, self.inputs, self.teacher)
            outcome = self.outcomes.get(key)
            if key in stored:
                self.cached += 1
                rows.append(cached_row(stored[key], row))
            elif isinstance(outcome, _Failure):
                self.failures[outcome.kind] += 1
                rows.append({**row, **paid_fields(self.paid.get(key, (0, 0, 0)), self.budget.price),
                             "failure_kind": outcome.kind, "failure_message": outcome.message})
            else:
                rows.append({**row, **outcome})
        if self.cache is not None:
            stats = collection_stats(rows, self.usage, sum(self.attempts.values()), self.writer)
            self.cache.record_collection(history_key(self.teacher, self.writer), stats)
        return rows


def collect_transcripts_batch(
    seeds: pd.DataFrame,
    teacher: TeacherConfig,
    api_key: str,
    base_url: str | None = None,
    log: Callable[[str], None] = print,
    cache: TranscriptCache | None = None,
    limit_store: LimitStore | None = None,
    ledger: str | None = None,
    writer: Writer | None = None,
) -> BatchCollectionResult:
    """Ask the teacher for one self-chat conversation per seed row (or ``writer``'s answer) through the Batch API.

    Returns what :func:`.collector.collect_transcripts` returns, with the batches' ids and
    the problems of their output lines. The budget is the ledger ``ledger`` (a Dagster
    run's id) of ``limit_store`` (one in memory when None), shared with the run's other steps.
    Progress is logged at every poll (``teacher.batch.poll_interval_s``).
    """
    started = time.monotonic()
    # The client's own retries cover 429, 5xx and dropped connections of these few requests.
    with openai.OpenAI(api_key=api_key, base_url=base_url, timeout=teacher.timeout_s,
                       max_retries=teacher.max_retries) as client:
        jobs = cache.batch_jobs() if cache is not None else BatchJobs(":memory:")
        budget = Budget(teacher.budget, batch_price(teacher), limit_store or MemoryLimitStore(),
                        ledger or f"collection-{uuid.uuid4()}")
        try:
            collector = _BatchCollector(seeds, teacher, client, TeacherClient(client, teacher, api_key), cache, jobs,
                                        log, budget, writer or self_chat_writer(teacher))
            rows = collector.run()
        finally:
            budget.close()
            jobs.close()
    return BatchCollectionResult(
        transcripts=transcripts_frame(rows), usage=collector.usage, failures=collector.failures,
        retries=collector.retries,
        seconds=time.monotonic() - started, requests=collector.requests, cached=collector.cached,
        spent_tokens=budget.spent_tokens, spent_dollars=budget.spent_dollars if budget.price is not None else None,
        partial=collector.failures[BUDGET_EXHAUSTED] > 0, rejected_tokens=collector.rejected_tokens,
        rejected_dollars=collector.rejected_dollars, batch_ids=collector.batch_ids,
        resumed_batches=collector.resumed, line_problems=collector.line_problems,
    )
