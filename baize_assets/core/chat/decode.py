"""The tensors of a batch of rows decoding together, and how each row's next token is chosen.

No threads and no text here: :mod:`batched_generation` decides which rows run and when
they finish. Rows are left-padded to one length; a row that finishes leaves the batch
and its key/value cache, and rows started later join it (the shorter cache is
left-padded), so one forward pass per step serves every row. Each row keeps its own
sampling settings; a seeded row draws from its own generator, so its answer does not
depend on the rows it runs with. The processing order follows ``generate()``:
repetition penalty, temperature, top-p, then sampling (argmax at temperature 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from .chat_model import DEFAULT_REPETITION_PENALTY


@dataclass(frozen=True)
class SamplingParams:
    """How one answer is sampled; ``temperature`` 0 is greedy."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must not be negative, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be positive, got {self.repetition_penalty}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")


@dataclass
class DecodeBatch:
    """Rows decoding together: their owners, sampling settings, key/value cache, mask and next inputs.

    ``mask`` covers the cache and the next input; rows are left-padded to a common length.
    """

    requests: list[Any]  # one owner per row, kept in row order
    seen: torch.Tensor  # [rows, vocab]: tokens of the prompt and the answer, for the repetition penalty
    temperature: torch.Tensor
    top_p: torch.Tensor
    penalty: torch.Tensor
    generators: list[torch.Generator | None]
    cache: DynamicCache
    mask: torch.Tensor
    positions: torch.Tensor
    inputs: torch.Tensor

    @classmethod
    def start(cls, requests: list[Any], pad_id: int, vocab: int, device: str) -> "DecodeBatch":
        """Rows for ``requests``, each with ``prompt_ids`` and ``params`` (:class:`SamplingParams`)."""
        width = max(len(r.prompt_ids) for r in requests)
        inputs = torch.tensor([[pad_id] * (width - len(r.prompt_ids)) + r.prompt_ids for r in requests], device=device)
        mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in requests],
                            device=device)
        seen = torch.zeros(len(requests), vocab, dtype=torch.bool, device=device)
        seen.scatter_(1, inputs, mask.bool())  # padding is never seen (a 0 written over a 0)
        return cls(
            requests=requests,
            seen=seen,
            temperature=torch.tensor([r.params.temperature for r in requests], device=device),
            top_p=torch.tensor([r.params.top_p for r in requests], device=device),
            penalty=torch.tensor([r.params.repetition_penalty for r in requests], device=device),
            generators=[_generator(r.params.seed, device) for r in requests],
            cache=DynamicCache(),
            mask=mask,
            positions=(mask.cumsum(-1) - 1).clamp(min=0),
            inputs=inputs,
        )

    def __len__(self) -> int:
        return len(self.requests)

    def select(self, keep: list[int]) -> None:
        """Keep only the rows at ``keep``."""
        index = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.requests = [self.requests[i] for i in keep]
        self.generators = [self.generators[i] for i in keep]
        for name in ("seen", "temperature", "top_p", "penalty", "mask", "positions", "inputs"):
            setattr(self, name, getattr(self, name)[index])
        self._drop_padding_columns()

    def extend(self, other: "DecodeBatch") -> "DecodeBatch":
        """Append ``other``'s rows (both past a step): the shorter cache is left-padded to the longer."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        cached = width - 1  # the mask's last column is the next input, not yet in the cache
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([left_pad(mine.keys, cached), left_pad(theirs.keys, cached)])
            mine.values = torch.cat([left_pad(mine.values, cached), left_pad(theirs.values, cached)])
        self.mask = torch.cat([left_pad(self.mask, width), left_pad(other.mask, width)])
        self.requests += other.requests
        self.generators += other.generators
        for name in ("seen", "temperature", "top_p", "penalty", "positions", "inputs"):
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))
        self._drop_padding_columns()
        return self

    def _drop_padding_columns(self) -> None:
        """Drop the leading columns that are padding in every row (their rows have left)."""
        leading = int(self.mask.any(dim=0).int().argmax())
        if leading:
            self.mask = self.mask[:, leading:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, leading:], layer.values[:, :, leading:]


def left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """``tensor`` padded with zeros on the left of its sequence axis (the last of a mask, the third of a cache)."""
    axis = 1 if tensor.dim() == 2 else 2
    missing = width - tensor.shape[axis]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=axis)


def _generator(seed: int | None, device: str) -> torch.Generator | None:
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def next_tokens(
    logits: torch.Tensor,
    seen: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    penalty: torch.Tensor,
    generators: list[torch.Generator | None],
) -> torch.Tensor:
    """One token per row: repetition penalty on the tokens seen, then greedy or temperature + top-p sampling."""
    penalty = penalty[:, None]
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    logits = torch.where(seen, penalized, logits)
    greedy = logits.argmax(dim=-1)
    sampled_rows = temperature > 0
    if not bool(sampled_rows.any()):
        return greedy
    scaled = logits / temperature.clamp(min=1e-6)[:, None]
    sorted_logits, order = scaled.sort(dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= (1 - top_p)[:, None]
    drop_sorted[:, -1] = False  # the most likely token always stays
    drop = drop_sorted.scatter(1, order, drop_sorted)
    probs = scaled.masked_fill(drop, float("-inf")).softmax(dim=-1)
    tokens = greedy.clone()
    unseeded = [i for i, g in enumerate(generators) if g is None and bool(sampled_rows[i])]
    if unseeded:
        index = torch.tensor(unseeded, device=logits.device)
        tokens[index] = torch.multinomial(probs[index], 1).squeeze(1)
    for i, generator in enumerate(generators):
        if generator is not None and bool(sampled_rows[i]):
            tokens[i] = torch.multinomial(probs[i], 1, generator=generator)[0]
    return tokens

