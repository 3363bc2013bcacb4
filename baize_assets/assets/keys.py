"""Asset keys, groups and the shard partitioning: one place, used by every asset module."""

from dagster import AssetKey, StaticPartitionsDefinition

from ..core.config.pipeline import BASE_MODELS_OWNER, BUILTIN_BASES, COSTS_OWNER, TINY_BASE_MODEL, SourceConfig
from ..core.storage import shard_keys

# Every key is <owner>/<what it is>, and the owner (a source, an adapter, the base models)
# is the key's group: the lineage view draws one box per owner, and each node's label (the
# last part of its key) says what the node is: seed_questions, training_set, adapter, ...
BASE_MODELS_GROUP = BASE_MODELS_OWNER


def base_model_key(name: str) -> AssetKey:
    """The asset of a built-in base model, by its name (``tiny_llama``, ``smollm2_135m_instruct``)."""
    return AssetKey([BASE_MODELS_GROUP, name])


TINY_BASE_KEY = base_model_key(BUILTIN_BASES[TINY_BASE_MODEL])
# What the paid stages will cost, before they run.
COSTS_GROUP = COSTS_OWNER
COST_FORECAST_KEY = AssetKey([COSTS_GROUP, "forecast"])
# Concurrency pools (limits live in the Dagster instance): teacher calls share the
# endpoint's rate limit across runs; every step that loads a model (building a base,
# training, sampling, evaluating and the judge's answers) shares the accelerator, one at a
# time unless the instance raises the pool's limit.
TEACHER_API_POOL = "teacher_api"
GPU_POOL = "gpu"


def seed_key(source: str) -> AssetKey:
    return AssetKey([source, "seed_questions"])


def transcripts_key(source: str) -> AssetKey:
    return AssetKey([source, "transcripts"])


def conversations_key(source: str) -> AssetKey:
    return AssetKey([source, "conversations"])


def conversation_ratings_key(source: str) -> AssetKey:
    """The judge filter's ratings of a source's kept conversations (opt-in)."""
    return AssetKey([source, "conversation_ratings"])


def training_set_key(adapter: str) -> AssetKey:
    return AssetKey([adapter, "training_set"])


def adapter_key(adapter: str) -> AssetKey:
    return AssetKey([adapter, "adapter"])


def evaluation_key(adapter: str) -> AssetKey:
    return AssetKey([adapter, "evaluation"])


def feedback_samples_key(distilled: str, source: str) -> AssetKey:
    """The v1 answers to ``source``'s seeds that the Baize v2 adapter ``distilled`` learns from.

    Owned by v2, not v1, so two v2 adapters of one v1 (say SFT and DPO) never share a key.
    """
    return AssetKey([distilled, f"{source}_samples"])


def feedback_scores_key(distilled: str, source: str) -> AssetKey:
    return AssetKey([distilled, f"{source}_scores"])


def adapter_stage_keys(adapter: str) -> list[AssetKey]:
    """An adapter's own chain: its training set, the adapter, its evaluation."""
    return [training_set_key(adapter), adapter_key(adapter), evaluation_key(adapter)]


def shard_partitions(source: SourceConfig) -> StaticPartitionsDefinition:
    """One partition per shard: a shard is the unit a backfill redoes alone."""
    return StaticPartitionsDefinition(shard_keys(source.shards))
