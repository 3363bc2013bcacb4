"""Jobs: named slices of the graph that a schedule, a script or a person launches."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from .assets import (
    BASE_MODELS_GROUP,
    COST_FORECAST_KEY,
    adapter_stage_keys,
    conversation_ratings_key,
    conversations_key,
    feedback_samples_key,
    feedback_scores_key,
    forecast_gate,
    seed_key,
    transcripts_key,
)
from .core.config.pipeline import PipelineConfig

SEED_TABLES_JOB = "seed_tables"
TRAIN_ADAPTERS_JOB = "train_adapters"
COST_FORECAST_JOB = "cost_forecast"


def corpus_job_name(source: str) -> str:
    return f"{source}_corpus"


def feedback_job_name(adapter: str, source: str) -> str:
    return f"{adapter}_{source}_feedback"


def distilled_training_job_name(adapter: str) -> str:
    return f"train_{adapter}"


def build_jobs(config: PipelineConfig) -> list:
    # With a forecast limit, every collecting run materializes the forecast first and stops at its failed check.
    gate = forecast_gate(config)
    jobs = [
        define_asset_job(
            COST_FORECAST_JOB,
            selection=AssetSelection.assets(COST_FORECAST_KEY),
            description="Forecast what every paid stage not yet paid for will cost; run it before a backfill.",
        ),
        define_asset_job(
            SEED_TABLES_JOB,
            selection=AssetSelection.assets(*(seed_key(s.name) for s in config.sources)),
            description="Read every seed source into its seed table.",
        ),
        define_asset_job(
            TRAIN_ADAPTERS_JOB,
            selection=AssetSelection.groups(BASE_MODELS_GROUP)
            | AssetSelection.assets(*(key for a in config.adapters for key in adapter_stage_keys(a.name))),
            description="Build the offline base model (if used) and train every adapter.",
        ),
    ]
    for source in config.sources:
        keys = [transcripts_key(source.name)] if source.is_self_chat else []
        rated = [conversation_ratings_key(source.name)] if config.corpus.judge_filter.enabled else []
        jobs.append(
            define_asset_job(
                corpus_job_name(source.name),
                selection=AssetSelection.assets(*(gate if keys or rated else []), *keys, conversations_key(source.name),
                                                *rated),
                description=f"Self-chat and corpus of one shard of '{source.name}' (partitioned by shard).",
            )
        )
    for plan in config.self_distillation:
        v1, v2 = plan.adapter, plan.adapter_name
        for source in config.adapter(v1).sources:
            jobs.append(
                define_asset_job(
                    feedback_job_name(v2, source),
                    selection=AssetSelection.assets(*gate, feedback_samples_key(v2, source),
                                                    feedback_scores_key(v2, source)),
                    description=f"Answers of '{v1}' to one shard of '{source}' and the teacher's scores of them.",
                )
            )
        jobs.append(
            define_asset_job(
                distilled_training_job_name(v2),
                selection=AssetSelection.assets(*adapter_stage_keys(v2)),
                description=f"Train and evaluate '{v2}' on the best-scored answers of '{v1}'.",
            )
        )
    return jobs
