"""The scheduled corpus refresh: every shard of each source on ``automation.refresh_cron``.

It regenerates the transcripts and corpus of each shard from the current seed tables
(the seed-file sensors keep those current), for example after a change of teacher model;
the retrain automation then retrains the adapters whose conversations changed, and none
when the refresh found them all in the cache. The teacher_api pool keeps the shard runs
within the endpoint's rate limit.
"""

from __future__ import annotations

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    schedule,
)

from .core.config.pipeline import PipelineConfig, SourceConfig
from .core.storage import shard_keys
from .jobs import corpus_job_name


def corpus_refresh_schedule_name(source: str) -> str:
    return f"{source}_corpus_refresh"


def build_corpus_refresh_schedule(source: SourceConfig, config: PipelineConfig) -> ScheduleDefinition:
    automation = config.automation

    @schedule(
        name=corpus_refresh_schedule_name(source.name),
        cron_schedule=automation.refresh_cron,
        execution_timezone=automation.refresh_timezone,
        default_status=(
            DefaultScheduleStatus.RUNNING if automation.schedule_running else DefaultScheduleStatus.STOPPED
        ),
        job_name=corpus_job_name(source.name),
        description=f"Regenerates the transcripts and corpus of every shard of '{source.name}'.",
    )
    def corpus_refresh(context: ScheduleEvaluationContext):
        tick = context.scheduled_execution_time.isoformat()
        return [RunRequest(run_key=f"{shard}-{tick}", partition_key=shard) for shard in shard_keys(source.shards)]

    return corpus_refresh


def build_schedules(config: PipelineConfig) -> list[ScheduleDefinition]:
    return [build_corpus_refresh_schedule(source, config) for source in config.sources]
