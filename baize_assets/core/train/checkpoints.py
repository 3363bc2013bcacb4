"""Training checkpoints: the state a killed run resumes from, valid only for the very same run.

A checkpoint records the trainable (LoRA) weights, optimizer, scheduler, scaler and RNG
state (of each process of a data-parallel run) and the progress counters. It is written
to a temporary file and renamed over the last one, and it carries a fingerprint of the
settings that shape the weights, the base model and the samples, so a rerun with
anything else starts afresh. It does not depend on the number of processes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..config.pipeline import AdapterConfig
from ..model.batching import Sample
from ..storage import staged_output_file

CHECKPOINT_FILE = "checkpoint.pt"
# Settings that do not change the trained weights: a checkpoint stays valid across them.
NOT_AFFECTING_WEIGHTS = {
    "checkpoint_steps",
    "launcher",
    "export_merged",
    "eval_prompts",
    "keep_best",
    "gradient_checkpointing",
}


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.copy_(state[name])


def run_fingerprint(adapter: AdapterConfig, base_ref: str, samples: Sequence[Sample]) -> str:
    """What a checkpoint is valid for: the settings that shape the weights, the base and the samples."""
    digest = hashlib.sha256()
    settings = adapter.model_dump(mode="json", exclude={"training": NOT_AFFECTING_WEIGHTS})
    digest.update(json.dumps([settings, base_ref], sort_keys=True).encode())
    for sample in samples:
        digest.update(json.dumps([sample.input_ids, sample.labels]).encode())
    return digest.hexdigest()


def save_checkpoint(checkpoint_dir: Path, state: dict) -> None:
    """Write the training state to a temporary file, then rename it over the last checkpoint."""
    with staged_output_file(checkpoint_dir / CHECKPOINT_FILE) as staging:
        torch.save(state, staging)


def load_checkpoint(checkpoint_dir: Path | None, fingerprint: str, log: Callable[[str], None]) -> dict | None:
    """The last checkpoint of this very run (same settings, base and data), or None."""
    if checkpoint_dir is None or not (checkpoint_dir / CHECKPOINT_FILE).is_file():
        return None
    path = checkpoint_dir / CHECKPOINT_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # the optimizer moves it back
    except Exception as exc:  # a checkpoint that cannot be read is only a lost head start
        log(f"ignoring unreadable checkpoint {path}: {exc}")
        return None
    if state.get("fingerprint") != fingerprint:
        log(f"ignoring checkpoint {path}: it was made with other settings, base model or data")
        return None
    return state


def adapter_weights_digest(adapter_dir: Path) -> str:
    """A saved adapter's weights as a short hash: a run started from it resumes only from the same weights."""
    digest = hashlib.sha256()
    for path in sorted(Path(adapter_dir).glob("adapter_model.*")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
