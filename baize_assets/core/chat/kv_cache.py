"""A key/value cache whose rows are slots of preallocated buffers, written in place.

transformers' ``DynamicCache`` concatenates every step's keys and values onto the cache,
a copy of the whole cache per step, and copies it again to drop or add rows. Here each
layer's keys and values live in buffers of ``[rows, kv heads, columns, head dim]`` that
grow by doubling (a copy each time a capacity doubles, never per step). Before each
forward pass the caller plans where its new keys and values go: a block of columns in a
range of rows (a prompt, :meth:`SlotCache.plan_block`) or one column per row, each row
its own (a decoding step, :meth:`SlotCache.plan_columns`); the pass then attends to the
first ``read`` columns of its rows. Which of those a row may attend to is the caller's
4D attention mask, which transformers passes to the attention as it is.

Rows stay in their slot while they decode; one that leaves is overwritten by moving
another row into its slot (:meth:`SlotCache.move_rows`, only the rows moved are copied).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

__all__ = ["SlotCache"]


@dataclass
class _Plan:
    """Where the next forward pass writes: ``rows`` at ``start`` onwards, or row i of ``:rows`` at ``columns[i]``."""

    rows: slice
    read: int
    start: int = 0
    columns: torch.Tensor | None = None
    row_index: torch.Tensor | None = None  # 0..len(columns)-1, made once a pass, not once a layer

    def write(self, buffer: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        if self.columns is None:
            buffer[self.rows, :, self.start : self.start + states.shape[2]] = states
        else:
            buffer[self.row_index, :, self.columns] = states[:, :, 0]
        return buffer[self.rows, :, : self.read]


class _SlotLayer(CacheLayerMixin):
    """One layer's buffers, allocated (zeroed: unwritten columns must not hold NaN) at the first write."""

    is_sliding = False

    def __init__(self, cache: "SlotCache"):
        super().__init__()
        self._cache = cache

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        rows, columns = self._cache.capacity
        self.keys = key_states.new_zeros(rows, key_states.shape[1], columns, key_states.shape[3])
        self.values = value_states.new_zeros(rows, value_states.shape[1], columns, value_states.shape[3])
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        plan = self._cache.plan
        return plan.write(self.keys, key_states), plan.write(self.values, value_states)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self._cache.plan.read, 0

    def get_seq_length(self) -> int:
        return self._cache.plan.read if self._cache.plan else 0

    def get_max_length(self) -> int:
        return -1

    def grow(self, rows: int, columns: int) -> None:
        old_keys, old_values = self.keys, self.values
        shape = (rows, old_keys.shape[1], columns, old_keys.shape[3])
        self.keys, self.values = old_keys.new_zeros(shape), old_values.new_zeros(shape[:3] + old_values.shape[3:])
        kept_rows, kept_columns = old_keys.shape[0], old_keys.shape[2]
        self.keys[:kept_rows, :, :kept_columns] = old_keys
        self.values[:kept_rows, :, :kept_columns] = old_values


class SlotCache(Cache):
    """The keys and values of ``layers`` attention layers for up to ``max_rows`` rows."""

    def __init__(self, layers: int, max_rows: int):
        self.capacity = (0, 0)
        self.plan: _Plan | None = None
        self.max_rows = max_rows
        super().__init__(layers=[_SlotLayer(self) for _ in range(layers)])

    def reserve(self, rows: int, columns: int) -> None:
        """Room for ``rows`` rows of ``columns`` columns: each capacity at least doubles when it grows."""
        if rows > self.max_rows:
            raise ValueError(f"{rows} rows asked of a cache for {self.max_rows}")
        held_rows, held_columns = self.capacity
        if rows <= held_rows and columns <= held_columns:
            return
        self.capacity = (
            held_rows if rows <= held_rows else min(self.max_rows, max(rows, 2 * held_rows)),
            held_columns if columns <= held_columns else max(columns, 2 * held_columns),
        )
        for layer in self.layers:
            if layer.is_initialized:
                layer.grow(*self.capacity)

    def plan_block(self, rows: slice, start: int, read: int) -> None:
        """The next pass writes its tokens in ``rows`` from column ``start`` on and reads their first ``read``."""
        self.plan = _Plan(rows, read, start=start)

    def plan_columns(self, columns: torch.Tensor, read: int) -> None:
        """The next pass writes one token per row, row i (of the first ``len(columns)``) at ``columns[i]``."""
        self.plan = _Plan(slice(0, len(columns)), read, columns=columns,
                          row_index=torch.arange(len(columns), device=columns.device))

    def move_rows(self, moves: list[tuple[int, int]], columns: int) -> None:
        """Copy the first ``columns`` columns of each row ``source`` into row ``target``, for ``(source, target)``
        in ``moves`` (a few rows at a time: plain slice copies are cheaper than gathering them)."""
        for layer in self.layers:
            if layer.is_initialized:
                for source, target in moves:
                    layer.keys[target, :, :columns] = layer.keys[source, :, :columns]
                    layer.values[target, :, :columns] = layer.values[source, :, :columns]

    def copy_rows(self, source: "SlotCache", source_row: int, rows: slice, columns: int) -> None:
        """Copy the first ``columns`` columns of ``source``'s row ``source_row`` into each of ``rows``."""
        for mine, theirs in zip(self.layers, source.layers):
            if not mine.is_initialized:
                mine.lazy_initialization(theirs.keys, theirs.values)
            mine.keys[rows, :, :columns] = theirs.keys[source_row : source_row + 1, :, :columns]
            mine.values[rows, :, :columns] = theirs.values[source_row : source_row + 1, :, :columns]
