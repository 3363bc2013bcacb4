"""Self-chat collection through OpenAI's Batch API (``teacher.api: batch``; Baize v1 only).

The shard's requests for seeds not in the cache go out as one JSONL file (one line a
seed, ``custom_id`` = the conversation's cache key), uploaded with ``purpose="batch"``
and run as a batch on ``/v1/chat/completions``. Then:

* **durable** — the batch id is written to the source's transcript cache file the moment
  the batch exists, so a killed or restarted run waits on the same batch instead of
  submitting (and paying for) it again; each line's conversation goes to the same cache
  as chat mode's, so a rerun of a finished shard makes no request at all;
* **checked** — every output line is mapped back to its seed by ``custom_id`` and its
  body classified by the same checks as a chat answer (:mod:`.batch_lines`); missing,
  duplicated and unknown ``custom_id`` lines are counted, never turned into rows;
* **retried** — failed lines, and the unfinished seeds of an expired, cancelled or failed
  batch, go into a follow-up batch, up to ``max_retries`` times (an answer in another format
  up to ``format_retries`` times), then become failure rows;
* **shaped** — each line's body follows the model's request profile (:mod:`.request_profile`:
  a reasoning model's ``max_completion_tokens``, no ``temperature`` or ``stop``), with
  ``teacher.extra_body``;
* **budgeted** — each request's worst case is reserved before the batch is submitted, at
  batch prices (``teacher.batch``); seeds that do not fit become ``budget_exhausted`` rows.

Every seed ends as exactly one row, as in chat mode (:mod:`.collector`); the batches are
recorded in :mod:`.batch_jobs`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import openai
import pandas as pd

from ..config.pipeline import ModelPrice, TeacherConfig
from .batch_jobs import BatchJobs
from .batch_lines import LINE_PROBLEMS, first_lines, line_completion
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

    def _admit(self, keys: list[str]) -> list[str]:
        """The keys whose worst case fits the budget, reserved; the others end as budget_exhausted."""
        admitted = []
        for key in keys:
            reservation = self.budget.reserve(estimate_tokens(self._messages(key)), self.teacher.max_tokens)
            if reservation is None:
                self.outcomes[key] = _Failure(BUDGET_EXHAUSTED, self._budget_message())
            else:
                self.reservations[key] = reservation
                admitted.append(key)
        return admitted

    def _budget_message(self) -> str:
        spent = self.budget.run_spending() + (" at batch prices" if self.budget.price is not None else "")
        return (f"the run's budget ({self.budget.config.model_dump(exclude_none=True)}) could not hold this "
                f"request's worst case before submission, after {spent}")

    def _submit(self, keys: list[str]) -> str:
        teacher = self.teacher
        lines = [{"custom_id": key, "method": "POST", "url": CHAT_ENDPOINT,
                  "body": request_fields(teacher, self.profile, self._messages(key), list(self.one_call.stop) or None,
                                         self.writer.response_format,
                                         self.one_call.row_fields(self.seed_of[key]["seed"]))} for key in keys]
        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
        upload = self._api("uploading the batch input", lambda: self.client.files.create(
            file=("self-chat-requests.jsonl", data), purpose="batch"))
        batch = self._api("creating the batch", lambda: self.client.batches.create(
            input_file_id=upload.id, endpoint=CHAT_ENDPOINT, completion_window=teacher.batch.completion_window,
            metadata={"purpose": "baize self-chat"}))
        self.jobs.record(batch.id, upload.id, keys)  # before anything else can fail: the batch is paid for
        self.log(f"batch {batch.id}: submitted {len(keys)} requests ({upload.id}, {len(data):,} bytes)")
        return batch.id

    # -- waiting and collecting

    def _wait(self, waiting: dict[str, tuple[set[str], set[str]]]) -> list[str]:
        """Poll every batch until it ends and collect it; returns the keys to ask again."""
        again: list[str] = []
        while waiting:
            for batch_id in list(waiting):
                try:
                    batch = self._api("checking a batch", lambda b=batch_id: self.client.batches.retrieve(b),
                                      not_found_raises=True)
                except openai.NotFoundError:
                    # Gone from the endpoint (another endpoint, or its files expired): ask again.
                    self.log(f"batch {batch_id}: not found at the endpoint; its requests are submitted again")
                    self.jobs.mark_collected(batch_id)
                    again += sorted(waiting.pop(batch_id)[0])
                    continue
                counts = batch.request_counts
                done = f"{counts.completed}/{counts.total} done, {counts.failed} failed" if counts else "no counts yet"
                self.log(f"batch {batch_id}: {batch.status}, {done}")
                if batch.status in FINISHED_STATUSES:
                    again += self._collect(batch, *waiting.pop(batch_id))
            if waiting:
                time.sleep(self.teacher.batch.poll_interval_s)
        return again

    def _download(self, file_id: str | None) -> list[str]:
        if not file_id:
            return []
        content = self._api("downloading batch results", lambda: self.client.files.content(file_id))
        return content.content.decode("utf-8", "replace").splitlines()

    def _collect(self, batch: Any, pending: set[str], submitted: set[str]) -> list[str]:
        """Map a finished batch's lines back to their seeds; returns the keys to ask again."""
        texts = self._download(batch.output_file_id) + self._download(batch.error_file_id)
        lines = first_lines(texts, pending, submitted, self.line_problems)
        again = [key for key, line in lines.items() if self._settle_line(key, line)]
        unfinished = sorted(pending - lines.keys())
        if batch.status == "completed":
            self.line_problems["missing_custom_ids"] += len(unfinished)
        for key in unfinished:
            self.budget.settle(self.reservations.pop(key, Reservation(0, 0.0)))
            kind = "missing_custom_id" if batch.status == "completed" else f"batch_{batch.status}"
            self.retries[kind] += 1
            self.outcomes[key] = _Failure(kind, f"batch {batch.id} ({batch.status}) returned no line for this seed")
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
        self.resumed = len(waiting)
        in_flight = set().union(*(keys_in_batch for keys_in_batch, _ in waiting.values()))
        ask = [key for key in pending if key not in in_flight]
        while True:
            admitted = self._admit(ask)
            if admitted:
                batch_id = self._submit(admitted)
                self.attempts.update(admitted)
                waiting[batch_id] = (set(admitted), set(admitted))
            if not waiting:
                break
            self.batch_ids += list(waiting)
            again = self._wait(waiting)
            ask = [key for key in again if self.attempts[key] <= self.teacher.max_retries]
            for key in again:
                if key not in ask and isinstance(failure := self.outcomes[key], _Failure):
                    failure.message += f" (after {self.attempts[key]} batches)"
            waiting = {}
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
        jobs = BatchJobs(cache.path if cache is not None else ":memory:")
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
