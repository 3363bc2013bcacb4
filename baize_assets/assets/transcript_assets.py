"""``<source>/transcripts`` [shard]: raw self-chat transcripts from the teacher."""

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_openai import OpenAIResource

from ..core import selfchat
from ..core.config import PipelineConfig, SourceConfig
from ..core.prompts import SELF_CHAT_PROMPT_VERSION
from ..core.storage import read_parquet, write_parquet_atomic
from ..resources import BaizeStorage
from .keys import seed_key, shard_partitions, transcripts_key
from .metadata import config_hash, table_metadata


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
        code_version=f"{SELF_CHAT_PROMPT_VERSION}-{config_hash(teacher)}",
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
                **table_metadata(result.transcripts, path, selfchat.TRANSCRIPT_SCHEMA),
                **result.usage.as_metadata(),
                "failed_seeds": sum(result.failures.values()),
                "failures_by_kind": MetadataValue.json(dict(result.failures)),
                "seconds": round(result.seconds, 2),
                "model": teacher.model,
                "prompt_version": SELF_CHAT_PROMPT_VERSION,
            }
        )

    return transcripts
