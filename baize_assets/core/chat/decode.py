"""The rows decoding together: their slots, their key/value cache and the prompt prefix they share.

No threads and no text here: :mod:`batched` decides which rows run and when they finish.
Each row holds a slot (``0..len-1``) in a :class:`~.kv_cache.SlotCache` and in the
per-row tensors (sampling settings, tokens seen, random numbers, positions) for as long
as it decodes; a row that finishes is overwritten by moving the last row into its slot.
A row's cache columns are its own: which of them it attends to is ``valid``, and each
step writes one column per row wherever that row has got to, so rows started at
different times decode in one forward pass without shifting or copying each other.

Rows join in groups. Baize prompts begin alike (the system prompt, and the k answers to a
seed share all of it), so a group's common prompt prefix is computed once, in a cache of
its own that later groups reuse as far as they share it, and copied into each row's
columns; one forward pass over the rest of the prompts, left-padded to one length, gives
each row its first token. Within a forward pass each row sees the valid columns up to its
own (causal), never another row's.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch

from .kv_cache import SlotCache
from .sampler import RowMix, SamplingParams, next_tokens, uniform_stream

__all__ = ["DecodeBatch", "SamplingParams", "check_full_attention", "shared_prefix_length"]

# forward(input_ids, position_ids, 4D boolean attention mask, cache) -> the last position's logits per row
Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, SlotCache], torch.Tensor]


def check_full_attention(config, positions: int) -> None:
    """Raise ``ValueError`` unless every attention layer of ``config`` sees all of ``positions`` positions.

    The masks here give each row all of its columns: a model with sliding-window layers
    narrower than that, or with layers of another kind (linear attention, state spaces),
    needs masks or caches this engine does not build.
    """
    layer_types = getattr(config, "layer_types", None)
    kinds = set(layer_types or ["full_attention"])
    if kinds - {"full_attention", "sliding_attention"}:
        raise ValueError(f"batched generation supports attention layers only, not {sorted(kinds)}")
    window = getattr(config, "sliding_window", None)
    # Without layer types a window applies to every layer, unless the config turns it off (Qwen2).
    sliding = "sliding_attention" in kinds if layer_types else getattr(config, "use_sliding_window", True) is not False
    if window and sliding and window < positions:
        raise ValueError(f"batched generation gives every layer all {positions} positions; this model's "
                         f"sliding window is {window}: lower the history budget to at most {window}")


def _widened(tensor: torch.Tensor, columns: int) -> torch.Tensor:
    """``tensor`` (2D), or a copy with at least ``columns`` columns: the new ones zero."""
    if tensor.shape[1] >= columns:
        return tensor
    grown = tensor.new_zeros(tensor.shape[0], columns)
    grown[:, : tensor.shape[1]] = tensor
    return grown


def shared_prefix_length(sequences: list[list[int]]) -> int:
    """How many leading tokens all ``sequences`` have in common."""
    return len(os.path.commonprefix(sequences)) if sequences else 0


class DecodeBatch:
    """Up to ``max_rows`` rows decoding together with a model of ``layers`` attention layers.

    Each row's owner (a request) has ``prompt_ids``, ``max_new_tokens`` and ``params``
    (:class:`SamplingParams`); ``requests[i]`` owns slot ``i``.
    """

    def __init__(self, forward: Forward, layers: int, max_rows: int, vocab: int, pad_id: int, device: str):
        self._forward = forward
        self._pad_id = pad_id
        self.device = device
        self.cache = SlotCache(layers, max_rows)
        self._prefix = SlotCache(layers, 1)
        self._prefix_ids: list[int] = []
        self.requests: list[Any] = []
        self._ends: list[int] = []  # each row's next cache column, on the host
        self.valid = torch.zeros(max_rows, 0, dtype=torch.bool, device=device)  # the columns each row attends to
        self.seen = torch.zeros(max_rows, vocab, dtype=torch.bool, device=device)  # for the repetition penalty
        self.uniforms = torch.zeros(max_rows, 0, device=device)  # each row's random numbers, one per step
        floats = {"dtype": torch.float32, "device": device}
        self.temperature, self.top_p, self.penalty = (torch.zeros(max_rows, **floats) for _ in range(3))
        longs = {"dtype": torch.long, "device": device}
        self.end, self.position, self.last, self.drawn = (torch.zeros(max_rows, **longs) for _ in range(4))
        self.reused_tokens = 0  # prompt tokens taken from the shared prefix rather than computed

    def __len__(self) -> int:
        return len(self.requests)

    def _reserve(self, rows: int, columns: int) -> None:
        self.cache.reserve(rows, columns)
        self.valid = _widened(self.valid, self.cache.capacity[1])

    def join(self, requests: list[Any]) -> torch.Tensor:
        """Start ``requests`` in the slots after the running rows; their first tokens."""
        prompts = [request.prompt_ids for request in requests]
        shared = self._share_prefix(prompts)
        suffixes = [prompt[shared:] for prompt in prompts]
        width = max(len(suffix) for suffix in suffixes)
        start, count, total = len(self), len(requests), shared + width
        rows = slice(start, start + count)
        self._reserve(start + count, total)
        if shared:
            self.cache.copy_rows(self._prefix, 0, rows, shared)
        padding = torch.tensor([width - len(suffix) for suffix in suffixes], device=self.device)
        inputs = torch.tensor([[self._pad_id] * (width - len(s)) + s for s in suffixes], device=self.device)
        real = torch.arange(width, device=self.device)[None, :] >= padding[:, None]
        self.valid[rows] = False
        self.valid[rows, :shared] = True
        self.valid[rows, shared:total] = real
        positions = shared + (real.cumsum(dim=-1) - 1).clamp(min=0)
        self.cache.plan_block(rows, shared, total)
        logits = self._forward(inputs, positions, self._block_mask(self.valid[rows, :total], shared), self.cache)
        self.reused_tokens += shared * count
        self.requests += requests
        self._ends += [total] * count
        self._start_rows(rows, requests)
        if count == 1:
            self._keep_as_prefix(start, prompts[0])
        return self._choose(rows, logits)

    def _start_rows(self, rows: slice, requests: list[Any]) -> None:
        """The per-row tensors of newly started ``rows``."""
        params = [request.params for request in requests]
        self.end[rows] = self._ends[rows.start]
        self.position[rows] = torch.tensor([len(r.prompt_ids) for r in requests], device=self.device)
        self.temperature[rows] = torch.tensor([p.temperature for p in params], device=self.device)
        self.top_p[rows] = torch.tensor([p.top_p for p in params], device=self.device)
        self.penalty[rows] = torch.tensor([p.repetition_penalty for p in params], device=self.device)
        self.drawn[rows] = 0
        self.seen[rows] = False
        slots = [slot for slot, r in enumerate(requests, start=rows.start) for _ in r.prompt_ids]
        tokens = [token for r in requests for token in r.prompt_ids]
        self.seen[torch.tensor(slots, device=self.device), torch.tensor(tokens, device=self.device)] = True
        steps = max(request.max_new_tokens for request in requests)  # greedy rows draw too, numbers unused
        self.uniforms = _widened(self.uniforms, steps)
        streams = torch.zeros(len(requests), steps)
        for row, request in enumerate(requests):
            stream = uniform_stream(request.params, request.max_new_tokens)
            streams[row, : len(stream)] = stream
        self.uniforms[rows, :steps] = streams.to(self.device)

    def _share_prefix(self, prompts: list[list[int]]) -> int:
        """How many leading tokens of ``prompts`` come from the prefix cache (at least one token each is left).

        A group of several prompts gets the prefix they all share computed there first, in
        one pass over what the cached prefix lacks; one prompt alone takes what it shares
        with the cached prefix and no pass (its own prompt becomes the prefix afterwards).
        """
        shared = min(shared_prefix_length(prompts), min(len(prompt) for prompt in prompts) - 1)
        prefix = prompts[0][: max(shared, 0)]
        known = shared_prefix_length([self._prefix_ids, prefix])
        if len(prompts) == 1 or known == shared:
            return known
        self._prefix_ids = []  # until the pass below succeeds
        self._prefix.reserve(1, shared)
        self._prefix.plan_block(slice(0, 1), known, shared)
        valid = torch.ones(1, shared, dtype=torch.bool, device=self.device)
        inputs = torch.tensor([prefix[known:]], device=self.device)
        positions = torch.arange(known, shared, device=self.device)[None, :]
        self._forward(inputs, positions, self._block_mask(valid, known), self._prefix)
        self._prefix_ids = prefix
        return shared

    def _keep_as_prefix(self, slot: int, prompt: list[int]) -> None:
        """Make a prompt that joined alone the cached prefix: its columns are its prompt's, without padding."""
        if shared_prefix_length([self._prefix_ids, prompt]) < len(prompt):
            self._prefix_ids = []
            self._prefix.reserve(1, len(prompt))
            self._prefix.copy_rows(self.cache, slot, slice(0, 1), len(prompt))
            self._prefix_ids = list(prompt)

    def _block_mask(self, valid: torch.Tensor, start: int) -> torch.Tensor:
        """The attention mask of a pass writing columns ``start..`` of rows whose columns ``valid`` are theirs:
        each query sees the valid columns up to its own, and itself (a padding query must see something)."""
        columns = torch.arange(valid.shape[1], device=self.device)
        query_columns = columns[start:, None]
        causal = columns[None, :] <= query_columns
        mask = (valid[:, None, :] & causal[None]) | (columns[None, :] == query_columns)[None]
        return mask[:, None]

    def step(self) -> torch.Tensor:
        """One forward pass over every row; their next tokens."""
        count = len(self)
        read = max(self._ends) + 1
        self._reserve(count, read)
        rows = slice(0, count)
        columns = self.end[rows]
        self.valid[torch.arange(count, device=self.device), columns] = True
        self.cache.plan_columns(columns, read)
        logits = self._forward(self.last[rows, None], self.position[rows, None], self.valid[rows, None, None, :read],
                               self.cache)
        self.end[rows] += 1
        self.position[rows] += 1
        self._ends = [end + 1 for end in self._ends]
        return self._choose(rows, logits)

    def _choose(self, rows: slice, logits: torch.Tensor) -> torch.Tensor:
        """The next token of each of ``rows`` from its logits, noted as seen and as the row's next input."""
        mix = RowMix.of([request.params for request in self.requests[rows]])
        uniform = self.uniforms[rows].gather(1, self.drawn[rows, None]).squeeze(1)
        tokens = next_tokens(logits, self.seen[rows], self.temperature[rows], self.top_p[rows], self.penalty[rows],
                             uniform, mix)
        self.drawn[rows] += 1
        self.seen[rows][torch.arange(len(tokens), device=self.device), tokens] = True
        self.last[rows] = tokens
        return tokens

    def drop(self, finished: list[int]) -> None:
        """Remove the rows at ``finished``: the last rows move into their slots."""
        if not finished:
            return
        gone = set(finished)
        remaining = len(self) - len(gone)
        holes = [i for i in range(remaining) if i in gone]
        movers = [i for i in range(remaining, len(self)) if i not in gone]
        if holes:
            sources = torch.tensor(movers, device=self.device)
            targets = torch.tensor(holes, device=self.device)
            self.cache.move_rows(list(zip(movers, holes)), max(self._ends[i] for i in movers))
            for tensor in (self.valid, self.seen, self.uniforms, self.temperature, self.top_p, self.penalty,
                           self.end, self.position, self.last, self.drawn):
                tensor[targets] = tensor[sources]
            for hole, mover in zip(holes, movers):
                self.requests[hole], self._ends[hole] = self.requests[mover], self._ends[mover]
        del self.requests[remaining:], self._ends[remaining:]

    def clear(self) -> None:
        """Forget every row and the shared prefix (after a failed pass, whatever it left half written)."""
        self.requests, self._ends, self._prefix_ids = [], [], []
