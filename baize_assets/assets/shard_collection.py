"""One shard's teacher (or judge) requests from a Dagster step: the shared limit, the lease, the cache, the metadata.

The transcripts asset (self-chat), the feedback scores asset and the judged evaluation
(judgments) ask the same way: every process with the endpoint and key shares one rate
limit, the run's budget and its request profile, one run at a time works on a shard, and
finished answers are cached as they arrive so a rerun asks only for what is missing.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, Failure, MetadataValue
from dagster_openai import OpenAIResource

from ..core.collect.batch import BatchCollectionResult, collect_transcripts_batch
from ..core.collect.collector import collect_transcripts
from ..core.collect.errors import BUDGET_EXHAUSTED, TeacherFatalError
from ..core.collect.modes import Writer
from ..core.collect.parallel import CollectionProcessError, SharedStores, collect_transcripts_in_processes
from ..core.collect.results import CollectionResult
from ..core.collect.state import StateStore
from ..core.collect.stores import open_limit_store
from ..core.config.pipeline import StateStoreConfig, TeacherConfig
from ..core.storage import Layout


@dataclass(frozen=True)
class Endpoint:
    """Where requests go: the key, and the base URL (None: the ``openai`` client's own default)."""

    api_key: str
    base_url: str | None


def endpoint_for(settings: TeacherConfig, openai: OpenAIResource) -> Endpoint:
    """The teacher resource's endpoint, or the one the judge's own variables name (``judge.base_url_env``, ...)."""
    names = {"base_url": settings.base_url_env, "api_key": settings.api_key_env}
    found = {"base_url": openai.base_url, "api_key": openai.api_key}
    for what, name in names.items():
        if name != f"OPENAI_{what.upper()}":
            found[what] = os.environ.get(name)
            if not found[what]:
                raise Failure(description=f"{settings.section}.{what}_env names {name}, which is not set")
    return Endpoint(found["api_key"], found["base_url"])


@dataclass
class ShardCollection:
    result: CollectionResult
    metadata: dict  # usage, counts, retries, spending: what every collecting asset reports


def collect_shard(
    context: AssetExecutionContext,
    layout: Layout,
    endpoint: Endpoint,
    requests: pd.DataFrame,
    teacher: TeacherConfig,
    lease: Path,
    cache: Path,
    step: str,
    state: StateStoreConfig,
    writer: Writer | None = None,
    regenerate: bool = False,
) -> ShardCollection:
    """Ask the teacher for every row of ``requests`` (the seed-table shape); a fatal error is a ``Failure``.

    ``lease`` and ``cache`` are places in the layout's state folder, kept where ``state`` says
    (SQLite files, or PostgreSQL). With ``regenerate`` nothing cached is reused: every row is
    asked again (and cached anew).
    """
    limit_store = None
    store = StateStore(state, layout.state)
    try:
        limit_store = open_limit_store(teacher.rate_limit_store, layout.rate_limit_store())
        with (
            store.lease(lease, f"run {context.run.run_id}", log=context.log.info,
                        log_every_s=teacher.progress_every_s),
            store.cache(cache, reuse=not regenerate) as opened_cache,
        ):
            if teacher.processes > 1:
                stores = SharedStores(teacher.rate_limit_store, layout.rate_limit_store(),
                                      store.cache_spec(cache, reuse=not regenerate))
                result = collect_transcripts_in_processes(
                    requests, teacher, endpoint.api_key, stores, base_url=endpoint.base_url,
                    log=context.log.info, ledger=context.run.run_id, writer=writer, warn=context.log.warning,
                )
            elif teacher.api == "batch":
                result = collect_transcripts_batch(
                    requests, teacher, api_key=endpoint.api_key, base_url=endpoint.base_url, log=context.log.info,
                    cache=opened_cache, limit_store=limit_store, ledger=context.run.run_id, writer=writer,
                )
            else:
                result = collect_transcripts(
                    requests, teacher, api_key=endpoint.api_key, base_url=endpoint.base_url, log=context.log.info,
                    cache=opened_cache, limit_store=limit_store, ledger=context.run.run_id, writer=writer,
                    warn=context.log.warning,
                )
        run_tokens, run_dollars = limit_store.spent(context.run.run_id)
    except (TeacherFatalError, CollectionProcessError) as error:
        # The message says what to fix; a traceback through the collector would bury it.
        raise Failure(description=str(error)) from None
    finally:
        if limit_store is not None:
            limit_store.close()
    if result.partial:
        context.log.warning(
            f"the run's budget was reached: {result.failures[BUDGET_EXHAUSTED]} of {len(requests)} "
            f"requests of {step} were not asked; rerun with a larger budget to finish them"
        )
    return ShardCollection(result, _collection_metadata(result, teacher, run_tokens, run_dollars))


def all_failed(step: str, failures: Counter, path: str) -> str:
    """One line for a shard whose every request failed: an outage or a misconfiguration, not bad luck."""
    kinds = ", ".join(f"{count} {kind}" for kind, count in failures.most_common())
    return (f"every one of the {sum(failures.values())} requests of {step} failed ({kinds}) and nothing was "
            f"collected; the failure_message column of {path} says why")


def _collection_metadata(result: CollectionResult, teacher: TeacherConfig, run_tokens: int,
                         run_dollars: float) -> dict:
    metadata = {
        **result.usage.as_metadata(),
        "partial": result.partial,
        "cached_answers": result.cached,
        "api_requests": result.requests,
        "failed_requests": sum(result.failures.values()),
        "failures_by_kind": MetadataValue.json(dict(result.failures)),
        "retries_by_kind": MetadataValue.json(dict(result.retries)),
        "rejected_answers_cost": MetadataValue.json(result.rejected_cost()),
        "request_adaptations": result.adaptations,
        "partition_tokens": result.spent_tokens,
        "run_tokens": run_tokens,
        "seconds": round(result.seconds, 2),
        "model": teacher.model,
        "teacher_api": teacher.api,
    }
    if isinstance(result, BatchCollectionResult):
        metadata.update({k: MetadataValue.json(v) if isinstance(v, dict) else v
                         for k, v in result.batch_metadata().items()})
    if result.spent_dollars is not None:
        metadata["partition_dollars"] = round(result.spent_dollars, 6)
        metadata["run_dollars"] = round(run_dollars, 6)
    return metadata
