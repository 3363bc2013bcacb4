"""Jobs: named slices of the graph that a schedule, a script or a person launches."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from .assets import (
    ADAPTERS_GROUP,
    BASE_MODELS_GROUP,
    TRAINING_SETS_GROUP,
    conversations_key,
    seed_key,
    transcripts_key,
)
from .core.config import PipelineConfig

SEED_TABLES_JOB = "seed_tables"
TRAIN_ADAPTERS_JOB = "train_adapters"


def corpus_job_name(source: str) -> str:
    return f"{source}_corpus"


def build_jobs(config: PipelineConfig) -> list:
    jobs = [
        define_asset_job(
            SEED_TABLES_JOB,
            selection=AssetSelection.assets(*(seed_key(s.name) for s in config.sources)),
            description="Read every seed source into its seed table.",
        ),
        define_asset_job(
            TRAIN_ADAPTERS_JOB,
            selection=AssetSelection.groups(BASE_MODELS_GROUP, TRAINING_SETS_GROUP, ADAPTERS_GROUP),
            description="Build the offline base model (if used) and train every adapter.",
        ),
    ]
    for source in config.sources:
        keys = [transcripts_key(source.name)] if source.is_self_chat else []
        jobs.append(
            define_asset_job(
                corpus_job_name(source.name),
                selection=AssetSelection.assets(*keys, conversations_key(source.name)),
                description=f"Self-chat and corpus of one shard of '{source.name}' (partitioned by shard).",
            )
        )
    return jobs
