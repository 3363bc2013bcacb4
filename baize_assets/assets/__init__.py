"""The Baize asset graph, built from the configuration.

Thin wiring only: each asset reads its inputs from the storage layout, calls a plain
module under ``core/`` and records what it wrote. Per source::

    <source>/seed_questions -> <source>/transcripts [shard] -> <source>/conversations [shard]
                                                 (-> <source>/conversation_ratings [shard], the judge filter)

(single-turn sources such as Alpaca skip the transcripts), and per adapter::

    <source>/conversations [all shards] ... -> <name>/training_set -> <name>/adapter -> <name>/evaluation
                                                                        ^ base_models/<name> (built-in bases)

and per ``self_distillation`` entry (Baize v2), see :mod:`.feedback_assets`::

    <v1>/adapter -> <v1>/<source>_samples [shard] -> <v1>/<source>_scores [shard]
        -> <v2>/training_set -> <v2>/adapter -> <v2>/evaluation

and ``costs/forecast``, what the paid stages not yet paid for will cost (:mod:`.cost_assets`).
Every key is ``<owner>/<what it is>`` and the owner is its group (see :mod:`.keys`).
"""

from dagster import AssetsDefinition

from ..core.config.pipeline import PipelineConfig
from .adapter_assets import build_adapter_asset
from .base_model_assets import build_base_model_assets
from .checks import build_asset_checks
from .corpus_assets import build_conversations_asset
from .cost_assets import build_cost_forecast_asset, forecast_gate
from .evaluation_assets import BEATS_BASE_CHECK, build_evaluation_assets
from .feedback_assets import build_self_distillation_assets
from .keys import (
    BASE_MODELS_GROUP,
    COST_FORECAST_KEY,
    TINY_BASE_KEY,
    adapter_key,
    adapter_stage_keys,
    conversation_ratings_key,
    conversations_key,
    evaluation_key,
    feedback_samples_key,
    feedback_scores_key,
    seed_key,
    shard_partitions,
    training_set_key,
    transcripts_key,
)
from .rating_assets import build_ratings_asset
from .seed_assets import build_seed_asset
from .trainingset_assets import build_training_set_asset
from .transcript_assets import build_transcripts_asset

__all__ = [
    "BASE_MODELS_GROUP",
    "COST_FORECAST_KEY",
    "forecast_gate",
    "TINY_BASE_KEY",
    "BEATS_BASE_CHECK",
    "adapter_key",
    "adapter_stage_keys",
    "evaluation_key",
    "feedback_samples_key",
    "feedback_scores_key",
    "build_asset_checks",
    "build_assets",
    "conversation_ratings_key",
    "conversations_key",
    "seed_key",
    "shard_partitions",
    "training_set_key",
    "transcripts_key",
]


def build_assets(config: PipelineConfig) -> list[AssetsDefinition]:
    built: list[AssetsDefinition] = [build_cost_forecast_asset(config)]
    for source in config.sources:
        built.append(build_seed_asset(source))
        if source.is_self_chat:
            built.append(build_transcripts_asset(source, config))
        built.append(build_conversations_asset(source, config))
        if config.corpus.judge_filter.enabled:
            built.append(build_ratings_asset(source, config))
    built.extend(build_base_model_assets(config))
    for adapter in config.adapters:
        built.append(build_training_set_asset(adapter, config))
        built.append(build_adapter_asset(adapter, config))
    built.extend(build_evaluation_assets(config))
    built.extend(build_self_distillation_assets(config))
    return built
