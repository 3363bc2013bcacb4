"""One shard's teacher requests from a Dagster step: the shared limit, the lease, the cache, the metadata.

The transcripts asset (self-chat) and the feedback scores asset (judgments) ask the
teacher the same way: every process with the endpoint and key shares one rate limit and
the run's budget, one run at a time works on a shard, and finished answers are cached as
they arrive so a rerun asks only for what is missing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, Failure, MetadataValue
from dagster_openai import OpenAIResource

from ..core.collect.batch import BatchCollectionResult, collect_transcripts_batch
from ..core.collect.cache import TranscriptCache
from ..core.collect.collector import collect_transcripts
from ..core.collect.errors import BUDGET_EXHAUSTED, TeacherFatalError
from ..core.collect.leases import exclusive_lease
from ..core.collect.modes import Writer
from ..core.collect.parallel import CollectionProcessError, SharedStores, collect_transcripts_in_processes
from ..core.collect.results import CollectionResult
from ..core.collect.shared_limits import open_limit_store
from ..core.config.pipeline import TeacherConfig
from ..core.storage import Layout


@dataclass
class ShardCollection:
    result: CollectionResult
    metadata: dict  # usage, counts, retries, spending: what every collecting asset reports


def collect_shard(
    context: AssetExecutionContext,
    layout: Layout,
    openai: OpenAIResource,
    requests: pd.DataFrame,
    teacher: TeacherConfig,
    lease: Path,
    cache: Path,
    step: str,
    writer: Writer | None = None,
    regenerate: bool = False,
) -> ShardCollection:
    """Ask the teacher for every row of ``requests`` (the seed-table shape); a fatal error is a ``Failure``.

    With ``regenerate`` nothing cached is reused: every row is asked again (and cached anew).
    """
    limit_store = None
    try:
        limit_store = open_limit_store(teacher.rate_limit_store, layout.rate_limit_store())
        with (
            exclusive_lease(lease, f"run {context.run.run_id}", log=context.log.info,
                            log_every_s=teacher.progress_every_s),
            TranscriptCache(cache, reuse=not regenerate) as opened_cache,
        ):
            if teacher.processes > 1:
                stores = SharedStores(teacher.rate_limit_store, layout.rate_limit_store(), opened_cache.path,
                                      reuse_cache=not regenerate)
                result = collect_transcripts_in_processes(
                    requests, teacher, openai.api_key, stores, base_url=openai.base_url,
                    log=context.log.info, ledger=context.run.run_id, writer=writer,
                )
            elif teacher.api == "batch":
                result = collect_transcripts_batch(
                    requests, teacher, api_key=openai.api_key, base_url=openai.base_url, log=context.log.info,
                    cache=opened_cache, limit_store=limit_store, ledger=context.run.run_id, writer=writer,
                )
            else:
                result = collect_transcripts(
                    requests, teacher, api_key=openai.api_key, base_url=openai.base_url, log=context.log.info,
                    cache=opened_cache, limit_store=limit_store, ledger=context.run.run_id, writer=writer,
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
    metadata = {
        **result.usage.as_metadata(),
        "partial": result.partial,
        "cached_answers": result.cached,
        "api_requests": result.requests,
        "failed_requests": sum(result.failures.values()),
        "failures_by_kind": MetadataValue.json(dict(result.failures)),
        "retries_by_kind": MetadataValue.json(dict(result.retries)),
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
    return ShardCollection(result, metadata)


def all_failed(step: str, failures: Counter, path: str) -> str:
    """One line for a shard whose every request failed: an outage or a misconfiguration, not bad luck."""
    kinds = ", ".join(f"{count} {kind}" for kind, count in failures.most_common())
    return (f"every one of the {sum(failures.values())} requests of {step} failed ({kinds}) and nothing was "
            f"collected; the failure_message column of {path} says why")
