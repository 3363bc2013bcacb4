"""Micro-batches of tokenized samples with little padding, and their collation.

Padding every sample to the cutoff (the original's approach) spends most of the
compute on pad tokens when conversations are short. Grouping samples of similar
length into a micro-batch and padding only to its longest sample keeps almost every
token real, while each sample still attends only to itself. The order stays seeded,
so a run (and a resumed run) sees the same micro-batches in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

IGNORE_INDEX = -100  # label of tokens that carry no loss (PyTorch's cross-entropy default)
# Samples are sorted by length within groups of this many micro-batches: large enough
# that neighbours have similar lengths, small enough that the order stays random.
GROUP_MICRO_BATCHES = 64


def padding_id(tokenizer) -> int:
    """The id that pads a batch: the tokenizer's pad token, else EOS, else 0.

    Padded positions are masked out of attention and loss, so any id will do when the
    tokenizer has no pad token.
    """
    return next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)


@dataclass(frozen=True)
class Sample:
    """One tokenized training sample: ids (BOS first when the tokenizer has one) and labels."""

    input_ids: list[int]
    labels: list[int]


def _permutation(n: int, seed: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def shuffled_batches(n_samples: int, micro_batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless micro-batches of sample indices, a fresh seeded permutation per epoch."""
    epoch = 0
    while True:
        permutation = _permutation(n_samples, seed + epoch)
        for start in range(0, n_samples, micro_batch_size):
            yield permutation[start : start + micro_batch_size]
        epoch += 1


def length_grouped_batches(lengths: Sequence[int], micro_batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless micro-batches of sample indices whose samples have similar lengths.

    Per epoch: a seeded permutation is cut into groups of ``GROUP_MICRO_BATCHES``
    micro-batches, each group is sorted by length and cut into micro-batches, and the
    micro-batches of the epoch are shuffled (seeded) so long and short ones alternate.
    """
    n_samples = len(lengths)
    group = micro_batch_size * GROUP_MICRO_BATCHES
    epoch = 0
    while True:
        permutation = _permutation(n_samples, seed + epoch)
        batches = []
        for start in range(0, n_samples, group):
            by_length = sorted(permutation[start : start + group], key=lambda i: (-lengths[i], i))
            batches += [by_length[i : i + micro_batch_size] for i in range(0, len(by_length), micro_batch_size)]
        for position in _permutation(len(batches), seed + epoch + 1_000_003):
            yield batches[position]
        epoch += 1


def collate(samples: Sequence[Sample], pad_id: int, device: str, width: int | None = None) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch to ``width`` or its longest sample (labels -100, attention mask 0)."""
    width = width or max(len(sample.input_ids) for sample in samples)
    input_ids, labels, attention_mask = [], [], []
    for sample in samples:
        padding = width - len(sample.input_ids)
        input_ids.append(sample.input_ids + [pad_id] * padding)
        labels.append(sample.labels + [IGNORE_INDEX] * padding)
        attention_mask.append([1] * len(sample.input_ids) + [0] * padding)
    return {
        "input_ids": torch.tensor(input_ids, device=device),
        "labels": torch.tensor(labels, device=device),
        "attention_mask": torch.tensor(attention_mask, device=device),
    }
