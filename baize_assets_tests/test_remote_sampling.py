"""Baize v2's answers sampled by a serving endpoint over real HTTP (`baize serve` here; vLLM with --enable-lora in
production): the same answers as the step's own model at the same seeds, cached, in several processes, and as the
samples asset in a real instance."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest
from dagster import instance_for_test
from dagster_openai import OpenAIResource

from baize_assets.assets import feedback_samples_key
from baize_assets.components.baize_pipeline import build_definitions
from baize_assets.core.chat.server import AdapterServer
from baize_assets.core.collect.cache import TranscriptCache
from baize_assets.core.collect.collector import collect_transcripts
from baize_assets.core.collect.parallel import SharedStores, collect_transcripts_in_processes
from baize_assets.core.collect.state import CacheSpec
from baize_assets.core.config.pipeline import PipelineConfig, RateLimitStoreConfig, SamplingConfig
from baize_assets.core.corpus.schema import CONVERSATION_SCHEMA
from baize_assets.core.corpus.trainingset import DUPLICATE_SCHEMA
from baize_assets.core.feedback.remote_sampling import SAMPLE_WRITER, sample_requests, samples_from_answers
from baize_assets.core.feedback.sampling import sample_answers
from baize_assets.core.feedback.self_distill import FeedbackContext
from baize_assets.core.prompts import AI, HUMAN, Turn
from baize_assets.core.storage import Layout, write_parquet_atomic
from baize_assets.pipes_messages import subprocess_client
from baize_assets.resources import BaizeStorage

from .conftest import fast_config
from .serving_support import conversations, served_adapter_dir, served_chat  # noqa: F401

CONTEXTS = [FeedbackContext(f"seed{i}", "quora", 0, turns[:1]) for i, turns in enumerate(conversations(6))]


@pytest.fixture(scope="module")
def server(served_adapter_dir, served_chat):
    with AdapterServer(served_adapter_dir, chat=served_chat, batch_wait_ms=20) as running:
        yield running


def sampling(server, **endpoint) -> SamplingConfig:
    return SamplingConfig(answers_per_seed=3, max_new_tokens=16, temperature=1.0, top_p=0.95, seed=7,
                          endpoint={"base_url_env": "V1_BASE_URL", "model": server.model_name, **endpoint})


def settings_for(sampling_config: SamplingConfig):
    config = fast_config()
    plan = config.self_distillation[0].model_copy(update={"sampling": sampling_config})
    return config.model_copy(update={"self_distillation": [plan]}).sampling_teacher(plan)


def test_an_endpoint_samples_the_answers_the_step_s_own_model_would_at_the_same_seeds(server, served_adapter_dir,
                                                                                     tmp_path):
    chosen = sampling(server)
    settings = settings_for(chosen)
    requests = sample_requests(CONTEXTS, chosen)
    assert len(requests) == 18 and requests["seed_id"].is_unique
    with TranscriptCache(tmp_path / "cache.sqlite") as cache:
        answered = collect_transcripts(requests, settings, "EMPTY", server.base_url, lambda _: None, cache=cache,
                                       writer=SAMPLE_WRITER)
        again = collect_transcripts(requests, settings, "EMPTY", server.base_url, lambda _: None, cache=cache,
                                    writer=SAMPLE_WRITER)
    remote, failed = samples_from_answers(CONTEXTS, chosen, answered.transcripts)
    assert failed.empty and len(remote) == 18 and again.requests == 0 and again.cached == 18
    assert not remote["answer"].str.contains(HUMAN, regex=False).any()
    assert not remote["answer"].str.contains(AI, regex=False).any()
    local = sample_answers(served_adapter_dir, CONTEXTS, chosen.model_copy(update={"endpoint": None}),
                           log=lambda _: None)
    assert list(remote["answer"]) == [answer.strip() for answer in local["answer"]]
    assert remote["answer"].nunique() > 6  # k different answers per context, not one repeated


def test_several_processes_share_the_endpoint_s_answers(server, tmp_path):
    chosen = sampling(server, processes=2, max_concurrency=4)
    stores = SharedStores(RateLimitStoreConfig(path=str(tmp_path / "limits.sqlite")), tmp_path / "limits.sqlite",
                          CacheSpec(tmp_path / "cache.sqlite", "cache"))
    result = collect_transcripts_in_processes(sample_requests(CONTEXTS, chosen), settings_for(chosen), "EMPTY",
                                              stores, server.base_url, log=lambda _: None, writer=SAMPLE_WRITER)
    samples, failed = samples_from_answers(CONTEXTS, chosen, result.transcripts)
    assert failed.empty and len(samples) == 18 and result.requests == 18


def test_the_samples_asset_asks_the_endpoint_and_never_a_held_out_conversation(server, tmp_path, monkeypatch):
    base = fast_config().model_dump(mode="json")
    plan = {**base["self_distillation"][0], "sampling": sampling(server).model_dump(mode="json")}
    config = PipelineConfig.model_validate({**base, "self_distillation": [plan]})
    plan = config.self_distillation[0]
    layout = Layout(tmp_path / "out")
    turns = [[Turn("human", f"How do rivers {i} form?").as_dict(), Turn("ai", "Slowly.").as_dict()] for i in range(8)]
    corpus = pd.DataFrame({"seed_id": [f"s{i}" for i in range(8)], "seed": "x", "source": "medquad", "shard": 0,
                           "turns": turns, "n_exchanges": 1, "text": "x"})
    write_parquet_atomic(corpus, layout.conversations("medquad", 0),
                         pa.schema([f for f in CONVERSATION_SCHEMA if f.name in corpus]))
    held_out = corpus.assign(split=["eval" if i < 2 else "train" for i in range(8)])
    write_parquet_atomic(held_out, layout.training_set(plan.adapter))
    write_parquet_atomic(pd.DataFrame({f.name: [] for f in DUPLICATE_SCHEMA}), layout.training_set_duplicates(
        plan.adapter), DUPLICATE_SCHEMA)
    monkeypatch.setenv("V1_BASE_URL", server.base_url)
    defs = build_definitions(config, resources={"storage": BaizeStorage(output_dir=str(layout.root)),
                                                "openai": OpenAIResource(api_key="sk-unused"),
                                                "pipes_subprocess_client": subprocess_client()})
    key = feedback_samples_key(plan.adapter_name, "medquad")
    assert defs.resolve_assets_def(key).op.pool is None  # the endpoint's own device, not this machine's
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        run = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[key], partition_key="0")
    assert run.success
    samples = pd.read_parquet(layout.feedback_samples(plan.adapter_name, "medquad", 0))
    assert set(samples["seed_id"]) == {f"s{i}" for i in range(2, 8)} and len(samples) == 18
    metadata = run.asset_materializations_for_node(key.to_python_identifier())[0].metadata
    assert metadata["api_requests"].value == 18 and metadata["endpoint_model"].value == server.model_name
