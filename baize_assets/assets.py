"""The Baize asset graph, built from the configuration.

Thin wiring only: each asset reads its inputs from the storage layout, calls a plain
module under ``core/`` and records what it wrote. Per source::

    <source>/seed_questions -> <source>/transcripts [shard] -> <source>/conversations [shard]

(single-turn sources such as Alpaca skip the transcripts), and per adapter::

    base_models/tiny_llama, <source>/conversations [all shards] ... -> adapters/<name>
"""


import hashlib
import json

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    TableColumn,
    TableSchema,
    asset,
)
from dagster_openai import OpenAIResource

from .core import corpus, seeds, selfchat
from .core.config import AdapterConfig, PipelineConfig, SourceConfig
from .core.prompts import SELF_CHAT_PROMPT_VERSION
from .core.storage import read_parquet, shard_keys, write_parquet_atomic
from .resources import BaizeStorage

BASE_MODELS_GROUP = "base_models"
ADAPTERS_GROUP = "adapters"
TINY_BASE_KEY = AssetKey(["base_models", "tiny_llama"])


def seed_key(source: str) -> AssetKey:
    return AssetKey([source, "seed_questions"])


def transcripts_key(source: str) -> AssetKey:
    return AssetKey([source, "transcripts"])


def conversations_key(source: str) -> AssetKey:
    return AssetKey([source, "conversations"])


def adapter_key(adapter: str) -> AssetKey:
    return AssetKey(["adapters", adapter])


def shard_partitions(source: SourceConfig) -> StaticPartitionsDefinition:
    """One partition per shard: a shard is the unit a backfill redoes alone."""
    return StaticPartitionsDefinition(shard_keys(source.shards))


def _config_hash(*models) -> str:
    payload = json.dumps([m.model_dump(mode="json") for m in models], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def _table_metadata(frame: pd.DataFrame, path, schema) -> dict:
    return {
        "dagster/row_count": len(frame),
        "dagster/column_schema": TableSchema(columns=[TableColumn(f.name, str(f.type)) for f in schema]),
        "path": MetadataValue.path(str(path)),
    }


def _preview(frame: pd.DataFrame, columns: list[str], rows: int = 5) -> MetadataValue:
    shown = frame[columns].head(rows).astype(str).map(lambda s: s if len(s) < 120 else s[:117] + "...")
    return MetadataValue.md(shown.to_markdown(index=False) if len(shown) else "_empty_")


def build_seed_asset(source: SourceConfig) -> AssetsDefinition:
    @asset(
        key=seed_key(source.name),
        group_name=source.name,
        kinds={"parquet"},
        description=f"Seed questions of '{source.name}' ({source.format}), normalized, deduplicated and sharded.",
        code_version="1",
    )
    def seed_questions(context: AssetExecutionContext, storage: BaizeStorage) -> MaterializeResult:
        table = seeds.load_seed_table(source)
        layout = storage.layout
        path = write_parquet_atomic(table.seeds, layout.seeds(source.name), seeds.SEED_SCHEMA)
        write_parquet_atomic(table.quarantine, layout.seed_quarantine(source.name), seeds.QUARANTINE_SCHEMA)
        if len(table.quarantine):
            context.log.warning(
                f"{len(table.quarantine)} rows quarantined, e.g. {table.quarantine.iloc[0]['origin']}: "
                f"{table.quarantine.iloc[0]['reason']}"
            )
        per_shard = table.seeds["shard"].value_counts().sort_index()
        return MaterializeResult(
            metadata={
                **_table_metadata(table.seeds, path, seeds.SEED_SCHEMA),
                "rows_read": table.rows_read,
                "quarantined_rows": len(table.quarantine),
                "duplicates_dropped": table.duplicates_dropped,
                "seeds_per_shard": MetadataValue.json({str(k): int(v) for k, v in per_shard.items()}),
                "preview": _preview(table.seeds, ["seed_id", "shard", "seed"]),
            }
        )

    return seed_questions


def build_transcripts_asset(source: SourceConfig, config: PipelineConfig) -> AssetsDefinition:
    teacher = config.teacher

    @asset(
        key=transcripts_key(source.name),
        deps=[seed_key(source.name)],
        partitions_def=shard_partitions(source),
        group_name=source.name,
        kinds={"openai", "parquet"},
        description=(
            f"Raw self-chat transcripts of '{source.name}', one teacher call per seed (Baize v1 prompt), "
            "with model, finish reason, token usage and any failure per seed."
        ),
        code_version=f"{SELF_CHAT_PROMPT_VERSION}-{_config_hash(teacher)}",
    )
    def transcripts(context: AssetExecutionContext, storage: BaizeStorage, openai: OpenAIResource) -> MaterializeResult:
        layout = storage.layout
        shard = int(context.partition_key)
        all_seeds = read_parquet(layout.seeds(source.name))
        shard_seeds = all_seeds[all_seeds["shard"] == shard]
        context.log.info(f"self-chat for {len(shard_seeds)} seeds of {source.name} shard {shard} with {teacher.model}")
        result = selfchat.collect_transcripts(
            shard_seeds, teacher, api_key=openai.api_key, base_url=openai.base_url, log=context.log.info
        )
        path = write_parquet_atomic(
            result.transcripts, layout.transcripts(source.name, shard), selfchat.TRANSCRIPT_SCHEMA
        )
        return MaterializeResult(
            metadata={
                **_table_metadata(result.transcripts, path, selfchat.TRANSCRIPT_SCHEMA),
                **result.usage.as_metadata(),
                "failed_seeds": sum(result.failures.values()),
                "failures_by_kind": MetadataValue.json(dict(result.failures)),
                "seconds": round(result.seconds, 2),
                "model": teacher.model,
                "prompt_version": SELF_CHAT_PROMPT_VERSION,
            }
        )

    return transcripts


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
                **_table_metadata(kept, path, corpus.CONVERSATION_SCHEMA),
                "rejected": len(built.rejects),
                "rejects_by_reason": MetadataValue.json(built.reason_counts()),
                "kept_ratio": round(len(kept) / total, 4) if total else 0.0,
                "avg_exchanges": round(float(kept["n_exchanges"].mean()), 2) if len(kept) else 0.0,
                "rejects_path": MetadataValue.path(str(layout.rejects(source.name, shard))),
                "preview": _preview(kept, ["seed", "n_exchanges", "text"]),
            }
        )

    return conversations


def build_tiny_base_asset(config: PipelineConfig) -> AssetsDefinition:
    @asset(
        key=TINY_BASE_KEY,
        deps=[seed_key(s.name) for s in config.sources],
        group_name=BASE_MODELS_GROUP,
        kinds={"pytorch"},
        description=(
            "Offline default base model: a tiny Llama built from a config with a BPE tokenizer "
            "trained on the seed texts. No download; a real adapter names a hub id or path instead."
        ),
        code_version=f"1-{_config_hash(config.tiny_base)}",
    )
    def tiny_llama(context: AssetExecutionContext, storage: BaizeStorage) -> MaterializeResult:
        from .core.tiny_base import build_tiny_base

        layout = storage.layout
        texts = pd.concat([read_parquet(layout.seeds(s.name))["seed"] for s in config.sources])
        summary = build_tiny_base(texts.tolist(), config.tiny_base, layout.tiny_base())
        return MaterializeResult(
            metadata={"path": MetadataValue.path(str(layout.tiny_base())), "summary": MetadataValue.json(summary)}
        )

    return tiny_llama


def build_adapter_asset(adapter: AdapterConfig, config: PipelineConfig) -> AssetsDefinition:
    sources = [config.source(name) for name in adapter.sources]
    deps = [conversations_key(s.name) for s in sources] + ([TINY_BASE_KEY] if adapter.uses_tiny_base else [])

    @asset(
        key=adapter_key(adapter.name),
        deps=deps,
        group_name=ADAPTERS_GROUP,
        kinds={"pytorch"},
        description=f"LoRA adapter '{adapter.name}' trained on the corpus of {', '.join(adapter.sources)}.",
        code_version=f"1-{_config_hash(adapter)}",
    )
    def lora_adapter(context: AssetExecutionContext, storage: BaizeStorage) -> MaterializeResult:
        from .core.training import train_adapter

        layout = storage.layout
        missing = [
            str(layout.conversations(s.name, shard))
            for s in sources
            for shard in shard_keys(s.shards)
            if not layout.conversations(s.name, shard).exists()
        ]
        if missing:
            raise FileNotFoundError(
                f"adapter '{adapter.name}' needs every corpus shard of its sources; missing: {', '.join(missing)}"
            )
        frame = pd.concat(
            [read_parquet(layout.conversations(s.name, shard)) for s in sources for shard in shard_keys(s.shards)],
            ignore_index=True,
        )
        data_version = corpus.data_version(frame)
        base = str(layout.tiny_base()) if adapter.uses_tiny_base else adapter.base_model
        context.log.info(f"training {adapter.name} on {len(frame)} conversations (data {data_version}) from {base}")
        summary = train_adapter(
            corpus.turns_of(frame), adapter, base, layout.adapter(adapter.name),
            log=context.log.info, data_version=data_version,
        )
        return MaterializeResult(
            metadata={
                "path": MetadataValue.path(str(layout.adapter(adapter.name))),
                "conversations": len(frame),
                "data_version": data_version,
                "eval_loss": summary.get("eval_loss_after"),
                "base_eval_loss": summary.get("eval_loss_before"),
                "summary": MetadataValue.json(summary),
            }
        )

    return lora_adapter


def build_assets(config: PipelineConfig) -> list[AssetsDefinition]:
    built: list[AssetsDefinition] = []
    for source in config.sources:
        built.append(build_seed_asset(source))
        if source.is_self_chat:
            built.append(build_transcripts_asset(source, config))
        built.append(build_conversations_asset(source))
    if any(a.uses_tiny_base for a in config.adapters):
        built.append(build_tiny_base_asset(config))
    built.extend(build_adapter_asset(adapter, config) for adapter in config.adapters)
    return built
