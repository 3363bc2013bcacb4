"""``<source>/transcripts`` [shard]: raw self-chat transcripts from the teacher."""

from collections import Counter

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_openai import OpenAIResource

from ..core import batch_collect, selfchat
from ..core.config import PipelineConfig, SourceConfig
from ..core.leases import exclusive_lease
from ..core.parallel_collect import CollectionProcessError, SharedStores, collect_transcripts_in_processes
from ..core.shared_limits import open_limit_store
from ..core.storage import read_parquet, write_parquet_atomic
from ..core.transcript_cache import TranscriptCache, cache_key
from ..core.transcript_format import TRANSCRIPT_SCHEMA
from ..resources import BaizeStorage
from .keys import TEACHER_API_POOL, seed_key, shard_partitions, transcripts_key
from .metadata import table_metadata
from .step_process import die_with_the_run_process


def build_transcripts_asset(source: SourceConfig, config: PipelineConfig) -> AssetsDefinition:
    teacher = config.teacher
    inputs = selfchat.generation_inputs(teacher)
    # Only what shapes the conversations: concurrency, limits or the budget do not make a partition stale.
    code_version = cache_key("", inputs)[:12]

    @asset(
        key=transcripts_key(source.name),
        deps=[seed_key(source.name)],
        partitions_def=shard_partitions(source),
        group_name=source.name,
        kinds={"openai", "parquet"},
        pool=TEACHER_API_POOL,
        description=(
            f"Raw self-chat transcripts of '{source.name}' (Baize {teacher.mode}), one row per seed: transcript, "
            "model, finish reason, token usage and cost, or the failure kind. Finished conversations are cached "
            "as they arrive, so a rerun asks the teacher only for what is missing."
        ),
        code_version=f"{inputs['prompt_version']}-{code_version}",
    )
    def transcripts(context: AssetExecutionContext, storage: BaizeStorage, openai: OpenAIResource) -> MaterializeResult:
        # A killed run must stop spending: its orphaned step would go on calling the teacher.
        die_with_the_run_process(context)
        layout = storage.layout
        shard = int(context.partition_key)
        shard_seeds = read_parquet(layout.seeds(source.name), shard)
        step = f"{source.name}/{shard}"
        context.log.info(
            f"self-chat ({teacher.mode}) for {len(shard_seeds)} seeds of {step} with {teacher.model}, "
            f"{teacher.max_concurrency} in flight" + (f" in each of {teacher.processes} processes"
                                                      if teacher.processes > 1 else "")
        )
        limit_store = None
        try:
            # Every process with this endpoint and key shares one rate limit, and every step of the run its budget.
            limit_store = open_limit_store(teacher.rate_limit_store, layout.rate_limit_store())
            # One run at a time collects a shard: a second run of it waits, then finds it all in the cache.
            with (
                exclusive_lease(layout.transcripts_lease(source.name, shard), f"run {context.run.run_id}",
                                log=context.log.info, log_every_s=teacher.progress_every_s),
                TranscriptCache(layout.transcript_cache(source.name)) as cache,
            ):
                if teacher.processes > 1:
                    stores = SharedStores(teacher.rate_limit_store, layout.rate_limit_store(), cache.path)
                    result = collect_transcripts_in_processes(
                        shard_seeds, teacher, openai.api_key, stores, base_url=openai.base_url,
                        log=context.log.info, ledger=context.run.run_id,
                    )
                else:
                    collect = batch_collect.collect_transcripts_batch if teacher.api == "batch" \
                        else selfchat.collect_transcripts
                    result = collect(
                        shard_seeds, teacher, api_key=openai.api_key, base_url=openai.base_url,
                        log=context.log.info, cache=cache, limit_store=limit_store, ledger=context.run.run_id,
                    )
            run_tokens, run_dollars = limit_store.spent(context.run.run_id)
        except (selfchat.TeacherFatalError, CollectionProcessError) as error:
            # The message says what to fix; a traceback through the collector would bury it.
            raise Failure(description=str(error)) from None
        finally:
            if limit_store is not None:
                limit_store.close()
        path = write_parquet_atomic(
            result.transcripts, layout.transcripts(source.name, shard), TRANSCRIPT_SCHEMA
        )
        if result.partial:
            context.log.warning(
                f"the run's budget was reached: {result.failures[selfchat.BUDGET_EXHAUSTED]} of {len(shard_seeds)} "
                f"seeds of {step} were not asked; rerun with a larger budget to finish them"
            )
        frame = result.transcripts
        ended_by = frame["ended_by"].dropna().value_counts().to_dict()
        metadata = {
            **table_metadata(frame, path, TRANSCRIPT_SCHEMA),
            **result.usage.as_metadata(),
            "partial": result.partial,
            "conversations": int(frame["failure_kind"].isna().sum()),
            "cached_conversations": result.cached,
            "api_requests": result.requests,
            "failed_seeds": sum(result.failures.values()),
            "failures_by_kind": MetadataValue.json(dict(result.failures)),
            "retries_by_kind": MetadataValue.json(dict(result.retries)),
            "ended_by": MetadataValue.json({str(k): int(v) for k, v in ended_by.items()}),
            "partition_tokens": result.spent_tokens,
            "run_tokens": run_tokens,
            "seconds": round(result.seconds, 2),
            "model": teacher.model,
            "generation_mode": teacher.mode,
            "prompt_version": inputs["prompt_version"],
            "teacher_api": teacher.api,
        }
        if isinstance(result, batch_collect.BatchCollectionResult):
            metadata.update({k: MetadataValue.json(v) if isinstance(v, dict) else v
                             for k, v in result.batch_metadata().items()})
        if result.spent_dollars is not None:
            metadata["partition_dollars"] = round(result.spent_dollars, 6)
            metadata["run_dollars"] = round(run_dollars, 6)
        if len(frame) and metadata["conversations"] == 0 and not result.partial:
            raise Failure(description=_all_failed(step, result.failures, str(path)), metadata=metadata)
        return MaterializeResult(metadata=metadata)

    return transcripts


def _all_failed(step: str, failures: Counter, path: str) -> str:
    """One line for a shard whose every seed failed: an outage or a misconfiguration, not bad luck."""
    kinds = ", ".join(f"{count} {kind}" for kind, count in failures.most_common())
    return (f"every one of the {sum(failures.values())} seeds of {step} failed ({kinds}) and no conversation was "
            f"collected; the failure_message column of {path} says why")
