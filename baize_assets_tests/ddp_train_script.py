"""Data-parallel training runs for test_training_ddp, one process of a torchrun launch.

``torchrun --nproc_per_node=N ddp_train_script.py SPEC`` with SPEC a JSON file holding
``base`` (model directory), ``conversations`` (lists of ``[role, text]``), ``out`` and
``runs``: each run has a ``name``, ``training`` settings and optionally
``crash_after_steps``, which stops every process at that step (after its checkpoint)
and then reruns the training to resume from the checkpoint. Each process writes
``<out>/<name>.rank<R>.json``: its returned summary and the files it wrote.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from baize_assets.core.config.pipeline import AdapterConfig, LoraConfig, TrainingConfig
from baize_assets.core.prompts import Turn
from baize_assets.core.train import trainer as training


class StopHere(Exception):
    """Every process stops at the same step, as a killed run would."""


def record_writes(writes: list[str]) -> None:
    """Note each checkpoint and adapter directory this process writes."""
    save_checkpoint, staged_output_dir = training.save_checkpoint, training.staged_output_dir

    def recording_save(checkpoint_dir, state):
        writes.append(f"checkpoint step {state['progress']['step']}")
        save_checkpoint(checkpoint_dir, state)

    def recording_staging(out_dir):
        writes.append(f"adapter {Path(out_dir).name}")
        return staged_output_dir(out_dir)

    training.save_checkpoint, training.staged_output_dir = recording_save, recording_staging


def stop_after(steps: int):
    """Make the gradient clipping of step ``steps + 1`` raise StopHere; returns the undo."""
    clip = torch.nn.utils.clip_grad_norm_
    calls = [0]

    def clip_or_stop(*args, **kwargs):
        calls[0] += 1
        if calls[0] > steps:
            raise StopHere
        return clip(*args, **kwargs)

    torch.nn.utils.clip_grad_norm_ = clip_or_stop
    return lambda: setattr(torch.nn.utils, "clip_grad_norm_", clip)


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ["RANK"])
    conversations = [[Turn(role, text) for role, text in turns] for turns in spec["conversations"]]
    out = Path(spec["out"])
    writes: list[str] = []
    record_writes(writes)
    for run in spec["runs"]:
        adapter = AdapterConfig(
            name=run["name"], sources=["synthetic"], lora=LoraConfig(dropout=0.0),
            training=TrainingConfig(**run["training"]),
        )
        checkpoints = out / f"{run['name']}-checkpoints"
        stopped = False
        if "crash_after_steps" in run:
            undo = stop_after(run["crash_after_steps"])
            try:
                training.train_adapter(conversations, adapter, spec["base"], out / run["name"], log=lambda _: None,
                                       checkpoint_dir=checkpoints)
            except StopHere:
                stopped = True
            finally:
                undo()
        summary = training.train_adapter(conversations, adapter, spec["base"], out / run["name"], log=print,
                                         checkpoint_dir=checkpoints)
        result = {"summary": summary, "writes": writes.copy(), "stopped": stopped}
        (out / f"{run['name']}.rank{rank}.json").write_text(json.dumps(result))
        writes.clear()


if __name__ == "__main__":
    main(sys.argv[1])
