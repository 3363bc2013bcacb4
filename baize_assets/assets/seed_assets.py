"""``<source>/seed_questions``: the seed table of each source."""

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Failure,
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


def seed_file_failure(error: seeds.SeedFileError) -> Failure:
    """The run failure a person fixes in the seed file: one line naming file and line, no traceback."""
    location = {"file": MetadataValue.path(str(error.path))}
    if error.line is not None:
        location["line"] = MetadataValue.int(error.line)
    # Rereading the same file cannot succeed, so a retry policy must not spend attempts on it.
    return Failure(description=str(error), metadata=location, allow_retries=False)


def build_seed_asset(source: SourceConfig) -> AssetsDefinition:
    @asset(
        key=seed_key(source.name),
        group_name=source.name,
        kinds={"parquet"},
        description=f"Seed questions of '{source.name}' ({source.format}), normalized, deduplicated and sharded.",
        code_version="2",
    )
    def seed_questions(context: AssetExecutionContext, storage: BaizeStorage) -> MaterializeResult:
        try:
            table = seeds.load_seed_table(source)
        except seeds.SeedFileError as exc:
            raise seed_file_failure(exc) from None
        layout = storage.layout
        path = write_parquet_atomic(table.seeds, layout.seeds(source.name), seeds.SEED_SCHEMA)
        write_parquet_atomic(table.quarantine, layout.seed_quarantine(source.name), seeds.QUARANTINE_SCHEMA)
        if len(table.quarantine):
            context.log.warning(
                f"{len(table.quarantine)} rows or files quarantined ({table.quarantined_by_reason}), e.g. "
                f"{table.quarantine.iloc[0]['origin']}: {table.quarantine.iloc[0]['reason']}"
            )
        per_shard = table.seeds["shard"].value_counts().sort_index()
        return MaterializeResult(
            metadata={
                **table_metadata(table.seeds, path, seeds.SEED_SCHEMA),
                "rows_read": table.rows_read,
                "quarantined_rows": len(table.quarantine) - table.quarantined_files,
                "quarantined_files": table.quarantined_files,
                "quarantined_by_reason": MetadataValue.json(table.quarantined_by_reason),
                "duplicates_dropped": table.duplicates_dropped,
                "seeds_per_shard": MetadataValue.json({str(k): int(v) for k, v in per_shard.items()}),
                "preview": preview(table.seeds, ["seed_id", "shard", "seed"]),
            }
        )

    return seed_questions
