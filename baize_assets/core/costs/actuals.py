"""What the data really cost: per corpus shard, per kept conversation, per training set.

A transcripts row holds what its conversation cost when it was asked (a cached row keeps
its first cost: money is paid once), and a failure row what its answered requests cost.
Spread over what the corpus kept, that is the price of a kept conversation, retries and
rejects paid for; the rejects' share is reported by reason (a teacher failure by its
failure kind). Single-turn sources (Alpaca) cost nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from ..corpus.reasons import TEACHER_FAILURE

# The training set's Parquet metadata key holding what its data cost (read by the model card).
DATA_COST_KEY = b"baize.data_cost"


@dataclass(frozen=True)
class ShardCost:
    spent_dollars: float | None  # None when no row was priced
    kept: int
    lost_by_reason: dict[str, float]  # dollars of the conversations the corpus dropped (or never got), by reason

    @property
    def dollars_per_kept(self) -> float | None:
        return self.spent_dollars / self.kept if self.spent_dollars is not None and self.kept else None


def shard_cost(transcripts: pd.DataFrame, kept_ids: pd.Series, rejects: pd.DataFrame) -> ShardCost:
    """What a corpus shard's transcripts cost, and what its rejects cost by reason."""
    priced = transcripts["dollars"].notna() if "dollars" in transcripts else pd.Series(False, index=transcripts.index)
    if not priced.any():
        return ShardCost(None, len(kept_ids), {})
    dollars = transcripts.set_index("seed_id")["dollars"].fillna(0.0)
    dollars = dollars[~dollars.index.duplicated()]
    lost: dict[str, float] = {}
    for row in rejects.itertuples():
        reason = row.reason
        if reason == TEACHER_FAILURE and isinstance(row.detail, str):
            reason = f"{TEACHER_FAILURE}:{row.detail.split(':', 1)[0]}"  # the detail starts with the failure kind
        lost[reason] = lost.get(reason, 0.0) + float(dollars.get(row.seed_id, 0.0))
    return ShardCost(float(dollars.sum()), len(kept_ids), {k: round(v, 6) for k, v in sorted(lost.items())})


@dataclass(frozen=True)
class DataCost:
    """What a training set's data cost: every shard of its sources, over the conversations the set holds."""

    dollars: float | None
    conversations: int

    @property
    def per_conversation(self) -> float | None:
        return self.dollars / self.conversations if self.dollars is not None and self.conversations else None

    def as_dict(self) -> dict:
        per = self.per_conversation
        return {"dollars": None if self.dollars is None else round(self.dollars, 6),
                "conversations": self.conversations, "dollars_per_conversation": None if per is None else round(per, 8)}


def data_cost(shard_spends: list[float | None], conversations: int) -> DataCost:
    priced = [s for s in shard_spends if s is not None]
    return DataCost(sum(priced) if priced else None, conversations)


def with_data_cost(schema: pa.Schema, cost: DataCost) -> pa.Schema:
    """``schema`` carrying ``cost`` in its metadata, so the file says what its data cost."""
    return schema.with_metadata({**(schema.metadata or {}), DATA_COST_KEY: json.dumps(cost.as_dict()).encode()})
