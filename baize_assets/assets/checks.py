"""Asset checks of the corpus shards and the training sets.

The schema/non-empty-turns check of every corpus partition is blocking: a run that
materializes a broken shard stops before the training set and the adapter.
"""

import pyarrow.parquet as pq
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    MetadataValue,
    asset_check,
)

from ..core import corpus
from ..core.config import PipelineConfig, SourceConfig
from ..core.storage import read_parquet
from ..resources import BaizeStorage
from .keys import conversations_key, shard_partitions, training_set_key


def _corpus_checks(source: SourceConfig, min_kept_ratio: float) -> list[AssetChecksDefinition]:
    @asset_check(
        asset=conversations_key(source.name),
        name="schema_and_nonempty_turns",
        partitions_def=shard_partitions(source),
        blocking=True,
        description="The shard's Parquet has the conversation schema and only complete, non-empty exchanges.",
    )
    def schema_and_nonempty_turns(context: AssetCheckExecutionContext, storage: BaizeStorage) -> AssetCheckResult:
        path = storage.layout.conversations(source.name, context.partition_key)
        if not path.exists():
            return AssetCheckResult(passed=False, description=f"{path} does not exist")
        problems = corpus.schema_problems(pq.read_table(path))
        return AssetCheckResult(
            passed=not problems,
            metadata={"path": MetadataValue.path(str(path)), "problems": MetadataValue.json(problems)},
            description="; ".join(problems[:3]) or None,
        )

    @asset_check(
        asset=conversations_key(source.name),
        name="kept_ratio",
        partitions_def=shard_partitions(source),
        description=f"At least {min_kept_ratio:.0%} of the shard's transcripts are kept (corpus.min_kept_ratio).",
    )
    def kept_ratio(context: AssetCheckExecutionContext, storage: BaizeStorage) -> AssetCheckResult:
        layout = storage.layout
        kept = len(read_parquet(layout.conversations(source.name, context.partition_key)))
        rejects = read_parquet(layout.rejects(source.name, context.partition_key))
        total = kept + len(rejects)
        ratio = kept / total if total else 0.0
        return AssetCheckResult(
            passed=ratio >= min_kept_ratio,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "kept_ratio": round(ratio, 4),
                "floor": min_kept_ratio,
                "top_reasons": MetadataValue.json(rejects["reason"].value_counts().head(5).astype(int).to_dict()),
            },
        )

    return [schema_and_nonempty_turns, kept_ratio]


def _duplicates_check(adapter: str, max_rate: float) -> AssetChecksDefinition:
    @asset_check(
        asset=training_set_key(adapter),
        name="duplicates_rate",
        description=f"Share of the adapter's corpus dropped as exact or near duplicates; warns above {max_rate:.0%}.",
    )
    def duplicates_rate(storage: BaizeStorage) -> AssetCheckResult:
        layout = storage.layout
        kept = len(read_parquet(layout.training_set(adapter)))
        duplicates = read_parquet(layout.training_set_duplicates(adapter))
        total = kept + len(duplicates)
        rate = len(duplicates) / total if total else 0.0
        return AssetCheckResult(
            passed=rate <= max_rate,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "duplicates_rate": round(rate, 4),
                "by_reason": MetadataValue.json(duplicates["reason"].value_counts().astype(int).to_dict()),
            },
        )

    return duplicates_rate


def build_asset_checks(config: PipelineConfig) -> list[AssetChecksDefinition]:
    floor = config.corpus.min_kept_ratio
    checks = [check for source in config.sources for check in _corpus_checks(source, floor)]
    checks += [_duplicates_check(adapter.name, 1.0 - floor) for adapter in config.adapters]
    return checks
