"""``base_models/tiny_llama`` and ``adapters/<name>``: the base model and the LoRA adapters."""

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ..core import corpus
from ..core.config import AdapterConfig, PipelineConfig
from ..core.storage import read_parquet
from ..resources import BaizeStorage
from .keys import (
    ADAPTERS_GROUP,
    BASE_MODELS_GROUP,
    TINY_BASE_KEY,
    TRAINING_POOL,
    adapter_key,
    seed_key,
    training_set_key,
)
from .metadata import config_hash


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
        code_version=f"1-{config_hash(config.tiny_base)}",
    )
    def tiny_llama(context: AssetExecutionContext, storage: BaizeStorage) -> MaterializeResult:
        from ..core.tiny_base import build_tiny_base

        layout = storage.layout
        texts = pd.concat([read_parquet(layout.seeds(s.name))["seed"] for s in config.sources])
        summary = build_tiny_base(texts.tolist(), config.tiny_base, layout.tiny_base())
        return MaterializeResult(
            metadata={"path": MetadataValue.path(str(layout.tiny_base())), "summary": MetadataValue.json(summary)}
        )

    return tiny_llama


def build_adapter_asset(adapter: AdapterConfig, config: PipelineConfig) -> AssetsDefinition:
    deps = [training_set_key(adapter.name)] + ([TINY_BASE_KEY] if adapter.uses_tiny_base else [])

    @asset(
        key=adapter_key(adapter.name),
        deps=deps,
        group_name=ADAPTERS_GROUP,
        kinds={"pytorch"},
        pool=TRAINING_POOL,
        description=f"LoRA adapter '{adapter.name}' trained on the corpus of {', '.join(adapter.sources)}.",
        code_version=f"1-{config_hash(adapter)}",
    )
    def lora_adapter(context: AssetExecutionContext, storage: BaizeStorage) -> MaterializeResult:
        from ..core.training import train_adapter

        layout = storage.layout
        frame = read_parquet(layout.training_set(adapter.name))
        train, held_out = frame[frame["split"] == "train"], frame[frame["split"] == "eval"]
        data_version = corpus.data_version(frame)
        base = str(layout.tiny_base()) if adapter.uses_tiny_base else adapter.base_model
        context.log.info(
            f"training {adapter.name} on {len(train)} conversations, {len(held_out)} held out "
            f"(data {data_version}), from {base}"
        )
        summary = train_adapter(
            corpus.turns_of(train),
            adapter,
            base,
            layout.adapter(adapter.name),
            log=context.log.info,
            data_version=data_version,
            eval_conversations=corpus.turns_of(held_out),
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
