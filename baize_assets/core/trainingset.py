"""An adapter's training set: the corpus shards of its sources, deduplicated and split.

Deduplication runs here, across every shard and source of the adapter, because a
duplicate pair can sit in two shards; the corpus shards themselves stay independent.
The train/eval split is a function of each conversation's own id, so a conversation
stays on its side when other shards change.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from .corpus import CONVERSATION_SCHEMA, REJECT_SCHEMA
from .seeds import normalize_text

EXACT_DUPLICATE = "exact_duplicate"
# Salt of the split hash: the split must not correlate with the shard (also a hash of the id).
_SPLIT_SALT = "baize-eval-split"

TRAINING_SET_SCHEMA = pa.schema(
    [*CONVERSATION_SCHEMA, ("split", pa.string())]
)
DUPLICATE_SCHEMA = pa.schema([*REJECT_SCHEMA, ("duplicate_of", pa.string())])


@dataclass
class TrainingSet:
    conversations: pd.DataFrame  # TRAINING_SET_SCHEMA
    duplicates: pd.DataFrame  # DUPLICATE_SCHEMA

    def split(self, name: str) -> pd.DataFrame:
        return self.conversations[self.conversations["split"] == name]


def eval_fraction(eval_size: int | float, n_conversations: int) -> float:
    """The held-out fraction: ``eval_size`` is a fraction, or a count of the current set.

    A fraction keeps the split fully stable; a count (Baize held out 2,000) is turned
    into the fraction of the current set, at most a fifth of it.
    """
    if isinstance(eval_size, float):
        return eval_size
    return min(eval_size / n_conversations, 0.2) if n_conversations else 0.0


def split_of(seed_id: str, fraction: float) -> str:
    """``"eval"`` for a stable ``fraction`` of seed ids, ``"train"`` for the rest."""
    digest = hashlib.sha256(f"{_SPLIT_SALT}:{seed_id}".encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "big") < fraction * 2**64 else "train"


def _exact_key(text: str) -> str:
    return hashlib.sha256(normalize_text(text).lower().encode()).hexdigest()


def build_training_set(corpus: pd.DataFrame, eval_size: int | float) -> TrainingSet:
    """Deduplicate the concatenated corpus shards and assign each conversation a split.

    Of each group of exact duplicates (same text after normalizing whitespace and case)
    the conversation with the smallest seed id is kept, so the choice does not depend on
    shard order; the others are recorded with the id they duplicate.
    """
    ordered = corpus.sort_values(["seed_id", "source"], kind="stable").reset_index(drop=True)
    keys = ordered["text"].map(_exact_key)
    first = ~keys.duplicated()
    kept = ordered[first].copy()
    owner = dict(zip(keys[first], kept["seed_id"]))
    dropped = ordered[~first].copy()
    duplicates = pd.DataFrame(
        {
            "seed_id": dropped["seed_id"],
            "seed": dropped["seed"],
            "source": dropped["source"],
            "shard": dropped["shard"],
            "reason": EXACT_DUPLICATE,
            "detail": [f"same text as {owner[k]}" for k in keys[~first]],
            "transcript": None,
            "duplicate_of": [owner[k] for k in keys[~first]],
        }
    )
    fraction = eval_fraction(eval_size, len(kept))
    kept["split"] = [split_of(seed_id, fraction) for seed_id in kept["seed_id"]]
    return TrainingSet(
        pa.Table.from_pandas(kept, schema=TRAINING_SET_SCHEMA, preserve_index=False).to_pandas(),
        pa.Table.from_pandas(duplicates, schema=DUPLICATE_SCHEMA, preserve_index=False).to_pandas(),
    )
