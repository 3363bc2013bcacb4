"""``<source>/seed_questions``: the seed table of each source.

Each materialization records two fingerprints for the seed-file sensor: one of the files it
read (so the sensor's first tick knows whether the table is current) and one per shard of
the seeds it wrote (so the sensor reruns the corpus of exactly the shards that changed).
"""

import hashlib
import json
from pathlib import Path

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ..core.config.pipeline import SourceConfig
from ..core.seeds import table as seeds
from ..core.storage import shard_keys, write_parquet_atomic
from ..resources import BaizeStorage
from .keys import seed_key
from .metadata import preview, settings_hash, table_metadata, table_version

SEED_FILES_METADATA = "seed_files_digest"
SHARD_FINGERPRINTS_METADATA = "shard_fingerprints"
# What a shard's transcripts and corpus are made of; the origin (file and line) is not.
SEED_COLUMNS_FINGERPRINTED = ["seed_id", "seed", "context", "response"]
# A missing file: no size, no modification time, no content.
MISSING_FILE = [-1, -1, None]


def seed_table_settings(source: SourceConfig) -> dict:
    """The source settings that change its seed table: where and how the seeds are read, checked and sharded.

    Not the domain or the language (they act later, in the corpus and its card), nor the files'
    contents (their changes reach Dagster as new materializations, by the seed-file sensor).
    """
    settings = source.model_dump(mode="json", exclude={"domain", "language", "self_chat"})
    # Self-chat seeds are normalized and checked differently from single-turn ones.
    return {**settings, "self_chat": source.is_self_chat}


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def seed_files_state(source: SourceConfig, known: dict[str, list] | None = None) -> dict[str, list]:
    """``[size, mtime_ns, content hash]`` of every file under the source's paths.

    A file whose size and modification time are those in ``known`` keeps its known hash
    unread. Folders count every file in them, a superset of what the seed readers take.
    """
    known = known or {}
    state: dict[str, list] = {}
    for root in source.resolved_paths():
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            if not path.exists():
                state[str(path)] = list(MISSING_FILE)
                continue
            stat = path.stat()
            previous = known.get(str(path))
            same = previous is not None and previous[:2] == [stat.st_size, stat.st_mtime_ns]
            state[str(path)] = [stat.st_size, stat.st_mtime_ns, previous[2] if same else file_digest(path)]
    return state


def seed_files_digest(state: dict[str, list]) -> str:
    """One hash of the files' names and contents: equal when no file was added, removed or edited."""
    return settings_hash(sorted((path, entry[2]) for path, entry in state.items()))


def shard_fingerprints(seed_table: pd.DataFrame, shards: int) -> dict[str, str]:
    """One hash per shard over its seeds' ids and texts; an empty shard has a hash too."""
    fingerprints = {}
    for key in shard_keys(shards):
        rows = seed_table[seed_table["shard"] == int(key)].sort_values("seed_id")
        digest = hashlib.sha256()
        for row in rows[SEED_COLUMNS_FINGERPRINTED].itertuples(index=False):
            digest.update(json.dumps([None if pd.isna(v) else v for v in row]).encode("utf-8"))
        fingerprints[key] = digest.hexdigest()[:16]
    return fingerprints


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
        code_version=f"2-{settings_hash(seed_table_settings(source))}",
    )
    def seed_questions(context: AssetExecutionContext, storage: BaizeStorage) -> MaterializeResult:
        # Before reading: a file edited meanwhile then differs from this digest and the sensor rereads it.
        files = seed_files_state(source)
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
                SEED_FILES_METADATA: seed_files_digest(files),
                SHARD_FINGERPRINTS_METADATA: MetadataValue.json(shard_fingerprints(table.seeds, source.shards)),
            },
            data_version=table_version(table.seeds, ["seed_id", "shard", "seed"]),
        )

    return seed_questions
