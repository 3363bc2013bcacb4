"""How many conversations an adapter holds out for evaluation: one rule for the training set and the trainer.

``training.eval_size`` is a count of conversations (an int: Baize held out 2,000) or a
fraction of them (a float below 1). A count is capped at a fifth of the set, so a count
meant for a large corpus leaves most of a small one to train on; a fraction is taken as
given. A set too small to spare a conversation holds none out.
"""

from __future__ import annotations

import math

MIN_CONVERSATIONS_FOR_EVAL = 5
MAX_EVAL_FRACTION_OF_COUNT = 0.2


def eval_count(n_conversations: int, eval_size: int | float) -> int:
    """How many of ``n_conversations`` to hold out for ``eval_size`` (a count or a fraction)."""
    if n_conversations < MIN_CONVERSATIONS_FOR_EVAL:
        return 0
    if isinstance(eval_size, float):
        return max(1, round(eval_size * n_conversations))
    return min(eval_size, math.floor(MAX_EVAL_FRACTION_OF_COUNT * n_conversations))
