"""``<source>/seed_questions``: the seed table of each source."""

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ..core import seeds
from ..core.config import SourceConfig
from ..core.storage import write_parquet_atomic
from ..resources import BaizeStorage
from .keys import seed_key
from .metadata import preview, table_metadata


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
                **table_metadata(table.seeds, path, seeds.SEED_SCHEMA),
                "rows_read": table.rows_read,
                "quarantined_rows": len(table.quarantine),
                "duplicates_dropped": table.duplicates_dropped,
                "seeds_per_shard": MetadataValue.json({str(k): int(v) for k, v in per_shard.items()}),
                "preview": preview(table.seeds, ["seed_id", "shard", "seed"]),
            }
        )

    return seed_questions
