"""An adapter's training set: the corpus shards of its sources, deduplicated and split.

Deduplication runs here, across every shard and source of the adapter, because a
duplicate pair can sit in two shards; the corpus shards themselves stay independent.
Exact duplicates (same text after normalizing whitespace and case) go first, then near
duplicates by MinHash LSH over the signatures the corpus shards stored (see
``dedup``). Of each duplicate group the conversation with the smallest seed id is
kept, so the choice does not depend on shard order; every dropped one is recorded with
the id it duplicates. The train/eval split follows a salted hash of each conversation's
id, holding out as many as :func:`.eval_split.eval_count` says; with a fractional
``eval_size`` it is a function of the id alone, so a conversation stays on its side when
other shards change.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from upath import UPath

from ..config.pipeline import NearDedupConfig
from ..storage import read_parquet
from . import dedup
from .eval_split import eval_count
from .schema import CONVERSATION_SCHEMA, REJECT_SCHEMA

EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
# One conversation to train on and one to hold out.
MIN_TRAINING_CONVERSATIONS = 2
# Salt of the split hash: the split must not correlate with the shard (also a hash of the id).
_SPLIT_SALT = "baize-eval-split"

# The conversation columns without the MinHash signatures (only dedup needs those).
TRAINING_SET_SCHEMA = pa.schema(
    [f for f in CONVERSATION_SCHEMA if not f.name.startswith("minhash")] + [pa.field("split", pa.string())]
)
DUPLICATE_SCHEMA = pa.schema([*REJECT_SCHEMA, ("duplicate_of", pa.string()), ("similarity", pa.float64())])


@dataclass
class TrainingSet:
    conversations: pd.DataFrame  # TRAINING_SET_SCHEMA
    duplicates: pd.DataFrame  # DUPLICATE_SCHEMA
    recomputed_signatures: int = 0  # conversations whose stored signature was missing or of another scheme

    def split(self, name: str) -> pd.DataFrame:
        return self.conversations[self.conversations["split"] == name]


def _split_hash(seed_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{_SPLIT_SALT}:{seed_id}".encode()).digest()[:8], "big")


def split_of(seed_id: str, fraction: float) -> str:
    """``"eval"`` for a stable ``fraction`` of seed ids, ``"train"`` for the rest."""
    return "eval" if _split_hash(seed_id) < fraction * 2**64 else "train"


def assign_splits(seed_ids: Sequence[str], eval_size: int | float) -> list[str]:
    """The split of each of ``seed_ids``: ``eval_count`` of them held out, by the hash of the id.

    A count holds out exactly that many, those of lowest hash. A fraction holds out the ids
    whose hash falls below it: that many give or take, and each id's side is its own.
    """
    n_eval = eval_count(len(seed_ids), eval_size)
    if n_eval == 0:
        return ["train"] * len(seed_ids)
    if isinstance(eval_size, float):
        return [split_of(seed_id, eval_size) for seed_id in seed_ids]
    by_hash = sorted(range(len(seed_ids)), key=lambda i: (_split_hash(seed_ids[i]), seed_ids[i]))
    held_out = set(by_hash[:n_eval])
    return ["eval" if i in held_out else "train" for i in range(len(seed_ids))]


def _signatures(frame: pd.DataFrame, rows: np.ndarray, config: NearDedupConfig) -> tuple[np.ndarray, int]:
    """The stored signatures of ``frame``'s ``rows``, recomputing those of another scheme or missing."""
    version = dedup.signature_version(config)
    stored = frame["minhash_version"].to_numpy()[rows] if "minhash_version" in frame else np.full(len(rows), None)
    usable = stored == version
    sigs = np.zeros((len(rows), config.num_perm), dtype=np.uint32)
    if usable.any():
        sigs[usable] = np.stack(frame["minhash"].to_numpy()[rows[usable]]).astype(np.uint32)
    stale = np.flatnonzero(~usable)
    if len(stale):
        turns = [[t["text"] for t in frame["turns"].iat[rows[i]]] for i in stale]
        sigs[stale] = dedup.conversation_signatures(turns, config)
    return sigs, len(stale)


def _duplicate_rows(dropped: pd.DataFrame, reason: str, owners: list[str], similarity, details: list[str]) -> dict:
    return {
        "seed_id": dropped["seed_id"].tolist(),
        "seed": dropped["seed"].tolist(),
        "source": dropped["source"].tolist(),
        "shard": dropped["shard"].tolist(),
        "reason": [reason] * len(dropped),
        "detail": details,
        "transcript": [None] * len(dropped),
        "duplicate_of": owners,
        "similarity": list(similarity),
    }


def build_training_set(corpus: pd.DataFrame, eval_size: int | float, near: NearDedupConfig) -> TrainingSet:
    """Deduplicate the concatenated corpus shards and assign each conversation a split."""
    corpus = corpus.reset_index(drop=True)
    # Positions in (seed id, source) order; the big columns are only taken once, at the end.
    order = corpus[["seed_id", "source"]].sort_values(["seed_id", "source"], kind="stable").index.to_numpy()
    groups = dedup.exact_groups(corpus["text"])[order]
    _, first_of_group = np.unique(groups, return_index=True)
    same_as = first_of_group[groups]  # the position in ``order`` of each text's first equal
    first = same_as == np.arange(len(order))
    seed_ids = corpus["seed_id"].to_numpy()
    exact_owners = seed_ids[order[same_as[~first]]].tolist()
    tables = [
        _duplicate_rows(
            corpus.take(order[~first]), EXACT_DUPLICATE, exact_owners, [1.0] * len(exact_owners),
            [f"same text as {o}" for o in exact_owners],
        )
    ]  # fmt: skip
    kept = order[first]
    recomputed = 0
    if near.enabled and len(kept) > 1:
        sigs, recomputed = _signatures(corpus, kept, near)
        found = dedup.near_duplicates(sigs, near)
        if found:
            dropped_index = np.array([d.index for d in found])
            owners = seed_ids[kept[[d.duplicate_of for d in found]]].tolist()
            scores = [d.similarity for d in found]
            tables.append(
                _duplicate_rows(
                    corpus.take(kept[dropped_index]), NEAR_DUPLICATE, owners, scores,
                    [f"estimated Jaccard {s:.2f} with {o}" for s, o in zip(scores, owners)],
                )
            )  # fmt: skip
            kept = np.delete(kept, dropped_index)
    columns = [f.name for f in TRAINING_SET_SCHEMA if f.name != "split"]
    splits = assign_splits(seed_ids[kept].tolist(), eval_size)
    conversations = corpus[columns].take(kept).reset_index(drop=True).assign(split=splits)
    duplicates = pa.concat_tables([pa.Table.from_pydict(t, schema=DUPLICATE_SCHEMA) for t in tables])
    return TrainingSet(conversations, duplicates.to_pandas(), recomputed)


def split_counts(path: Path | UPath) -> dict[str, int]:
    """Conversations per split of a training-set file, reading its ``split`` column only."""
    splits = read_parquet(path, columns=["split"])["split"].to_list()
    return {name: splits.count(name) for name in ("train", "eval")}


def shortfall(name: str, counts: dict[str, int]) -> str | None:
    """Why the training set ``name`` (split sizes ``counts``) is too small to train on, or None."""
    total = counts["train"] + counts["eval"]
    if total < MIN_TRAINING_CONVERSATIONS:
        return (
            f"{name} holds {total} conversation{'' if total == 1 else 's'}; training needs at least "
            f"{MIN_TRAINING_CONVERSATIONS} (1 for training, 1 held out) — add seeds to its sources or loosen the "
            "corpus filters (each corpus shard's rejects say why conversations were dropped)"
        )
    if counts["train"] == 0:
        return (
            f"{name} holds {total} conversations, all of them held out; training needs at least 1 in the train "
            "split — add seeds to its sources or lower the adapter's training.eval_size"
        )
    return None
