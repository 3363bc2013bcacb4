"""``<source>/conversations`` [shard]: the parsed, filtered corpus and its rejects."""

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ..core.config.pipeline import CorpusConfig, PipelineConfig, SourceConfig
from ..core.corpus import build as corpus, filter_quality, report
from ..core.corpus.schema import CONVERSATION_SCHEMA, REJECT_SCHEMA, data_version
from ..core.costs.actuals import ShardCost, shard_cost
from ..core.plots_markdown import plots_markdown
from ..core.prompts import CHAT_FORMAT_VERSION
from ..core.storage import read_parquet, write_parquet_atomic
from ..resources import BaizeStorage
from .keys import conversations_key, seed_key, shard_partitions, transcripts_key
from .metadata import active_settings, settings_hash, table_metadata

# Settings that only judge or report a shard, never change the conversations and rejects it writes:
# min_kept_ratio is the floor of the kept-ratio check; near_dedup.threshold is applied across shards by
# the training set (a shard stores MinHash signatures, whose scheme the other near_dedup fields name);
# real_text_quality adds the real-text figures to the report; the judge filter rates the kept conversations
# and is applied by the training set.
CHECK_ONLY_SETTINGS = {"min_kept_ratio": True, "near_dedup": {"threshold"}, "real_text_quality": True,
                       "judge_filter": True}
# A single-turn source's pairs are not parsed from transcripts, and the voice check is for self-chat only.
SELF_CHAT_ONLY_SETTINGS = ("role_confusion", "truncated", "unfinished_turns", "role_voice")


def corpus_output_settings(settings: CorpusConfig, source: SourceConfig) -> dict:
    """The corpus settings that change what a shard of ``source`` keeps, rejects or rewrites."""
    excluded: dict = dict(CHECK_ONLY_SETTINGS)
    if source.language is None:
        excluded["language"] = True  # the language filter runs only for a declared language
    if not source.is_self_chat:
        excluded.update(dict.fromkeys(SELF_CHAT_ONLY_SETTINGS, True))
    return active_settings(settings.model_dump(mode="json", exclude=excluded))


def build_conversations_asset(source: SourceConfig, config: PipelineConfig) -> AssetsDefinition:
    upstream = transcripts_key(source.name) if source.is_self_chat else seed_key(source.name)
    settings = config.corpus

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
        # The corpus holds each conversation's training text, so the chat format is part of it.
        code_version=(
            f"{corpus.CORPUS_LOGIC_VERSION}-{CHAT_FORMAT_VERSION}-"
            f"{settings_hash(corpus_output_settings(settings, source))}-{source.language}"
        ),
    )
    def conversations(context: AssetExecutionContext, storage: BaizeStorage) -> MaterializeResult:
        layout = storage.layout
        shard = int(context.partition_key)
        costs = {}
        if source.is_self_chat:
            transcripts = read_parquet(layout.transcripts(source.name, shard))
            built = corpus.build_corpus(transcripts, settings, source.language)
            costs = shard_cost_metadata(shard_cost(transcripts, built.conversations["seed_id"], built.rejects))
        else:
            built = corpus.single_turn_corpus(read_parquet(layout.seeds(source.name), shard), settings, source.language)
        # Rejects first: a failure between the two writes leaves the old corpus in place.
        write_parquet_atomic(built.rejects, layout.rejects(source.name, shard), REJECT_SCHEMA)
        path = write_parquet_atomic(
            built.conversations, layout.conversations(source.name, shard), CONVERSATION_SCHEMA
        )
        kept = built.conversations
        total = len(kept) + len(built.rejects)
        reasons = report.reason_table(kept.groupby("source").size(), built.rejects)
        plots = report.plot_distributions(kept, layout.corpus_report(source.name, shard)) if len(kept) else {}
        return MaterializeResult(
            metadata={
                **table_metadata(kept, path, CONVERSATION_SCHEMA),
                "rejected": len(built.rejects),
                "rejects_by_reason": MetadataValue.json(built.reason_counts()),
                "trims_and_scrubs": MetadataValue.json(built.adjustment_counts()),
                "kept_ratio": round(len(kept) / total, 4) if total else 0.0,
                "avg_exchanges": round(float(kept["n_exchanges"].mean()), 2) if len(kept) else 0.0,
                "rejects_path": MetadataValue.path(str(layout.rejects(source.name, shard))),
                "report": MetadataValue.md(
                    report.markdown_report(
                        kept, reasons, plots, f"{source.name} shard {shard}",
                        filter_quality=filter_quality.quality_table(settings),
                    )  # fmt: skip
                ),
                "plots": MetadataValue.md(plots_markdown(plots)),
                **{f"plot_{name}": MetadataValue.path(str(p)) for name, p in plots.items()},
                **costs,
            },
            data_version=DataVersion(data_version(kept)),
        )

    return conversations


def shard_cost_metadata(cost: ShardCost) -> dict:
    """What a shard's conversations cost, numeric so the UI plots it per partition over runs."""
    if cost.spent_dollars is None:
        return {}
    return {
        "spend_dollars": round(cost.spent_dollars, 6),
        "dollars_per_kept_conversation": round(cost.dollars_per_kept or 0.0, 8),
        "dollars_lost_by_reason": MetadataValue.json(cost.lost_by_reason),
    }


def read_rejects(paths) -> pd.DataFrame:
    frames = [read_parquet(p) for p in paths if p.exists()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=REJECT_SCHEMA.names)
