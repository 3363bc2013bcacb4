"""``<v2>/<source>_samples`` [shard]: v1's k answers to chosen conversations of a shard, for Baize v2.

Sampled by v1 on the step's own device (the gpu pool), or, with ``sampling.endpoint``, by
a serving endpoint (vLLM with ``--enable-lora``, ``baize serve``) through the collector:
retries, a cache (``feedback/<v2>/sample_cache.sqlite``), a lease per shard, several
processes. Never of v1's held-out conversations, on which v1 and v2 are evaluated.
"""

import os

from dagster import AssetExecutionContext, AssetsDefinition, Failure, MaterializeResult, MetadataValue, asset

from ..core.config.pipeline import PipelineConfig, SelfDistillationConfig, SourceConfig
from ..core.feedback import self_distill
from ..core.prompts import CHAT_FORMAT_VERSION
from ..core.storage import Layout, local_copy, read_parquet, write_parquet_atomic
from ..resources import BaizeStorage
from .keys import GPU_POOL, adapter_key, conversations_key, feedback_samples_key, shard_partitions, training_set_key
from .metadata import config_hash, table_metadata, table_version
from .shard_collection import Endpoint, all_failed, collect_shard


def _sample_on_endpoint(context: AssetExecutionContext, layout: Layout, plan: SelfDistillationConfig,
                        config: PipelineConfig, source: SourceConfig, contexts) -> tuple:
    """The samples the serving endpoint gave, and the collection's metadata; fails when it gave none."""
    from ..core.feedback.remote_sampling import SAMPLE_WRITER, sample_requests, samples_from_answers

    settings = config.sampling_teacher(plan)
    base_url = os.environ.get(settings.base_url_env)
    if not base_url:
        raise Failure(description=f"{settings.section}.base_url_env names {settings.base_url_env}, which is not set")
    endpoint = Endpoint(os.environ.get(settings.api_key_env, "") or "EMPTY", base_url)
    shard = int(context.partition_key)
    step = f"{plan.adapter_name}/{source.name}/{shard} samples"
    requests = sample_requests(contexts, plan.sampling)
    collected = collect_shard(context, layout, endpoint, requests, settings,
                              lease=layout.sampling_lease(plan.adapter_name, source.name, shard),
                              cache=layout.sampling_cache(plan.adapter_name), writer=SAMPLE_WRITER, step=step,
                              state=config.state_store)
    frame, failed = samples_from_answers(contexts, plan.sampling, collected.result.transcripts)
    if len(requests) and frame.empty:
        raise Failure(description=all_failed(step, collected.result.failures, str(layout.sampling_cache(
            plan.adapter_name))), metadata=collected.metadata)
    if len(failed):
        context.log.warning(f"{len(failed)} of {len(requests)} answers of {step} failed; v2 judges the rest")
    return frame, {**collected.metadata, "failed_answers": len(failed), "endpoint_model": settings.model}


def build_samples_asset(plan: SelfDistillationConfig, source: SourceConfig, config: PipelineConfig) -> AssetsDefinition:
    sampling = plan.sampling
    on_endpoint = sampling.endpoint is not None

    @asset(
        key=feedback_samples_key(plan.adapter_name, source.name),
        deps=[adapter_key(plan.adapter), conversations_key(source.name), training_set_key(plan.adapter)],
        partitions_def=shard_partitions(source),
        group_name=plan.adapter_name,
        kinds={"openai", "parquet"} if on_endpoint else {"pytorch", "parquet"},
        pool=None if on_endpoint else GPU_POOL,
        description=(
            f"{sampling.answers_per_seed} answers of adapter '{plan.adapter}' to the last human turn of "
            f"'{source.name}' conversations (with the turns before it as context), "
            + ("asked of its serving endpoint" if on_endpoint else "sampled in batches")
            + f"; never of '{plan.adapter}'s held-out conversations, on which both adapters are evaluated."
        ),
        code_version=f"2-{CHAT_FORMAT_VERSION}-{config_hash(sampling)}",
    )
    def samples(context: AssetExecutionContext, storage: BaizeStorage) -> MaterializeResult:
        layout = storage.layout
        shard = int(context.partition_key)
        excluded = self_distill.read_held_out_seed_ids(layout, plan.adapter)
        contexts = self_distill.feedback_contexts(
            read_parquet(layout.conversations(source.name, shard)), sampling.seeds_per_shard, sampling.seed, excluded
        )
        if on_endpoint:
            frame, metadata = _sample_on_endpoint(context, layout, plan, config, source, contexts)
        else:
            from ..core.feedback.sampling import sample_answers

            with local_copy(layout.adapter(plan.adapter)) as adapter_dir:
                frame, metadata = sample_answers(adapter_dir, contexts, sampling, log=context.log.info), {}
        path = write_parquet_atomic(
            frame, layout.feedback_samples(plan.adapter_name, source.name, shard), self_distill.SAMPLE_SCHEMA
        )
        return MaterializeResult(
            metadata={
                **table_metadata(frame, path, self_distill.SAMPLE_SCHEMA),
                "seeds": len(contexts),
                "held_out_not_sampled": len(excluded),
                "finish_reasons": MetadataValue.json(frame["finish_reason"].value_counts().astype(int).to_dict()),
                "mean_answer_chars": round(float(frame["answer"].str.len().mean()), 1) if len(frame) else 0.0,
                **metadata,
            },
            data_version=table_version(frame, ["seed_id", "sample_index", "answer"]),
        )

    return samples
