"""Data-parallel training: two gloo processes under torchrun train the adapter one process trains."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from baize_assets.core.config.pipeline import AdapterConfig, LoraConfig, TrainingConfig
from baize_assets.core.model.tiny_base import build_tiny_base
from baize_assets.core.prompts import render_conversation
from baize_assets.core.train.trainer import train_adapter

from .test_training import TINY, synthetic_conversations

TORCHRUN = Path(sys.executable).with_name("torchrun")
SCRIPT = Path(__file__).with_name("ddp_train_script.py")
PROCESSES = 2
BASE_SETTINGS = dict(learning_rate=5e-3, warmup_steps=1, cutoff_len=256, eval_size=0.1, eval_steps=2, epochs=4)
RUNS = [
    # 3 micro-batches a step over 2 processes: one process takes two, the other one
    {"name": "plain", "training": {**BASE_SETTINGS, "micro_batch_size": 4, "effective_batch_size": 12, "max_steps": 4}},
    {"name": "packed", "training": {**BASE_SETTINGS, "micro_batch_size": 2, "effective_batch_size": 8,
                                    "max_steps": 3, "packing": True, "attn_implementation": "sdpa"}},
    # the plain run killed after its checkpoint at step 2, then rerun
    {"name": "resumed", "training": {**BASE_SETTINGS, "micro_batch_size": 4, "effective_batch_size": 12,
                                     "max_steps": 4, "checkpoint_steps": 2}, "crash_after_steps": 2},
]


def adapter_of(run: dict) -> AdapterConfig:
    return AdapterConfig(name=run["name"], sources=["synthetic"], lora=LoraConfig(dropout=0.0),
                         training=TrainingConfig(**run["training"]))


def run_torchrun(spec: Path, timeout: float = 180) -> str:
    """``torchrun`` of the script on CPU; its whole process group is killed if it hangs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [str(TORCHRUN), "--standalone", f"--nproc_per_node={PROCESSES}", str(SCRIPT), str(spec)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, cwd=Path(__file__).parents[1])
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(f"torchrun did not finish in {timeout} s:\n{output[-4000:]}") from None
    assert process.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> tuple[Path, Path, list]:
    """The tiny base, the directory of the torchrun runs, and the conversations."""
    root = tmp_path_factory.mktemp("ddp")
    conversations = synthetic_conversations()
    base = root / "base"
    untrained = TINY.model_copy(update={"pretrain_steps": 0})  # the equality of the two runs is what is tested
    build_tiny_base([render_conversation(c) for c in conversations], untrained, base)
    spec = {
        "base": str(base),
        "conversations": [[[turn.role, turn.text] for turn in turns] for turns in conversations],
        "out": str(root / "ddp"),
        "runs": RUNS,
    }
    (root / "ddp").mkdir()
    (root / "spec.json").write_text(json.dumps(spec))
    run_torchrun(root / "spec.json")
    return base, root, conversations


def rank_results(root: Path, name: str) -> list[dict]:
    return [json.loads((root / "ddp" / f"{name}.rank{rank}.json").read_text()) for rank in range(PROCESSES)]


def assert_same_adapter(first: Path, second: Path) -> None:
    a, b = (load_file(directory / "adapter_model.safetensors") for directory in (first, second))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), f"{name} differs by {(a[name] - b[name]).abs().max()}"


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS[:2], ids=lambda run: run["name"])
def test_two_processes_train_the_adapter_one_process_trains(launched, run, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # on the CPU, as the launched processes
    base, root, conversations = launched
    single = train_adapter(conversations, adapter_of(run), str(base), tmp_path / "single", log=lambda _: None)
    assert_same_adapter(root / "ddp" / run["name"], tmp_path / "single")
    results = rank_results(root, run["name"])
    for result in results:
        summary = result["summary"]
        assert summary["processes"] == PROCESSES
        for key in ("steps", "trained_tokens", "tokens_seen", "padded_tokens", "epochs_seen", "train_samples"):
            assert summary[key] == single[key], key
        for key in ("train_loss_first", "train_loss_final", "eval_loss_before", "eval_loss_after"):
            assert summary[key] == pytest.approx(single[key], abs=1e-5), key
        assert [e["step"] for e in summary["eval_history"]] == [e["step"] for e in single["eval_history"]]
    # only process 0 writes the adapter directory; it is the whole directory
    assert results[0]["writes"] == [f"adapter {run['name']}"] and results[1]["writes"] == []
    written = json.loads((root / "ddp" / run["name"] / "training_summary.json").read_text())
    assert written["processes"] == PROCESSES and written["steps"] == single["steps"]


@pytest.mark.slow
def test_a_killed_data_parallel_run_resumes_from_its_checkpoint(launched, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    base, root, conversations = launched
    results = rank_results(root, "resumed")
    assert all(result["stopped"] for result in results)
    assert [result["summary"]["resumed_from_step"] for result in results] == [2, 2]
    # process 0 wrote the step-2 checkpoint (before it stopped) and the adapter; process 1 wrote nothing
    assert results[0]["writes"] == ["checkpoint step 2", "adapter resumed"] and results[1]["writes"] == []
    assert not (root / "ddp" / "resumed-checkpoints" / "checkpoint.pt").exists()
    uninterrupted = {**RUNS[0], "name": "resumed"}
    train_adapter(conversations, adapter_of(uninterrupted), str(base), tmp_path / "single", log=lambda _: None)
    assert_same_adapter(root / "ddp" / "resumed", tmp_path / "single")


@pytest.mark.parametrize(
    ("environment", "settings", "error"),
    [
        ({"WORLD_SIZE": "2"}, {}, "WORLD_SIZE=2 but RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set: .*torchrun"),
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"},
         {"quantization": "4bit"}, "quantization '4bit' trains on one GPU only, not data-parallel"),
    ],
    ids=["not-launched", "quantized"],
)
def test_a_data_parallel_launch_it_cannot_run_is_refused_clearly(tmp_path, monkeypatch, environment, settings, error):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    adapter = adapter_of({"name": "tiny", "training": {**RUNS[0]["training"], **settings}})
    conversations = synthetic_conversations(count=5)
    with pytest.raises(ValueError, match=error):  # before any model is loaded or process group joined
        train_adapter(conversations, adapter, str(tmp_path), tmp_path / "adapter", log=lambda _: None)
    assert not (tmp_path / "adapter").exists()
