"""Asset keys, groups and the shard partitioning: one place, used by every asset module."""

from dagster import AssetKey, StaticPartitionsDefinition

from ..core.config.pipeline import SourceConfig
from ..core.storage import shard_keys

BASE_MODELS_GROUP = "base_models"
TRAINING_SETS_GROUP = "training_sets"
ADAPTERS_GROUP = "adapters"
SELF_DISTILLATION_GROUP = "self_distillation"
TINY_BASE_KEY = AssetKey(["base_models", "tiny_llama"])
# Concurrency pools (limits live in the Dagster instance): teacher calls share the
# endpoint's rate limit across runs, training steps share the accelerator.
TEACHER_API_POOL = "teacher_api"
TRAINING_POOL = "training"


def seed_key(source: str) -> AssetKey:
    return AssetKey([source, "seed_questions"])


def transcripts_key(source: str) -> AssetKey:
    return AssetKey([source, "transcripts"])


def conversations_key(source: str) -> AssetKey:
    return AssetKey([source, "conversations"])


def training_set_key(adapter: str) -> AssetKey:
    return AssetKey(["training_sets", adapter])


def adapter_key(adapter: str) -> AssetKey:
    return AssetKey(["adapters", adapter])


def feedback_samples_key(adapter: str, source: str) -> AssetKey:
    """The answers ``adapter`` sampled for ``source``'s seeds (the node reads ``<source>_samples``)."""
    return AssetKey(["feedback", adapter, f"{source}_samples"])


def feedback_scores_key(adapter: str, source: str) -> AssetKey:
    return AssetKey(["feedback", adapter, f"{source}_scores"])


def evaluation_key(adapter: str) -> AssetKey:
    return AssetKey(["evaluations", adapter])


def shard_partitions(source: SourceConfig) -> StaticPartitionsDefinition:
    """One partition per shard: a shard is the unit a backfill redoes alone."""
    return StaticPartitionsDefinition(shard_keys(source.shards))
