"""Outputs on object storage: BAIZE_OUTPUT_DIR=s3://bucket/prefix against a real S3 server (SeaweedFS).

Tables and texts are put whole, directories are uploaded from local staging, models are read through a
local copy; the graph runs seeds -> transcripts -> corpus -> training set -> base -> adapter (trained in a
Pipes child on local scratch, then uploaded) -> evaluation with nothing of its outputs on the local disk.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import s3fs
from dagster import instance_for_test
from dagster_openai import OpenAIResource

from baize_assets.assets import adapter_key, evaluation_key, training_set_key
from baize_assets.components.baize_pipeline import build_definitions
from baize_assets.core.config.pipeline import PipelineConfig
from baize_assets.core.storage import (
    Layout,
    is_remote,
    local_copy,
    read_parquet,
    staged_output_dir,
    staged_output_file,
    write_parquet_atomic,
    write_text_atomic,
)
from baize_assets.jobs import SEED_TABLES_JOB, corpus_job_name
from baize_assets.pipes_messages import subprocess_client
from baize_assets.resources import BaizeStorage
from baize_assets.teacher.server import SimulatedTeacher

from .conftest import one_quora_shard_config

pytestmark = pytest.mark.slow


def _objects(url: str) -> set[str]:
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    base = url.removeprefix("s3://")
    return {path[len(base) + 1:] for path in fs.find(base)}


def test_tables_texts_and_directories_are_put_whole_and_read_back(s3_store, tmp_path):
    layout = Layout(f"{s3_store}/primitives", state_dir=tmp_path / "state")
    assert is_remote(layout.root) and layout.transcript_cache("quora").parent.is_relative_to(tmp_path)
    frame = pd.DataFrame({"seed_id": ["a", "b"], "shard": [0, 1], "text": ["x", "y"]})
    write_parquet_atomic(frame, layout.conversations("quora", 0))
    assert read_parquet(layout.conversations("quora", 0), shard=1)["seed_id"].tolist() == ["b"]
    write_text_atomic("{}", layout.evaluation("bot"))
    assert json.loads(layout.evaluation("bot").read_text()) == {}
    # A write that fails leaves the previous object whole, and a new object never appears.
    with pytest.raises(RuntimeError):
        with staged_output_file(layout.evaluation("bot")) as staging:
            staging.write_text('{"half": ')
            raise RuntimeError("the step died")
    assert json.loads(layout.evaluation("bot").read_text()) == {}
    with staged_output_dir(layout.adapter("bot")) as staging:
        (staging / "adapter_config.json").write_text("{}")
        (staging / "old.bin").write_bytes(b"0")
    with staged_output_dir(layout.adapter("bot")) as staging:
        (staging / "adapter_config.json").write_text('{"r": 8}')
        (staging / "sub").mkdir()
        (staging / "sub" / "weights.bin").write_bytes(b"1234")
    assert _objects(f"{s3_store}/primitives/adapters/bot") == {"adapter_config.json", "sub/weights.bin"}
    with local_copy(layout.adapter("bot")) as copy:
        assert (copy / "sub" / "weights.bin").read_bytes() == b"1234" and copy.exists()
    assert not copy.exists()  # the copy is gone after the block


def one_source_config() -> PipelineConfig:
    """The shipped quora source as one shard and its adapter, trained two steps on a briefly pretrained base."""
    return one_quora_shard_config(tiny_base={"pretrain_steps": 20})


def test_the_graph_runs_with_its_outputs_on_s3_and_nothing_on_the_local_disk(s3_store, tmp_path):
    root = f"{s3_store}/run"
    config = one_source_config()
    (tmp_path / "instance").mkdir()
    defs = build_definitions(config, resources={
        "storage": BaizeStorage(output_dir=root, state_dir=str(tmp_path / "state")),
        "openai": OpenAIResource(api_key="sk-test-s3", base_url=None),
        "pipes_subprocess_client": subprocess_client()})
    with SimulatedTeacher() as teacher, instance_for_test(temp_dir=str(tmp_path / "instance")) as instance, \
            pytest.MonkeyPatch.context() as env:
        env.setenv("OPENAI_BASE_URL", teacher.base_url)
        for job, partition in ((SEED_TABLES_JOB, None), (corpus_job_name("quora"), "0")):
            assert defs.resolve_job_def(job).execute_in_process(instance=instance, partition_key=partition).success
        bases = [key for key in defs.resolve_all_asset_keys() if key.path[0] == "base_models"]
        trained = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance, asset_selection=[
            training_set_key("baize_general"), *bases, adapter_key("baize_general"), evaluation_key("baize_general")])
        assert trained.success
    stored = _objects(root)
    assert {"quora/seed_questions.parquet", "quora/transcripts/shard-0.parquet", "quora/conversations/shard-0.parquet",
            "training_sets/baize_general.parquet", "adapters/baize_general/adapter_model.safetensors",
            "adapters/baize_general/README.md", "base_models/tiny_llama/config.json",
            "evaluations/baize_general.json"} <= stored
    report = json.loads(s3fs.S3FileSystem(skip_instance_cache=True).cat(
        f"{root.removeprefix('s3://')}/evaluations/baize_general.json"))
    assert report["adapter_dir"] == f"{root}/adapters/baize_general" and report["adapter_eval_loss"] > 0
    # The state (caches, leases, checkpoints) stayed on this machine; no output did.
    local = {p.relative_to(tmp_path / "state").as_posix() for p in (tmp_path / "state").rglob("*") if p.is_file()}
    assert "quora/transcript_cache.sqlite" in local and not any(p.endswith(".parquet") for p in local)
    materialization = instance.get_latest_materialization_event(adapter_key("baize_general")).asset_materialization
    assert materialization.metadata["path"].value == f"{root}/adapters/baize_general"
