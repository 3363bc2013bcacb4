"""One shard's self-chat collection split over several processes.

One collecting process is bound by one core: the HTTP client, JSON and the event loop
cost more per request than waiting for the teacher. With ``teacher.processes`` above 1
the seeds still pending (not in the cache) are split into that many contiguous slices,
each collected by a spawned child process running the ordinary asynchronous collector
(:func:`.collector.collect_transcripts`). What the children must share, they share
through the stores built for parallel steps: the endpoint's rate limit and the run's
budget ledger through the limit store (SQLite or Redis), finished conversations through
the transcript cache (SQLite, one short transaction per insert, several writers wait for
each other). The parent merges the children's rows into one table in seed-id order, the
table one process makes from the same answers, and only then may the caller write it.

Faults: a child dies with its parent (:mod:`.parent_death`), so a killed step leaves no
process spending money. A child that dies or fails stops the others and raises an error
naming it and its slice; nothing is written, and the rerun finds in the cache everything
the children finished.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import traceback
import uuid
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa

from ..config.pipeline import RateLimitStoreConfig, TeacherConfig
from ..parent_death import die_with_parent
from .cache import cache_key
from .client import Usage
from .collector import collect_transcripts
from .errors import BUDGET_EXHAUSTED, TeacherFatalError
from .modes import Writer
from .results import CollectionResult, generation_inputs
from .state import CacheSpec
from .stores import open_limit_store
from .transcript import TRANSCRIPT_SCHEMA

# How long a stopped child has to exit before it is killed.
_STOP_GRACE_S = 5.0


class CollectionProcessError(RuntimeError):
    """A collecting child process died or failed; the message names it and its seeds."""


@dataclass(frozen=True)
class SharedStores:
    """Where the children find what they share: the limit store (as ``open_limit_store`` opens it) and the cache."""

    limit_store: RateLimitStoreConfig
    limit_store_path: Path
    cache: CacheSpec | None


@dataclass
class _Child:
    number: int
    of: int
    seeds: pd.DataFrame
    process: multiprocessing.process.BaseProcess
    connection: Connection

    def describe(self) -> str:
        ids = self.seeds["seed_id"]
        return (f"collector process {self.number} of {self.of} (pid {self.process.pid}; {len(self.seeds)} seeds, "
                f"seed_id {ids.iloc[0]} to {ids.iloc[-1]})")


def _collect_slice(connection: Connection, parent_pid: int, seeds: pd.DataFrame, teacher: TeacherConfig, api_key: str,
                   base_url: str | None, progress_every_s: float | None, stores: SharedStores, ledger: str,
                   writer: Writer | None) -> None:
    """A child's whole life: collect its slice, send back the result or what went wrong."""
    die_with_parent(parent_pid)
    try:
        limit_store = open_limit_store(stores.limit_store, stores.limit_store_path)
        try:
            spec = stores.cache
            with spec.open() if spec else nullcontext() as cache:
                result = collect_transcripts(seeds, teacher, api_key, base_url,
                                             lambda line: connection.send(("log", line)), progress_every_s, cache,
                                             limit_store, ledger, writer,
                                             warn=lambda line: connection.send(("warn", line)))
        finally:
            limit_store.close()
        connection.send(("result", result))
    except TeacherFatalError as error:  # the teacher's own words: the same error a one-process run raises
        connection.send(("fatal", error))
    except BaseException:
        connection.send(("crash", traceback.format_exc()))
    finally:
        connection.close()


def _slices(seeds: pd.DataFrame, teacher: TeacherConfig, stores: SharedStores,
            writer: Writer | None) -> list[pd.DataFrame]:
    """The seeds in up to ``teacher.processes`` slices, the pending ones spread evenly, each slice in seed order."""
    stored: set[str] = set()
    spec = stores.cache
    if spec is not None and spec.reuse:
        inputs = generation_inputs(teacher, writer)
        with spec.open() as cache:
            stored = cache.stored_keys(cache_key(seed, inputs) for seed in seeds["seed"])
        is_stored = [cache_key(seed, inputs) in stored for seed in seeds["seed"]]
    else:
        is_stored = [False] * len(seeds)
    pending = [i for i, done in enumerate(is_stored) if not done]
    cached = [i for i, done in enumerate(is_stored) if done]
    count = max(min(teacher.processes, len(pending)), 1)
    # Contiguous runs of each, so a slice is a range of the shard a message can name.
    parts = [sorted(pending[n * len(pending) // count:(n + 1) * len(pending) // count]
                    + cached[n * len(cached) // count:(n + 1) * len(cached) // count]) for n in range(count)]
    return [seeds.iloc[part].reset_index(drop=True) for part in parts]


def merge_results(results: list[CollectionResult], seconds: float) -> CollectionResult:
    """The children's results as one: their rows in seed-id order, their counts summed."""
    tables = [pa.Table.from_pandas(r.transcripts, schema=TRANSCRIPT_SCHEMA, preserve_index=False) for r in results]
    frame = pa.concat_tables(tables).to_pandas().sort_values("seed_id", kind="stable").reset_index(drop=True)
    usage, failures, retries, rejected_tokens, rejected_dollars = Usage(), Counter(), Counter(), Counter(), Counter()
    for result in results:
        usage.merge(result.usage)
        for counter, more in ((failures, result.failures), (retries, result.retries),
                              (rejected_tokens, result.rejected_tokens), (rejected_dollars, result.rejected_dollars)):
            counter.update(more)
    priced = [r.spent_dollars for r in results if r.spent_dollars is not None]
    return CollectionResult(
        transcripts=frame, usage=usage, failures=failures, retries=retries, seconds=seconds,
        requests=sum(r.requests for r in results), cached=sum(r.cached for r in results),
        spent_tokens=sum(r.spent_tokens for r in results), spent_dollars=sum(priced) if priced else None,
        partial=failures[BUDGET_EXHAUSTED] > 0, adaptations=sum(r.adaptations for r in results),
        rejected_tokens=rejected_tokens, rejected_dollars=rejected_dollars,
    )


def _exit_description(process: multiprocessing.process.BaseProcess) -> str:
    code = process.exitcode
    if code is None:
        return "stopped answering"
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def _stop(children: list[_Child]) -> None:
    for child in children:
        if child.process.is_alive():
            child.process.terminate()
    deadline = time.monotonic() + _STOP_GRACE_S
    for child in children:
        child.process.join(max(deadline - time.monotonic(), 0.1))
        if child.process.is_alive():
            child.process.kill()
            child.process.join()
        child.connection.close()


def collect_transcripts_in_processes(
    seeds: pd.DataFrame,
    teacher: TeacherConfig,
    api_key: str,
    stores: SharedStores,
    base_url: str | None = None,
    log: Callable[[str], None] = print,
    progress_every_s: float | None = None,
    ledger: str | None = None,
    writer: Writer | None = None,
    warn: Callable[[str], None] | None = None,
) -> CollectionResult:
    """Collect ``seeds`` in ``teacher.processes`` child processes; what :func:`.collector.collect_transcripts` returns.

    With one process's worth of pending seeds or fewer (a rerun the cache answers), the
    collection runs in this process and no child is started.
    """
    started = time.monotonic()
    ledger = ledger or f"collection-{uuid.uuid4()}"  # one ledger for every child
    slices = _slices(seeds, teacher, stores, writer)
    if len(slices) == 1:
        limit_store = open_limit_store(stores.limit_store, stores.limit_store_path)
        try:
            spec = stores.cache
            with spec.open() if spec else nullcontext() as cache:
                return collect_transcripts(seeds, teacher, api_key, base_url, log, progress_every_s, cache,
                                           limit_store, ledger, writer, warn)
        finally:
            limit_store.close()

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads, locks or sockets
    children: list[_Child] = []
    try:
        for number, part in enumerate(slices, 1):
            receiving, sending = context.Pipe(duplex=False)
            process = context.Process(
                target=_collect_slice, name=f"baize-collector-{number}",
                args=(sending, os.getpid(), part, teacher, api_key, base_url, progress_every_s, stores, ledger, writer),
            )
            process.start()
            sending.close()  # the child's end: the parent sees EOF once the child is gone
            children.append(_Child(number, len(slices), part, process, receiving))
        log(f"self-chat in {len(children)} processes: " + ", ".join(
            f"{len(child.seeds)} seeds in pid {child.process.pid}" for child in children))
        results = _gather(children, log, warn or log)
        for child in children:  # each has sent its result and is on its way out
            child.process.join(_STOP_GRACE_S)
    finally:
        _stop(children)
    return merge_results(results, time.monotonic() - started)


def _gather(children: list[_Child], log: Callable[[str], None],
            warn: Callable[[str], None]) -> list[CollectionResult]:
    """Every child's result, relaying their log lines; the first child to fail stops the collection."""
    results: dict[int, CollectionResult] = {}
    waiting = {child.connection: child for child in children}
    while waiting:
        for connection in wait(list(waiting)):
            child = waiting[connection]
            try:
                kind, payload = connection.recv()
            except EOFError:
                child.process.join(_STOP_GRACE_S)
                raise CollectionProcessError(
                    f"{child.describe()} {_exit_description(child.process)} before it finished; nothing was "
                    "written for this shard, and a rerun reuses every conversation the processes finished"
                ) from None
            if kind in ("log", "warn"):
                (log if kind == "log" else warn)(f"[process {child.number}/{child.of}] {payload}")
            elif kind == "result":
                results[child.number] = payload
                del waiting[connection]
            elif kind == "fatal":
                raise payload
            else:
                raise CollectionProcessError(f"{child.describe()} failed; nothing was written for this shard:\n"
                                             f"{payload}")
    return [results[number] for number in sorted(results)]
