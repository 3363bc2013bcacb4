"""``training_sets/<adapter>``: every corpus shard of an adapter's sources, deduplicated and split."""

import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, MaterializeResult, MetadataValue, asset

from ..core import corpus, trainingset
from ..core.config import AdapterConfig, PipelineConfig
from ..core.storage import read_parquet, shard_keys, write_parquet_atomic
from ..resources import BaizeStorage
from .keys import TRAINING_SETS_GROUP, conversations_key, training_set_key
from .metadata import table_metadata


def build_training_set_asset(adapter: AdapterConfig, config: PipelineConfig) -> AssetsDefinition:
    sources = [config.source(name) for name in adapter.sources]

    @asset(
        key=training_set_key(adapter.name),
        deps=[conversations_key(s.name) for s in sources],
        group_name=TRAINING_SETS_GROUP,
        kinds={"parquet"},
        description=(
            f"Training set of adapter '{adapter.name}': the corpus shards of {', '.join(adapter.sources)}, "
            "deduplicated across all of them, with a stable train/eval split."
        ),
        code_version="1",
    )
    def training_set(context: AssetExecutionContext, storage: BaizeStorage) -> MaterializeResult:
        layout = storage.layout
        paths = [layout.conversations(s.name, shard) for s in sources for shard in shard_keys(s.shards)]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(
                f"training set '{adapter.name}' needs every corpus shard of its sources; missing: {', '.join(missing)}"
            )
        built = trainingset.build_training_set(
            pd.concat([read_parquet(p) for p in paths], ignore_index=True), adapter.training.eval_size
        )
        write_parquet_atomic(
            built.duplicates, layout.training_set_duplicates(adapter.name), trainingset.DUPLICATE_SCHEMA
        )
        path = write_parquet_atomic(
            built.conversations, layout.training_set(adapter.name), trainingset.TRAINING_SET_SCHEMA
        )
        by_source = built.conversations.groupby("source").size()
        return MaterializeResult(
            metadata={
                **table_metadata(built.conversations, path, trainingset.TRAINING_SET_SCHEMA),
                "train": int((built.conversations["split"] == "train").sum()),
                "eval": int((built.conversations["split"] == "eval").sum()),
                "duplicates_dropped": len(built.duplicates),
                "conversations_by_source": MetadataValue.json({str(k): int(v) for k, v in by_source.items()}),
                "data_version": corpus.data_version(built.conversations),
            }
        )

    return training_set
