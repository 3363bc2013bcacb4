"""Whole training runs: resume after a killed process, artifacts, best-eval weights, evaluation."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from baize_assets.core.corpus.eval_split import held_out_split
from baize_assets.core.evaluate.held_out import evaluate_adapter
from baize_assets.core.model.base import quiet_peft_deprecation
from baize_assets.core.train.checkpoints import CHECKPOINT_FILE
from baize_assets.core.train.trainer import train_adapter

# Module-scoped fixtures shared with the training tests.
from .test_training import conversations, small_adapter, synthetic_conversations, tiny_base  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
# Five steps an epoch: the checkpoint of step 3 is mid-epoch, and the resumed run crosses an epoch's end.
RESUME_SETTINGS = dict(
    epochs=10, max_steps=12, checkpoint_steps=3, eval_steps=3, micro_batch_size=4, effective_batch_size=8
)

KILL_AT = "step 5/12 "  # between the checkpoints of steps 3 and 6
KILL_DEADLINE_S = 300

# A child that trains with the rerun's settings (for its checkpoint to apply). At the step
# line of KILL_AT, logged from inside the training loop, it writes the line to a file and
# waits there to be killed: the kill lands at that step however fast the machine trains.
# It waits on its stdin, so that it exits rather than waits forever if the test goes away.
CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from baize_assets_tests.test_training import small_adapter, synthetic_conversations
    from baize_assets_tests.test_training_runs import KILL_AT, RESUME_SETTINGS
    from baize_assets.core.train.trainer import train_adapter

    base, out, checkpoints, reached = map(Path, sys.argv[1:5])

    def log(line):
        if line.startswith(KILL_AT):
            staging = reached.with_name(reached.name + ".tmp")
            staging.write_text(line)
            staging.replace(reached)
            sys.stdin.read()
            os._exit(1)

    train_adapter(synthetic_conversations(), small_adapter(**RESUME_SETTINGS), str(base), out, log=log,
                  checkpoint_dir=checkpoints)
    """
)


def wait_for_file(path: Path, child: subprocess.Popen, deadline_s: float) -> str:
    """The text of ``path`` once the child has written it; fails if the child exits or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while not path.exists():
        assert time.monotonic() < deadline, f"the child wrote no {path.name} within {deadline_s} s"
        try:
            code = child.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        raise AssertionError(f"the child exited with {code} before writing {path.name}")
    return path.read_text()


def test_a_killed_run_resumes_from_its_last_checkpoint(tiny_base, conversations, tmp_path):
    out, checkpoints, reached = tmp_path / "adapter", tmp_path / "checkpoints", tmp_path / "reached"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tiny_base), str(out), str(checkpoints), str(reached)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        assert wait_for_file(reached, child, KILL_DEADLINE_S).startswith(KILL_AT)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
    assert not out.exists()  # a killed run leaves no half-written adapter
    checkpoint_step = torch.load(checkpoints / CHECKPOINT_FILE, weights_only=True)["progress"]["step"]
    assert checkpoint_step == 3

    lines = []
    adapter = small_adapter(**RESUME_SETTINGS)
    summary = train_adapter(conversations, adapter, str(tiny_base), out, log=lines.append, checkpoint_dir=checkpoints)
    assert summary["resumed_from_step"] == checkpoint_step and summary["steps"] == 12
    assert f"resuming 'tiny' from the checkpoint at step {checkpoint_step}/12" in lines
    assert not any(line.startswith("step 1/12 ") for line in lines)
    assert not (checkpoints / CHECKPOINT_FILE).exists()  # done: nothing left to resume

    # Resuming is exact: the adapter equals the one of a run never interrupted.
    uninterrupted = train_adapter(conversations, adapter, str(tiny_base), tmp_path / "straight", log=lambda _: None)
    assert uninterrupted["eval_history"] == summary["eval_history"]
    resumed, straight = load_file(out / "adapter_model.safetensors"), load_file(
        tmp_path / "straight" / "adapter_model.safetensors"
    )
    assert all(torch.equal(resumed[name], straight[name]) for name in straight)


def test_a_checkpoint_of_other_settings_is_not_resumed(tiny_base, conversations, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    quick = small_adapter(max_steps=4, checkpoint_steps=2, eval_size=0.1)
    train_adapter(conversations, quick, str(tiny_base), tmp_path / "a", log=lambda _: None, checkpoint_dir=checkpoints)
    assert not (checkpoints / CHECKPOINT_FILE).exists()
    # Leave a checkpoint behind as a killed run would, then change the learning rate.
    state = {"fingerprint": "other", "progress": {"step": 2}}
    torch.save(state, checkpoints / CHECKPOINT_FILE)
    lines = []
    summary = train_adapter(conversations, quick, str(tiny_base), tmp_path / "b", log=lines.append,
                            checkpoint_dir=checkpoints)
    assert summary["resumed_from_step"] == 0 and any("made with other settings" in line for line in lines)


def test_artifacts_best_weights_and_merged_export(tiny_base, conversations, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    # On this data the eval loss is lowest at step 6 of 12 (the run is seeded, so it always is).
    adapter = small_adapter(export_merged=True)
    out = tmp_path / "adapter"
    summary = train_adapter(conversations, adapter, str(tiny_base), out, log=lambda _: None, data_version="v123")
    losses = [entry["eval_loss"] for entry in summary["eval_history"]]
    assert summary["eval_loss_after"] == min(losses) and summary["saved_step"] == summary["best_step"]
    assert summary["best_step"] != 12 and summary["eval_loss_final"] > summary["eval_loss_after"]

    run_config = json.loads((out / "training_config.json").read_text())
    assert run_config["adapter"] == adapter.model_dump(mode="json") and run_config["data_version"] == "v123"
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 0.0 < summary["real_token_ratio"] <= 1.0 and summary["tokens_per_second"] > 0
    assert summary["trainable_parameters"] > 0 and summary["train_seconds"] > 0

    # The saved weights are the best step's: evaluating them again gives the best eval loss.
    report = evaluate_adapter(out, _held_out(conversations, adapter), adapter.training, log=lambda _: None)
    assert report["adapter_eval_loss"] == pytest.approx(summary["eval_loss_after"], rel=1e-4)
    assert report["base_eval_loss"] == pytest.approx(summary["eval_loss_before"], rel=1e-4)
    assert report["adapter_beats_base"] == (report["adapter_eval_loss"] < report["base_eval_loss"])
    assert len(report["answers"]) == len(adapter.training.eval_prompts)

    # The merged export is a plain transformers model giving the adapter's logits.
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    with quiet_peft_deprecation():
        with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), out)
    ids = torch.tensor([[1, 5, 9, 30, 42]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, with_adapter(ids).logits, rtol=1e-4, atol=1e-4)


def _held_out(conversations, adapter):
    return held_out_split(conversations, adapter.training.eval_size)[1]


def test_evaluation_reports_no_win_without_held_out_data(tiny_base, conversations, tmp_path):
    adapter = small_adapter(max_steps=2)
    train_adapter(conversations, adapter, str(tiny_base), tmp_path / "a", log=lambda _: None)
    report = evaluate_adapter(tmp_path / "a", [], adapter.training.model_copy(update={"eval_prompts": []}),
                              log=lambda _: None)
    assert not report["adapter_beats_base"] and "no held-out" in report["note"]


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def assert_finite_run(summary: dict, adapter_dir: Path) -> None:
    assert math.isfinite(summary["train_loss_final"]) and math.isfinite(summary["eval_loss_after"])
    assert all(torch.isfinite(weight).all() for weight in load_file(adapter_dir / "adapter_model.safetensors").values())


@pytest.mark.parametrize("device", [DEVICE])  # the test id says which device's path this machine checked
def test_precision_and_quantization_on_this_machines_device(device, tiny_base, conversations, tmp_path):
    def train(name: str, **settings) -> dict:
        adapter = small_adapter(max_steps=2, **settings)
        return train_adapter(conversations, adapter, str(tiny_base), tmp_path / name, log=lambda _: None)

    auto_dtype = "float32" if device == "cpu" else "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    for name, settings, dtype in (("auto", {}, auto_dtype), ("bf16", {"precision": "bf16"}, "bfloat16")):
        summary = train(name, **settings)
        assert (summary["device"], summary["dtype"]) == (device, dtype)
        assert_finite_run(summary, tmp_path / name)
    if device == "cpu":
        # fp16 and quantized bases need CUDA: refused by name rather than slow or broken on the CPU.
        with pytest.raises(ValueError, match="fp16.*CUDA"):
            train("fp16", precision="fp16")
        with pytest.raises(ValueError, match="4bit.*CUDA"):
            train("4bit", quantization="4bit")
        return
    # On CUDA fp16 trains there; the loss scaler keeps its losses and weights finite.
    fp16 = train("fp16", precision="fp16")
    assert (fp16["device"], fp16["dtype"]) == ("cuda", "float16")
    assert_finite_run(fp16, tmp_path / "fp16")
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(ValueError, match="4bit.*pip install bitsandbytes"):
            train("4bit", quantization="4bit")
        return
    quantized = train("4bit", quantization="4bit")
    assert (quantized["device"], quantized["training"]["quantization"]) == ("cuda", "4bit")
    assert_finite_run(quantized, tmp_path / "4bit")
