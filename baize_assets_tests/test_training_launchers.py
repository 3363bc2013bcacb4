"""Where the adapter step trains (``training.launcher``), and that its logs and metrics come back each way.

The slow tests materialize the adapter in a Dagster instance: through a ``torchrun`` of
two gloo processes the step starts, and through a Pipes client resource other than the
default one (context in an environment variable, messages in a file of the client's
choosing, a working directory of its own, no tie to the step's process: as a pod would
run), whose command is itself a two-process torchrun of the training module.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from dagster import (
    DagsterEventType,
    PipesEnvContextInjector,
    PipesFileMessageReader,
    PipesSubprocessClient,
    instance_for_test,
    materialize,
)
from pydantic import ValidationError

from baize_assets.assets.adapter_assets import build_adapter_asset
from baize_assets.core.config.pipeline import AdapterConfig, PipelineConfig, SourceConfig, TrainingConfig
from baize_assets.core.config.training import TRAINING_MODULE, LauncherConfig
from baize_assets.core.corpus.trainingset import TRAINING_SET_SCHEMA
from baize_assets.core.model.tiny_base import build_tiny_base
from baize_assets.core.prompts import render_conversation
from baize_assets.core.storage import Layout, write_parquet_atomic
from baize_assets.pipes_messages import subprocess_client
from baize_assets.resources import BaizeStorage

from .test_evaluation_assets import training_set_frame
from .test_training import TINY, synthetic_conversations

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SOURCES = [SourceConfig(name="synthetic", format="text", paths=["x"])]
STEPS = 2
FEW_STEPS = dict(learning_rate=5e-3, max_steps=STEPS, micro_batch_size=4, effective_batch_size=8, warmup_steps=1,
                 eval_steps=STEPS, eval_prompts=["Tell me about the river."])


def asset_of(launcher: dict, name: str = "tiny"):
    adapter = AdapterConfig(name=name, sources=["synthetic"], training=TrainingConfig(**FEW_STEPS, launcher=launcher))
    return build_adapter_asset(adapter, PipelineConfig(sources=SOURCES, adapters=[adapter]))


@pytest.mark.parametrize(
    ("launcher", "error"),
    [
        ({"kind": "subprocess", "nproc_per_node": 4}, "nproc_per_node is for kind torchrun, not subprocess"),
        ({"kind": "torchrun", "resource": "gpu_pods", "run_kwargs": {"image": "x"}},
         "resource, run_kwargs are for kind pipes_client, not torchrun"),
        ({"kind": "pipes_client", "run_kwargs": {"extras": {}, "command": ["x"]}},
         "run_kwargs cannot hold command, extras: the adapter step passes them"),
        ({"kind": "pipes_client", "resource": "gpu pods"}, "resource\n  String should match pattern"),
        ({"kind": "torchrun", "nproc_per_node": 0}, "nproc_per_node\n  Input should be greater than or equal to 1"),
    ],
    ids=["nproc-for-subprocess", "client-settings-for-torchrun", "run-kwargs-taken", "resource-key", "no-processes"],
)
def test_a_launcher_setting_that_cannot_work_names_itself(launcher, error):
    raw = {"sources": [s.model_dump() for s in SOURCES],
           "adapters": [{"name": "tiny", "sources": ["synthetic"], "training": {"launcher": launcher}}]}
    with pytest.raises(ValidationError, match="adapters.0.training.launcher") as raised:
        PipelineConfig.model_validate(raw)
    assert error in str(raised.value)


def test_the_old_switch_and_a_quantized_torchrun_are_refused_saying_what_to_write():
    with pytest.raises(ValidationError, match=r"run_in_subprocess is now launcher.kind: write launcher: "
                                              r"\{kind: in_process\}"):
        TrainingConfig.model_validate({"run_in_subprocess": False})
    with pytest.raises(ValidationError, match="quantization '4bit' trains on one GPU, not data-parallel: set "
                                              "launcher.kind to subprocess, or quantization to none"):
        TrainingConfig(quantization="4bit", launcher={"kind": "torchrun"})


def test_the_launcher_picks_the_resource_and_leaves_the_code_version_alone():
    launchers = {"in_process": {"kind": "in_process"}, "subprocess": {}, "torchrun": {"kind": "torchrun"},
                 "pipes_client": {"kind": "pipes_client"}, "named": {"kind": "pipes_client", "resource": "gpu_pods"}}
    built = {name: asset_of(launcher) for name, launcher in launchers.items()}
    resources = {name: asset.required_resource_keys - {"io_manager"} for name, asset in built.items()}
    assert resources == {"in_process": {"storage"}, "subprocess": {"storage", "pipes_subprocess_client"},
                         "torchrun": {"storage", "pipes_subprocess_client"},
                         "pipes_client": {"storage", "training_pipes_client"}, "named": {"storage", "gpu_pods"}}
    versions = {asset.code_versions_by_key[asset.key] for asset in built.values()}
    assert len(versions) == 1  # where it trains changes nothing in the adapter
    other = AdapterConfig(name="tiny", sources=["synthetic"], training=TrainingConfig(**{**FEW_STEPS, "max_steps": 3}))
    assert build_adapter_asset(other, PipelineConfig(sources=SOURCES, adapters=[other])).code_versions_by_key[
        built["subprocess"].key] not in versions


def test_the_kubernetes_launcher_in_deploy_is_a_valid_launcher_for_a_gpu_pod():
    launcher = LauncherConfig.model_validate(
        yaml.safe_load((PROJECT_ROOT / "deploy" / "k8s" / "adapter-training.yaml").read_text())["launcher"])
    assert launcher.kind == "pipes_client" and launcher.resource == "training_pipes_client"
    assert launcher.command[:1] == ["torchrun"] and launcher.command[-2:] == ["-m", TRAINING_MODULE]
    (container,) = launcher.run_kwargs["base_pod_spec"]["containers"]
    nproc = next(arg for arg in launcher.command if arg.startswith("--nproc_per_node=")).split("=")[1]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == int(nproc)  # one process a GPU


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    """An output folder holding the tiny base and a training set of 32 conversations."""
    root = tmp_path_factory.mktemp("launchers")
    layout = Layout(root)
    conversations = synthetic_conversations(32)
    build_tiny_base([render_conversation(c) for c in conversations], TINY.model_copy(update={"pretrain_steps": 0}),
                    layout.tiny_base())
    write_parquet_atomic(training_set_frame(conversations), layout.training_set("tiny"), TRAINING_SET_SCHEMA)
    return root


def materialized(asset, resources: dict, raise_on_error: bool = True):
    """The run, its log messages and the adapter's metadata."""
    with instance_for_test() as instance:
        result = materialize([asset], instance=instance, resources=resources, raise_on_error=raise_on_error)
        logs = [event.user_message for event in instance.all_logs(result.run_id)]
    materializations = result.asset_materializations_for_node(asset.op.name) if result.success else []
    return result, logs, {k: v.value for m in materializations for k, v in m.metadata.items()}


def assert_streamed_back(logs: list[str], metadata: dict, processes: int) -> None:
    assert any("external process successfully opened dagster pipes" in m for m in logs)
    assert sum(m.startswith(f"step {STEPS}/{STEPS} loss") for m in logs) == 1  # process 0 logs, the others not
    assert metadata["steps"] == STEPS and metadata["processes"] == processes
    assert metadata["loss_curve_plot"].startswith("**loss curve**") and metadata["eval_loss"] > 0


@pytest.mark.slow
def test_torchrun_started_by_the_step_trains_data_parallel_and_streams_back(output):
    resources = {"storage": BaizeStorage(output_dir=str(output)), "pipes_subprocess_client": subprocess_client()}
    result, logs, metadata = materialized(asset_of({"kind": "torchrun", "nproc_per_node": 2}), resources)
    assert result.success
    assert_streamed_back(logs, metadata, processes=2)
    assert (Layout(output).adapter("tiny") / "README.md").is_file()  # the model card, written where it trained


@pytest.mark.slow
def test_any_pipes_client_resource_runs_the_training_command_and_streams_back(output, tmp_path):
    client = PipesSubprocessClient(context_injector=PipesEnvContextInjector(),
                                   message_reader=PipesFileMessageReader(str(tmp_path / "messages.jsonl")))
    resources = {"storage": BaizeStorage(output_dir=str(output)), "gpu_pods": client}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", TRAINING_MODULE]
    launcher = {"kind": "pipes_client", "resource": "gpu_pods", "command": torchrun,
                "run_kwargs": {"cwd": str(tmp_path)}}
    result, logs, metadata = materialized(asset_of(launcher, name="tiny"), resources)
    assert result.success
    assert_streamed_back(logs, metadata, processes=2)

    silent = {**launcher, "command": [sys.executable, "-c", "pass"]}  # a command that is not the training module
    result, _, _ = materialized(asset_of(silent), resources, raise_on_error=False)
    (failure,) = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    description = failure.step_failure_data.user_failure_data.description
    assert "ended without reporting its summary over dagster-pipes" in description
