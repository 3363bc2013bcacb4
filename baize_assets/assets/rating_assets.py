"""``<source>/conversation_ratings`` [shard]: the judge filter's rating of each kept conversation (opt-in).

Asked like every judge call (the judge's settings and endpoint, rate limit, retries, cache,
budget, lease); the training set leaves out what is rated under ``corpus.judge_filter.min_score``.
"""

from dagster import AssetExecutionContext, AssetsDefinition, Failure, MaterializeResult, MetadataValue, asset
from dagster_openai import OpenAIResource

from ..core.collect.modes import judge_writer
from ..core.config.pipeline import PipelineConfig, SourceConfig
from ..core.corpus import judge_filter
from ..core.costs.stages import ratings_forecast
from ..core.feedback.judgments import unscored_problem
from ..core.prompts import RATE_CONVERSATION_FORMAT
from ..core.storage import read_parquet, write_parquet_atomic
from ..resources import BaizeStorage
from .cost_assets import forecast_gate, forecast_metadata, partition_forecast
from .keys import TEACHER_API_POOL, conversation_ratings_key, conversations_key, shard_partitions
from .metadata import judge_code_version, table_metadata, table_version
from .shard_collection import collect_shard, endpoint_for
from .step_process import die_with_the_run_process


def build_ratings_asset(source: SourceConfig, config: PipelineConfig) -> AssetsDefinition:
    judge = config.judge_teacher()
    writer = judge_writer(RATE_CONVERSATION_FORMAT, config.judge.structured_output)

    @asset(
        key=conversation_ratings_key(source.name),
        deps=[conversations_key(source.name), *forecast_gate(config)],
        partitions_def=shard_partitions(source),
        group_name=source.name,
        kinds={"openai", "parquet"},
        pool=TEACHER_API_POOL,
        description=(
            f"The judge's 1-10 rating (helpfulness and correctness) of every kept conversation of '{source.name}'; "
            "the training set leaves out those under corpus.judge_filter.min_score (reason judge_score)."
        ),
        code_version=judge_code_version(config),
    )
    def conversation_ratings(context: AssetExecutionContext, storage: BaizeStorage,
                             openai: OpenAIResource) -> MaterializeResult:
        die_with_the_run_process(context)
        layout = storage.layout
        shard = int(context.partition_key)
        conversations = read_parquet(layout.conversations(source.name, shard))
        step = f"{source.name}/{shard} ratings"
        requests = judge_filter.rating_requests(conversations)
        forecast = partition_forecast(
            context, lambda: ratings_forecast(config, layout, source, [shard], texts=list(requests["seed"])))
        collected = collect_shard(
            context, layout, endpoint_for(judge, openai), requests, judge,
            lease=layout.conversation_ratings_lease(source.name, shard),
            cache=layout.conversation_ratings_cache(source.name), writer=writer, step=step, state=config.state_store,
        )
        frame = judge_filter.read_ratings(conversations, collected.result.transcripts)
        problem = unscored_problem(frame["reason"], config.judge.max_unscored_fraction, step, judge.model)
        if problem and not collected.result.partial:
            raise Failure(description=problem, metadata=collected.metadata)
        path = write_parquet_atomic(frame, layout.conversation_ratings(source.name, shard), judge_filter.RATING_SCHEMA)
        scored = frame["score"].dropna()
        below = judge_filter.rated_below(conversations, frame, config.corpus.judge_filter.min_score)
        return MaterializeResult(metadata={
            **table_metadata(frame, path, judge_filter.RATING_SCHEMA),
            **collected.metadata,
            "rated": len(scored),
            "mean_rating": round(float(scored.mean()), 2) if len(scored) else 0.0,
            "below_min_score": int(below.sum()),
            "unrated_by_reason": MetadataValue.json(frame["reason"].dropna().value_counts().astype(int).to_dict()),
            "judge_model": judge.model,
            **forecast_metadata(forecast, collected.result.spent_dollars),
        }, data_version=table_version(frame, ["seed_id", "score"]))

    return conversation_ratings
