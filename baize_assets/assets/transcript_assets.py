"""``<source>/transcripts`` [shard]: raw self-chat transcripts from the teacher."""

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_openai import OpenAIResource

from ..core.collect.cache import cache_key
from ..core.collect.results import generation_inputs
from ..core.collect.transcript import TRANSCRIPT_SCHEMA
from ..core.config.pipeline import PipelineConfig, SourceConfig
from ..core.costs.stages import transcripts_forecast
from ..core.storage import read_parquet, write_parquet_atomic
from ..resources import BaizeStorage
from .cost_assets import forecast_gate, forecast_metadata, partition_forecast
from .keys import TEACHER_API_POOL, seed_key, shard_partitions, transcripts_key
from .metadata import table_metadata, table_version
from .shard_collection import all_failed, collect_shard, endpoint_for
from .step_process import die_with_the_run_process


class TranscriptsRun(Config):
    """What one run of a transcripts shard does beyond the configuration (the launchpad's run config)."""

    regenerate: bool = False  # ask the teacher again for every seed instead of reusing cached conversations


def build_transcripts_asset(source: SourceConfig, config: PipelineConfig) -> AssetsDefinition:
    pipeline = config  # the step's own ``config`` parameter is its run config
    teacher = config.teacher
    inputs = generation_inputs(teacher)
    # Only what shapes the conversations: concurrency, limits or the budget do not make a partition stale.
    code_version = cache_key("", inputs)[:12]

    @asset(
        key=transcripts_key(source.name),
        deps=[seed_key(source.name), *forecast_gate(config)],
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
    def transcripts(
        context: AssetExecutionContext, storage: BaizeStorage, openai: OpenAIResource, config: TranscriptsRun
    ) -> MaterializeResult:
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
        forecast = partition_forecast(
            context, lambda: transcripts_forecast(pipeline, layout, source, [shard], config.regenerate,
                                                  texts=list(shard_seeds["seed"])))
        collected = collect_shard(
            context, layout, endpoint_for(teacher, openai), shard_seeds, teacher,
            # One run at a time collects a shard: a second run of it waits, then finds it all in the cache.
            lease=layout.transcripts_lease(source.name, shard), cache=layout.transcript_cache(source.name), step=step,
            state=pipeline.state_store,
            regenerate=config.regenerate,
        )
        result = collected.result
        path = write_parquet_atomic(
            result.transcripts, layout.transcripts(source.name, shard), TRANSCRIPT_SCHEMA
        )
        frame = result.transcripts
        ended_by = frame["ended_by"].dropna().value_counts().to_dict()
        metadata = {
            **table_metadata(frame, path, TRANSCRIPT_SCHEMA),
            **collected.metadata,
            "conversations": int(frame["failure_kind"].isna().sum()),
            "ended_by": MetadataValue.json({str(k): int(v) for k, v in ended_by.items()}),
            "generation_mode": teacher.mode,
            "prompt_version": inputs["prompt_version"],
            **forecast_metadata(forecast, result.spent_dollars),
        }
        if len(frame) and metadata["conversations"] == 0 and not result.partial:
            raise Failure(description=all_failed(step, result.failures, str(path)), metadata=metadata)
        # What the corpus reads: the same answers from the cache are the same data.
        version = table_version(frame, ["seed_id", "transcript", "finish_reason", "failure_kind", "model"])
        return MaterializeResult(metadata=metadata, data_version=version)

    return transcripts

