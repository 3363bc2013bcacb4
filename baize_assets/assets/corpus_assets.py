"""``<source>/conversations`` [shard]: the parsed, filtered corpus and its rejects."""

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ..core import corpus
from ..core.config import SourceConfig
from ..core.storage import read_parquet, write_parquet_atomic
from ..resources import BaizeStorage
from .keys import conversations_key, seed_key, shard_partitions, transcripts_key
from .metadata import preview, table_metadata


def build_conversations_asset(source: SourceConfig) -> AssetsDefinition:
    upstream = transcripts_key(source.name) if source.is_self_chat else seed_key(source.name)

    @asset(
        key=conversations_key(source.name),
        deps=[upstream],
        partitions_def=shard_partitions(source),
        group_name=source.name,
        kinds={"parquet"},
        description=(
            f"Parsed and filtered conversations of '{source.name}' with their Baize training text; "
            "every dropped transcript is in the rejects table with its reason."
        ),
        code_version=corpus.CORPUS_LOGIC_VERSION,
    )
    def conversations(context: AssetExecutionContext, storage: BaizeStorage) -> MaterializeResult:
        layout = storage.layout
        shard = int(context.partition_key)
        if source.is_self_chat:
            built = corpus.build_corpus(read_parquet(layout.transcripts(source.name, shard)))
        else:
            all_seeds = read_parquet(layout.seeds(source.name))
            built = corpus.single_turn_corpus(all_seeds[all_seeds["shard"] == shard])
        # Rejects first: a failure between the two writes leaves the old corpus in place.
        write_parquet_atomic(built.rejects, layout.rejects(source.name, shard), corpus.REJECT_SCHEMA)
        path = write_parquet_atomic(
            built.conversations, layout.conversations(source.name, shard), corpus.CONVERSATION_SCHEMA
        )
        total = len(built.conversations) + len(built.rejects)
        kept = built.conversations
        return MaterializeResult(
            metadata={
                **table_metadata(kept, path, corpus.CONVERSATION_SCHEMA),
                "rejected": len(built.rejects),
                "rejects_by_reason": MetadataValue.json(built.reason_counts()),
                "kept_ratio": round(len(kept) / total, 4) if total else 0.0,
                "avg_exchanges": round(float(kept["n_exchanges"].mean()), 2) if len(kept) else 0.0,
                "rejects_path": MetadataValue.path(str(layout.rejects(source.name, shard))),
                "preview": preview(kept, ["seed", "n_exchanges", "text"]),
            }
        )

    return conversations
