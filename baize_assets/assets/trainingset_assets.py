"""``<adapter>/training_set``: every corpus shard of an adapter's sources, deduplicated and split."""

from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, DataVersion, MaterializeResult, MetadataValue, asset

from ..core.config.pipeline import AdapterConfig, PipelineConfig, SourceConfig
from ..core.corpus import chat_dataset, judge_filter, report, trainingset
from ..core.corpus.schema import data_version
from ..core.costs.actuals import data_cost, with_data_cost
from ..core.plots_markdown import plots_markdown
from ..core.storage import Layout, read_parquet, shard_keys, write_parquet_atomic
from ..resources import BaizeStorage
from .corpus_assets import read_rejects
from .keys import conversation_ratings_key, conversations_key, training_set_key
from .metadata import active_settings, settings_hash, table_metadata


def training_set_settings(adapter: AdapterConfig, config: PipelineConfig) -> dict:
    """Every setting the written set reads: its split, its dedup, and what its dataset card says."""
    sources = [config.source(name) for name in adapter.sources]
    teacher = config.teacher
    self_chatted = any(s.is_self_chat for s in sources)
    return {
        "eval_size": adapter.training.eval_size,
        "near_dedup": active_settings(config.corpus.near_dedup.model_dump(mode="json")),
        "sources": [[s.name, s.domain, s.format, s.language, s.is_self_chat] for s in sources],
        "judge_filter": active_settings(config.corpus.judge_filter.model_dump(mode="json")),
        # The card names the teacher only when a source was self-chatted.
        "teacher": [teacher.model, teacher.mode, teacher.temperature, teacher.max_rounds] if self_chatted else None,
    }


def _read_shards(layout: Layout, adapter: AdapterConfig, sources: list[SourceConfig]) -> pd.DataFrame:
    """Every corpus shard of the adapter's sources, in one frame; all of them must exist."""
    paths = [layout.conversations(s.name, shard) for s in sources for shard in shard_keys(s.shards)]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"training set '{adapter.name}' needs every corpus shard of its sources; missing: {', '.join(missing)}"
        )
    return pd.concat([read_parquet(p) for p in paths], ignore_index=True)


def _judge_filtered(layout: Layout, sources: list[SourceConfig], shards: pd.DataFrame,
                    min_score: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The conversations the judge rated at ``min_score`` or more (or could not rate), and the others as rejects."""
    ratings = pd.concat([read_parquet(layout.conversation_ratings(s.name, shard), columns=["seed_id", "score"])
                         for s in sources
                         for shard in shard_keys(s.shards)], ignore_index=True)
    below = judge_filter.rated_below(shards, ratings, min_score)
    dropped = shards.loc[below, ["seed_id", "source"]].assign(reason=judge_filter.JUDGE_SCORE)
    return shards[~below].reset_index(drop=True), dropped


def _write_chat_dataset(
    built: trainingset.TrainingSet,
    path: Path,
    adapter: AdapterConfig,
    sources: list[SourceConfig],
    config: PipelineConfig,
    dropped: pd.DataFrame,
    version: str,
) -> Path:
    """The set as chat messages beside it, with a dataset card; returns its folder."""
    by_reason = built.duplicates.groupby("reason").size()
    chat_path = chat_dataset.chat_dir(path)
    chat_dataset.write_chat_dataset(
        built.conversations,
        chat_path,
        chat_dataset.Provenance(
            name=adapter.name,
            sources=sources,
            teacher=config.teacher,
            data_version=version,
            eval_size=adapter.training.eval_size,
            exact_duplicates=int(by_reason.get(trainingset.EXACT_DUPLICATE, 0)),
            near_duplicates=int(by_reason.get(trainingset.NEAR_DUPLICATE, 0)),
            dropped_by_reason=dropped.groupby("reason").size().astype(int).to_dict(),
        ),
    )
    return chat_path


def build_training_set_asset(adapter: AdapterConfig, config: PipelineConfig) -> AssetsDefinition:
    sources = [config.source(name) for name in adapter.sources]
    near = config.corpus.near_dedup
    judge_filter_on = config.corpus.judge_filter.enabled
    ratings = [conversation_ratings_key(s.name) for s in sources] if judge_filter_on else []

    @asset(
        key=training_set_key(adapter.name),
        deps=[*(conversations_key(s.name) for s in sources), *ratings],
        group_name=adapter.name,
        kinds={"parquet"},
        description=(
            f"Training set of adapter '{adapter.name}': the corpus shards of {', '.join(adapter.sources)}, "
            "exact and near (MinHash LSH) duplicates removed across all of them, with a stable train/eval split; "
            "also written as chat messages, one Parquet file per split with a dataset card, for other tools."
        ),
        code_version=f"4-{settings_hash(training_set_settings(adapter, config))}",
    )
    def training_set(context: AssetExecutionContext, storage: BaizeStorage) -> MaterializeResult:
        layout = storage.layout
        shards = _read_shards(layout, adapter, sources)
        judged_out = pd.DataFrame(columns=["seed_id", "source", "reason"])
        if judge_filter_on:
            shards, judged_out = _judge_filtered(layout, sources, shards, config.corpus.judge_filter.min_score)
        built = trainingset.build_training_set(shards, adapter.training.eval_size, near)
        if built.recomputed_signatures:
            context.log.warning(
                f"{built.recomputed_signatures} conversations had no MinHash signature of the configured scheme; "
                "recomputed them (rematerialize the corpus shards to store them)"
            )
        write_parquet_atomic(
            built.duplicates, layout.training_set_duplicates(adapter.name), trainingset.DUPLICATE_SCHEMA
        )
        cost = data_cost([shard_spend(layout, s, shard) for s in sources if s.is_self_chat
                          for shard in shard_keys(s.shards)], len(built.conversations))
        path = write_parquet_atomic(
            built.conversations, layout.training_set(adapter.name),
            with_data_cost(trainingset.TRAINING_SET_SCHEMA, cost),
        )
        kept = built.conversations
        corpus_rejects = read_rejects(
            [layout.rejects(s.name, shard) for s in sources for shard in shard_keys(s.shards)]
        )
        dropped = pd.concat([corpus_rejects[["source", "reason"]], judged_out[["source", "reason"]],
                             built.duplicates[["source", "reason"]]])
        reasons = report.reason_table(kept.groupby("source").size(), dropped)
        plots = report.plot_distributions(kept, layout.training_set_report(adapter.name)) if len(kept) else {}
        by_reason = built.duplicates.groupby("reason").size()
        version = data_version(kept)
        chat_path = _write_chat_dataset(built, path, adapter, sources, config, dropped, version)
        return MaterializeResult(
            metadata={
                **table_metadata(kept, path, trainingset.TRAINING_SET_SCHEMA),
                "train": int((kept["split"] == "train").sum()),
                "eval": int((kept["split"] == "eval").sum()),
                "duplicates_dropped": len(built.duplicates),
                **({"judge_filter_dropped": len(judged_out)} if judge_filter_on else {}),
                "exact_duplicates": int(by_reason.get(trainingset.EXACT_DUPLICATE, 0)),
                "near_duplicates": int(by_reason.get(trainingset.NEAR_DUPLICATE, 0)),
                "duplicates_rate": round(len(built.duplicates) / len(shards), 4) if len(shards) else 0.0,
                "conversations_by_source": MetadataValue.json(kept.groupby("source").size().astype(int).to_dict()),
                "data_version": version,
                "chat_dataset_path": MetadataValue.path(str(chat_path)),
                "duplicates_path": MetadataValue.path(str(layout.training_set_duplicates(adapter.name))),
                "report": MetadataValue.md(
                    report.markdown_report(kept, reasons, plots, f"training set {adapter.name}")
                ),
                "plots": MetadataValue.md(plots_markdown(plots)),
                **{f"plot_{name}": MetadataValue.path(str(p)) for name, p in plots.items()},
                **({} if cost.dollars is None else {
                    "data_dollars": round(cost.dollars, 6),
                    "data_dollars_per_conversation": round(cost.per_conversation or 0.0, 8),
                }),
            },
            data_version=DataVersion(version),
        )

    return training_set


def shard_spend(layout: Layout, source: SourceConfig, shard: str) -> float | None:
    """What one transcripts shard cost (every row, failures included); None when no row was priced or the
    corpus shard was not made from transcripts here."""
    path = layout.transcripts(source.name, shard)
    if not path.exists():
        return None
    dollars = read_parquet(path, columns=["dollars"])["dollars"]
    return float(dollars.sum()) if dollars.notna().any() else None
