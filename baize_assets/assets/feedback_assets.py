"""Baize v2, self-distillation with feedback, as assets. Per ``self_distillation`` entry and source::

    <v1>/adapter + <source>/conversations [shard]
        -> <v2>/<source>_samples [shard]   k answers per seed from v1
        -> <v2>/<source>_scores [shard]    the judge's score of each answer
    every scores shard + <v1>/training_set (its eval split)
        -> <v2>/training_set (+ its best-vs-worst pairs) -> <v2>/adapter (starts from v1's weights)
        -> <v2>/evaluation

v2 trains on the best answers (``objective: sft``) or by DPO on the pairs (``objective: dpo``).

The shards are the transcripts' shards, so rerunning one samples shard rebuilds only its
scores shard and v2.
"""


from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_openai import OpenAIResource

from ..core.collect.modes import judge_writer
from ..core.config.pipeline import PipelineConfig, SelfDistillationConfig, SourceConfig
from ..core.corpus import schema as corpus
from ..core.costs.stages import scores_forecast
from ..core.feedback import judgments as judging, self_distill
from ..core.prompts import JUDGE_PROMPT_VERSION, SCORE_ANSWER_FORMAT
from ..core.storage import read_parquet, write_parquet_atomic
from ..resources import BaizeStorage
from .adapter_assets import build_adapter_asset
from .cost_assets import forecast_gate, forecast_metadata, partition_forecast
from .evaluation_assets import build_evaluation_asset
from .keys import (
    TEACHER_API_POOL,
    feedback_samples_key,
    feedback_scores_key,
    shard_partitions,
    training_set_key,
)
from .metadata import judge_code_version, table_metadata, table_version
from .sample_assets import build_samples_asset
from .shard_collection import collect_shard, endpoint_for
from .step_process import die_with_the_run_process


def build_scores_asset(plan: SelfDistillationConfig, source: SourceConfig, config: PipelineConfig) -> AssetsDefinition:
    judge = config.judge_teacher()
    writer = judge_writer(SCORE_ANSWER_FORMAT, config.judge.structured_output)

    @asset(
        key=feedback_scores_key(plan.adapter_name, source.name),
        deps=[feedback_samples_key(plan.adapter_name, source.name), *forecast_gate(config)],
        partitions_def=shard_partitions(source),
        group_name=plan.adapter_name,
        kinds={"openai", "parquet"},
        pool=TEACHER_API_POOL,
        description=(
            f"The judge's score (1-100: helpfulness, relevance, accuracy, detail) of every sampled answer of "
            f"'{source.name}', through the collector (rate limit, retries, cache, budget); an unreadable "
            "judgment is a row with its reason, and a shard with too many of them fails."
        ),
        code_version=judge_code_version(config),
    )
    def scores(context: AssetExecutionContext, storage: BaizeStorage, openai: OpenAIResource) -> MaterializeResult:
        die_with_the_run_process(context)
        layout = storage.layout
        shard = int(context.partition_key)
        samples = read_parquet(layout.feedback_samples(plan.adapter_name, source.name, shard))
        requests = self_distill.judge_requests(samples)
        step = f"{plan.adapter_name}/{source.name}/{shard} scores"
        forecast = partition_forecast(
            context, lambda: scores_forecast(config, layout, plan, source, [shard], texts=list(requests["seed"])))
        collected = collect_shard(
            context, layout, endpoint_for(judge, openai), requests, judge,
            lease=layout.feedback_lease(plan.adapter_name, source.name, shard),
            cache=layout.feedback_cache(plan.adapter_name), writer=writer, step=step, state=config.state_store,
        )
        frame = self_distill.read_judgments(samples, collected.result.transcripts)
        problem = judging.unscored_problem(frame["reason"], config.judge.max_unscored_fraction, step, judge.model)
        if problem and not collected.result.partial:  # a budget that stopped the run says so itself
            raise Failure(description=problem, metadata=collected.metadata)
        path = write_parquet_atomic(
            frame, layout.feedback_scores(plan.adapter_name, source.name, shard), self_distill.SCORE_SCHEMA
        )
        scored = frame["score"].dropna()
        return MaterializeResult(
            metadata={
                **table_metadata(frame, path, self_distill.SCORE_SCHEMA),
                **collected.metadata,
                "scored_answers": len(scored),
                "mean_score": round(float(scored.mean()), 2) if len(scored) else 0.0,
                "unscored_by_reason": MetadataValue.json(frame["reason"].dropna().value_counts().astype(int).to_dict()),
                "judge_prompt_version": JUDGE_PROMPT_VERSION,
                "judge_model": judge.model,
                **forecast_metadata(forecast, collected.result.spent_dollars),
            },
            data_version=table_version(frame, ["seed_id", "sample_index", "score"]),
        )

    return scores


def build_distilled_training_set_asset(plan: SelfDistillationConfig, config: PipelineConfig) -> AssetsDefinition:
    v1 = config.adapter(plan.adapter)
    sources = [config.source(name) for name in v1.sources]
    name = plan.adapter_name

    @asset(
        key=training_set_key(name),
        deps=[training_set_key(v1.name), *(feedback_scores_key(name, s.name) for s in sources)],
        group_name=name,
        kinds={"parquet"},
        description=(
            f"Training set of '{name}': the best-scored answer of '{v1.name}' per seed (its loss on that answer "
            f"only), and the eval split of '{v1.name}' so both adapters' held-out losses compare; beside it the "
            "best-vs-worst answer pairs a DPO objective trains on."
        ),
        code_version="2",
    )
    def distilled_training_set(context: AssetExecutionContext, storage: BaizeStorage) -> MaterializeResult:
        import pandas as pd

        layout = storage.layout
        samples, scores = [], []
        for source in sources:
            for shard in shard_partitions(source).get_partition_keys():
                samples.append(read_parquet(layout.feedback_samples(name, source.name, shard)))
                scores.append(read_parquet(layout.feedback_scores(name, source.name, shard)))
        v1_set = read_parquet(layout.training_set(v1.name))
        samples, scores = pd.concat(samples, ignore_index=True), pd.concat(scores, ignore_index=True)
        frame, counts = self_distill.distilled_training_set(samples, scores, v1_set[v1_set["split"] == "eval"])
        pairs, pair_counts = self_distill.preference_pairs(samples, scores)
        # The pairs first: the training set's file is what says the asset's output is complete.
        pairs_file = self_distill.pairs_path(layout.training_set(name))
        write_parquet_atomic(pairs, pairs_file, self_distill.PAIR_SCHEMA)
        path = write_parquet_atomic(frame, layout.training_set(name), self_distill.DISTILLED_SET_SCHEMA)
        all_scores = scores["score"].dropna()
        best = frame[frame["split"] == "train"]
        return MaterializeResult(
            metadata={
                **table_metadata(frame, path, self_distill.DISTILLED_SET_SCHEMA),
                **{f"seeds_{key}": value for key, value in counts.items()},
                "train": len(best),
                "eval": int((frame["split"] == "eval").sum()),
                "mean_score_all_answers": round(float(all_scores.mean()), 2) if len(all_scores) else 0.0,
                "data_version": corpus.data_version(frame),
                "judging_scale": f"{judging.SINGLE_SCALE[0]}-{judging.SINGLE_SCALE[1]}",
                "preference_pairs": MetadataValue.path(str(pairs_file)),
                **{f"pairs_{key}": value for key, value in pair_counts.items() if key != "seeds"},
            },
            # The pairs are made of the same samples and scores as the set: its version covers them.
            data_version=DataVersion(corpus.data_version(frame)),
        )

    return distilled_training_set


def build_self_distillation_assets(config: PipelineConfig) -> list[AssetsDefinition]:
    built: list[AssetsDefinition] = []
    for plan in config.self_distillation:
        v1 = config.adapter(plan.adapter)
        for source in (config.source(name) for name in v1.sources):
            built += [build_samples_asset(plan, source, config), build_scores_asset(plan, source, config)]
        v2 = config.distilled_adapter(plan)
        built += [
            build_distilled_training_set_asset(plan, config),
            build_adapter_asset(
                v2, config, init_from=v1.name, preference=plan.dpo if plan.objective == "dpo" else None
            ),
            build_evaluation_asset(v2, config),
        ]
    return built
