"""The optimizer and its schedule: AdamW (fused where torch can), warmup then linear decay, steps and micro-batches.

Gradient accumulation reaches the effective batch from micro-batches; the run's
optimizer steps come from the epochs over the data, capped by ``max_steps``; the
learning rate warms up linearly and then decays linearly to zero.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from ..config.pipeline import TrainingConfig
from ..model.batching import length_grouped_batches, shuffled_batches


def accumulation_steps(training: TrainingConfig) -> int:
    return math.ceil(training.effective_batch_size / training.micro_batch_size)


def optimizer_steps(n_train: int, training: TrainingConfig) -> int:
    """Optimizer steps of the run: ``epochs`` over the data, capped by ``max_steps``."""
    steps_per_epoch = math.ceil(math.ceil(n_train / training.micro_batch_size) / accumulation_steps(training))
    steps = max(1, math.ceil(training.epochs * steps_per_epoch))
    return min(steps, training.max_steps) if training.max_steps else steps


MAX_WARMUP_FRACTION = 0.1  # tiny runs would otherwise spend every step warming up


def capped_warmup_steps(training: TrainingConfig, total_steps: int) -> int:
    """``warmup_steps``, but never more than a tenth of the run."""
    return min(training.warmup_steps, math.ceil(MAX_WARMUP_FRACTION * total_steps))


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier of optimizer step ``step`` (0-based): linear warmup, then linear decay."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def micro_batches(lengths: Sequence[int], training: TrainingConfig) -> Iterator[list[int]]:
    """The run's endless, seeded stream of micro-batches (indices of samples, or of packed rows)."""
    if training.batching == "length_grouped":
        return length_grouped_batches(lengths, training.micro_batch_size, training.seed)
    return shuffled_batches(len(lengths), training.micro_batch_size, training.seed)


def _fused_adamw_error(parameters: list[torch.nn.Parameter]) -> str | None:
    """Why fused AdamW cannot step these parameters, or None when it can.

    torch checks the device and dtype only at the first step, so one step is tried on a
    throwaway tensor of each device and dtype.
    """
    for device, dtype in {(p.device, p.dtype) for p in parameters}:
        probe = torch.zeros(1, device=device, dtype=dtype, requires_grad=True)
        probe.grad = torch.zeros_like(probe)
        try:
            torch.optim.AdamW([probe], fused=True).step()
        except RuntimeError as exc:
            return str(exc)
    return None


def make_optimizer(parameters: list[torch.nn.Parameter], training: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW; fused into one kernel per step where torch has one for the device (``auto``, ``adamw_fused``)."""
    if training.optimizer != "adamw":
        error = _fused_adamw_error(parameters)
        if error is None:
            return torch.optim.AdamW(parameters, lr=training.learning_rate, fused=True)
        if training.optimizer == "adamw_fused":
            raise ValueError(f"training.optimizer 'adamw_fused' is not available here: {error}")
    return torch.optim.AdamW(parameters, lr=training.learning_rate)
