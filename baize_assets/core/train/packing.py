"""Packing several samples into one row of at most ``cutoff_len`` tokens, kept apart in attention.

Packed samples must not see each other: each restarts its position ids at 0 and
attends only to its own earlier tokens. How that is enforced depends on the attention
kernel. SDPA gets a block-diagonal causal 4D boolean mask, eager attention the same
mask as additive floats (transformers passes a 4D mask through unchanged), and
flash-attention the micro-batch flattened into one row with per-sample position ids,
from which it derives the sequence bounds of its variable-length kernel. Any other
kernel cannot be told, so packing is refused.
The first token of each packed sample is never a target: it is not predicted from the
sample before it, exactly as it is not predicted in an unpacked row.
"""

from __future__ import annotations

import bisect
from typing import Sequence

import torch

from ..model.batching import IGNORE_INDEX, Sample
from ..model.lm_loss import causal_lm_of

# How each attention implementation keeps packed samples apart.
PACKED_LAYOUTS = {
    "sdpa": "boolean_mask",
    "eager": "additive_mask",  # eager attention adds the mask to its scores
    "flash_attention_2": "varlen",
    "flash_attention_3": "varlen",
}


def packing_layout(model, cutoff_len: int) -> str:
    """How ``model``'s attention keeps packed samples apart (a :data:`PACKED_LAYOUTS` value); raises when it cannot."""
    config = causal_lm_of(model).config.get_text_config()
    implementation = config._attn_implementation
    layout = PACKED_LAYOUTS.get(implementation)
    if layout is None:
        raise ValueError(
            f"training.packing: attention implementation '{implementation}' cannot keep packed samples apart; "
            f"set training.attn_implementation to one of {', '.join(PACKED_LAYOUTS)} or training.packing: false"
        )
    window = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
    if layout != "varlen" and window is not None and window < cutoff_len:
        raise ValueError(
            f"training.packing: the model attends within a sliding window of {window} tokens, which a packing mask "
            f"would replace; use cutoff_len <= {window}, flash_attention_2 or training.packing: false"
        )
    return layout


def pack_rows(lengths: Sequence[int], cutoff_len: int) -> list[list[int]]:
    """Sample indices packed into rows of at most ``cutoff_len`` tokens (best-fit decreasing, deterministic)."""
    too_long = [i for i, length in enumerate(lengths) if length > cutoff_len]
    if too_long:
        raise ValueError(f"sample {too_long[0]} has {lengths[too_long[0]]} tokens, more than cutoff_len {cutoff_len}")
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, row), sorted
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        slot = bisect.bisect_left(free, (lengths[index], -1))
        if slot == len(free):
            rows.append([index])
            space, row = cutoff_len, len(rows) - 1
        else:
            space, row = free.pop(slot)
            rows[row].append(index)
        if space - lengths[index] > 0:
            bisect.insort(free, (space - lengths[index], row))
    return rows


def _row(samples: Sequence[Sample]) -> tuple[list[int], list[int], list[int], list[int]]:
    """Ids, labels, position ids and segment ids of samples laid end to end."""
    ids, labels, positions, segments = [], [], [], []
    for segment, sample in enumerate(samples):
        n = len(sample.input_ids)
        ids += sample.input_ids
        labels += [IGNORE_INDEX, *sample.labels[1:]]
        positions += range(n)
        segments += [segment] * n
    return ids, labels, positions, segments


def collate_packed(
    rows: Sequence[Sequence[Sample]],
    pad_id: int,
    device: str,
    layout: str,
    dtype: torch.dtype,
    width: int | None = None,
) -> dict[str, torch.Tensor]:
    """A micro-batch of packed rows: ids, labels and position ids, plus the 4D mask of the mask layouts.

    ``varlen``: all rows flattened into one unpadded row. Otherwise rows are right-padded to
    ``width`` or the longest; the pads form a segment of their own, unlabeled, so no real
    token attends to them and no row of the mask is empty.
    """
    laid = [_row(samples) for samples in rows]
    if layout == "varlen":
        flat = [sum((row[k] for row in laid), []) for k in range(3)]
        ids, labels, positions = (torch.tensor([column], device=device) for column in flat)
        return {"input_ids": ids, "labels": labels, "position_ids": positions}
    width = width or max(len(row[0]) for row in laid)
    columns: list[list[list[int]]] = [[], [], [], []]
    for ids, labels, positions, segments in laid:
        padding = width - len(ids)
        for column, values, fill in zip(
            columns, (ids, labels, positions, segments), (pad_id, IGNORE_INDEX, None, -1)
        ):
            column.append(values + (list(range(padding)) if fill is None else [fill] * padding))
    ids, labels, positions, segments = (torch.tensor(column, device=device) for column in columns)
    same_sample = segments[:, :, None] == segments[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    allowed = (same_sample & causal)[:, None]
    if layout == "boolean_mask":
        mask = allowed
    else:
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
    return {"input_ids": ids, "labels": labels, "position_ids": positions, "attention_mask": mask}
