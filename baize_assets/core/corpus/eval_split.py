"""The eval-split policy: how many conversations an adapter holds out, and which when no split is given.

``training.eval_size`` is a count of conversations (an int: Baize held out 2,000) or a
fraction of them (a float below 1). A count is capped at a fifth of the set, so a count
meant for a large corpus leaves most of a small one to train on; a fraction is taken as
given. A set too small to spare a conversation holds none out. The training set splits
by its conversations' ids (``trainingset.assign_splits``); a training run handed bare
conversations splits them here by content hash, holding out the same number.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

from ..prompts import Turn, render_conversation

MIN_CONVERSATIONS_FOR_EVAL = 5
MAX_EVAL_FRACTION_OF_COUNT = 0.2


def eval_count(n_conversations: int, eval_size: int | float) -> int:
    """How many of ``n_conversations`` to hold out for ``eval_size`` (a count or a fraction)."""
    if n_conversations < MIN_CONVERSATIONS_FOR_EVAL:
        return 0
    if isinstance(eval_size, float):
        return max(1, round(eval_size * n_conversations))
    return min(eval_size, math.floor(MAX_EVAL_FRACTION_OF_COUNT * n_conversations))


def split_by_hash(texts: Sequence[str], n_eval: int) -> tuple[list[int], list[int]]:
    """Indices of the train and eval conversations, both ordered by content hash.

    Ordering by the hash of the text makes the split, and the training order built on
    it, independent of the order the conversations arrive in.
    """
    order = sorted(range(len(texts)), key=lambda i: (hashlib.sha256(texts[i].encode()).hexdigest(), i))
    return order[n_eval:], order[:n_eval]


def held_out_split(
    conversations: Sequence[Sequence[Turn]], eval_size: int | float
) -> tuple[list[Sequence[Turn]], list[Sequence[Turn]], str | None]:
    """The train and eval conversations of a run given no eval split, each in content-hash order.

    As many are held out as :func:`eval_count` says, the rule the training set follows
    too; the third item says why none are, if none are.
    """
    n_eval = eval_count(len(conversations), eval_size)
    train_ids, eval_ids = split_by_hash([render_conversation(turns) for turns in conversations], n_eval)
    too_few = f"no eval set: {len(conversations)} conversations, fewer than {MIN_CONVERSATIONS_FOR_EVAL}"
    note = None if n_eval else too_few
    return [conversations[i] for i in train_ids], [conversations[i] for i in eval_ids], note


def hash_ordered(conversations: Sequence[Sequence[Turn]]) -> list[Sequence[Turn]]:
    """Conversations in content-hash order, as :func:`split_by_hash` orders a split."""
    order = split_by_hash([render_conversation(turns) for turns in conversations], 0)[0]
    return [conversations[i] for i in order]
