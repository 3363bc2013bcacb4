"""Seed-file sensors: a changed seed file refreshes the seed table, then exactly the shards whose seeds changed.

One sensor per source watches the source's configured paths, in two steps, each a plain run:

1. Files: the tick fingerprints the files (size and modification time; a file whose stat
   changed is hashed) and, when their contents differ from what it saw last, requests a run
   of the seed table. The seeds are read and parsed in that run, never in the tick.
2. Shards: the seed table's materialization records a fingerprint per shard. When a new one
   appears, the tick compares it with the fingerprints it requested the corpus for last and
   requests one run per changed shard: its transcripts and conversations.

On its first tick the sensor takes the latest seed table as its baseline, so an up-to-date
deployment reruns nothing. The retrain automation takes it from there.
"""

from __future__ import annotations

import json

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    EventLogRecord,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from .assets import conversations_key, seed_key, transcripts_key
from .assets.seed_assets import (
    SEED_FILES_METADATA,
    SHARD_FINGERPRINTS_METADATA,
    seed_files_digest,
    seed_files_state,
)
from .core.config.pipeline import PipelineConfig, SourceConfig

TRIGGER_TAG = "baize/trigger"


def seed_sensor_name(source: str) -> str:
    return f"{source}_seed_files"


def corpus_keys(source: SourceConfig) -> list[AssetKey]:
    """The partitioned assets of one source: what a changed shard reruns."""
    keys = [transcripts_key(source.name)] if source.is_self_chat else []
    return keys + [conversations_key(source.name)]


def latest_seed_table(context: SensorEvaluationContext, source: SourceConfig) -> EventLogRecord | None:
    records = context.instance.fetch_materializations(seed_key(source.name), limit=1).records
    return records[0] if records else None


def recorded(record: EventLogRecord | None, name: str):
    """A metadata value of the seed table's materialization; None for one made before it was recorded."""
    entry = record.asset_materialization.metadata.get(name) if record else None
    return entry.value if entry is not None else None


def build_seed_file_sensor(source: SourceConfig, config: PipelineConfig) -> SensorDefinition:
    tags = {TRIGGER_TAG: seed_sensor_name(source.name)}

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
    def seed_files(context: SensorEvaluationContext) -> SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        latest = latest_seed_table(context, source)
        if not cursor:
            # First tick: the latest seed table is the baseline; with none, every shard is new.
            cursor = {
                "digest": recorded(latest, SEED_FILES_METADATA),
                "seed_table": latest.storage_id if latest else None,
                "shards": recorded(latest, SHARD_FINGERPRINTS_METADATA) or {},
            }
        files = seed_files_state(source, cursor.get("files"))
        digest = seed_files_digest(files)
        run_requests = []
        if digest != cursor["digest"]:
            context.log.info(f"seed files of '{source.name}' changed: refreshing its seed table")
            run_requests.append(RunRequest(asset_selection=[seed_key(source.name)], tags=tags))
        # The shard fingerprints the corpus was last requested for, and those of the latest seed table.
        requested_for = cursor["shards"]
        fingerprints = recorded(latest, SHARD_FINGERPRINTS_METADATA)
        new_table = latest is not None and latest.storage_id != cursor["seed_table"] and fingerprints is not None
        if new_table:
            changed = [shard for shard, value in fingerprints.items() if requested_for.get(shard) != value]
            if changed:
                context.log.info(f"seed shards changed in '{source.name}': {', '.join(changed)}")
            run_requests += [
                RunRequest(asset_selection=corpus_keys(source), partition_key=shard, tags=tags) for shard in changed
            ]
            requested_for = fingerprints
        new_cursor = json.dumps(
            {
                "files": files,
                "digest": digest,
                "seed_table": latest.storage_id if latest else None,
                "shards": requested_for,
            }
        )
        if run_requests:
            return SensorResult(run_requests=run_requests, cursor=new_cursor)
        if new_table:
            reason = f"seed table of '{source.name}' refreshed, but no shard's seeds changed"
        else:
            reason = f"seed files of '{source.name}' unchanged"
        return SensorResult(skip_reason=reason, cursor=new_cursor)

    return seed_files


def build_seed_file_sensors(config: PipelineConfig) -> list[SensorDefinition]:
    return [build_seed_file_sensor(source, config) for source in config.sources]
