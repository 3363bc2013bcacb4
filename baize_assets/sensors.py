"""Seed-file sensors: a changed seed file requests exactly the shards whose seeds changed.

One sensor per source watches the source's configured paths. A tick that sees the files
unchanged (size and modification time) is skipped cheaply. Otherwise the sensor reads the
seeds as the seed asset would, fingerprints each shard's seeds, compares them with the
fingerprints it requested last (on its first tick: with the materialized seed table) and
requests one backfill: the seed table refresh, then the transcripts and conversations of
the changed shards only. The backfill daemon runs them in dependency order, and the
retrain automation takes it from there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import pandas as pd
from dagster import (
    AssetKey,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey

from .assets import conversations_key, seed_key, transcripts_key
from .core import seeds
from .core.config import PipelineConfig, SourceConfig
from .core.storage import read_parquet, shard_keys
from .resources import BaizeStorage

TRIGGER_TAG = "baize/trigger"
SEED_COLUMNS_FINGERPRINTED = ["seed_id", "seed", "context", "response"]


def seed_sensor_name(source: str) -> str:
    return f"{source}_seed_files"


def seed_files_state(source: SourceConfig) -> dict[str, list[int]]:
    """Size and modification time of every file under the source's paths."""
    state: dict[str, list[int]] = {}
    for root in source.resolved_paths():
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            stat = path.stat() if path.exists() else None
            state[str(path)] = [stat.st_size, stat.st_mtime_ns] if stat else [-1, -1]
    return state


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


def corpus_keys(source: SourceConfig) -> list[AssetKey]:
    """The partitioned assets of one source: what a changed shard reruns."""
    keys = [transcripts_key(source.name)] if source.is_self_chat else []
    return keys + [conversations_key(source.name)]


def corpus_refresh_request(context: SensorEvaluationContext, source: SourceConfig, shards: Iterable[str]) -> RunRequest:
    """A backfill request: the seed table of ``source`` first, then the corpus of ``shards``."""
    partitions = {AssetKeyPartitionKey(seed_key(source.name), None)}
    partitions |= {AssetKeyPartitionKey(key, shard) for key in corpus_keys(source) for shard in shards}
    subset = AssetGraphSubset.from_asset_partition_set(partitions, context.repository_def.asset_graph)
    return RunRequest.for_asset_graph_subset(subset, tags={TRIGGER_TAG: seed_sensor_name(source.name)})


def build_seed_file_sensor(source: SourceConfig, config: PipelineConfig) -> SensorDefinition:
    @sensor(
        name=seed_sensor_name(source.name),
        minimum_interval_seconds=config.automation.seed_sensor_interval_s,
        default_status=(
            DefaultSensorStatus.RUNNING if config.automation.sensors_running else DefaultSensorStatus.STOPPED
        ),
        asset_selection=[seed_key(source.name), *corpus_keys(source)],
        description=(
            f"Watches the seed files of '{source.name}' and refreshes its seed table and the corpus "
            "of exactly the shards whose seeds changed."
        ),
    )
    def seed_files(context: SensorEvaluationContext, storage: BaizeStorage):
        cursor = json.loads(context.cursor) if context.cursor else {}
        files = seed_files_state(source)
        if files == cursor.get("files"):
            return SkipReason(f"seed files of '{source.name}' unchanged")
        known = cursor.get("shards")
        if known is None:
            materialized = storage.layout.seeds(source.name)
            known = shard_fingerprints(read_parquet(materialized), source.shards) if materialized.exists() else {}
        current = shard_fingerprints(seeds.load_seed_table(source).seeds, source.shards)
        changed = [shard for shard, fingerprint in current.items() if known.get(shard) != fingerprint]
        new_cursor = json.dumps({"files": files, "shards": current})
        if not changed:
            return SensorResult(
                skip_reason=f"seed files of '{source.name}' changed, but no shard's seeds did", cursor=new_cursor
            )
        context.log.info(f"seed shards changed in '{source.name}': {', '.join(changed)}")
        return SensorResult(run_requests=[corpus_refresh_request(context, source, changed)], cursor=new_cursor)

    return seed_files


def build_seed_file_sensors(config: PipelineConfig) -> list[SensorDefinition]:
    return [build_seed_file_sensor(source, config) for source in config.sources]
