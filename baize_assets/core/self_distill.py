"""Self-distillation with feedback (Baize v2), the data side: what to sample, and what v2 trains on.

For each chosen conversation of a corpus shard the trained adapter answers the last human
turn, with the turns before it as context (the seed's own conversation, as in the paper),
k times; the teacher scores every answer; v2 trains on the best-scored answer per seed,
its loss on that answer only. Pure pandas, no Dagster, no model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import pyarrow as pa

from .judging import best_of
from .prompts import Turn

SAMPLE_SCHEMA = pa.schema(
    [
        ("seed_id", pa.string()),
        ("source", pa.string()),
        ("sample_index", pa.int32()),
        ("context", pa.list_(pa.struct([("role", pa.string()), ("text", pa.string())]))),
        ("answer", pa.string()),
        ("finish_reason", pa.string()),
    ]
)
SCORE_SCHEMA = pa.schema(
    [
        ("seed_id", pa.string()),
        ("sample_index", pa.int32()),
        ("score", pa.float64()),
        ("reason", pa.string()),
        ("judgment", pa.string()),
    ]
)


@dataclass(frozen=True)
class FeedbackContext:
    seed_id: str
    source: str
    context: list[Turn]  # ends with the human turn to answer


def _rank(seed_id: str, salt: int) -> str:
    return hashlib.sha256(f"{salt}\0{seed_id}".encode()).hexdigest()


def feedback_contexts(conversations: pd.DataFrame, limit: int | None, salt: int = 0) -> list[FeedbackContext]:
    """Up to ``limit`` conversations of a shard (all with None), chosen by a stable hash of their seed id.

    The same shard, limit and salt always give the same contexts, so a rerun samples the
    same questions and a larger limit only adds to a smaller one's choice.
    """
    rows = sorted(conversations.itertuples(index=False), key=lambda row: _rank(row.seed_id, salt))
    contexts = []
    for row in rows[:limit] if limit is not None else rows:
        turns = [Turn(t["role"], t["text"]) for t in row.turns]
        last_human = max((i for i, turn in enumerate(turns) if turn.role == "human"), default=None)
        if last_human is not None:
            contexts.append(FeedbackContext(row.seed_id, row.source, turns[: last_human + 1]))
    return contexts


def best_answer_conversations(samples: pd.DataFrame, scores: pd.DataFrame) -> tuple[list[list[Turn]], dict]:
    """The v2 training conversations (context + best answer, one per seed) and counts of what was left out.

    A seed whose answers all lack a score is left out (counted), never trained on at random.
    """
    scored = samples.merge(scores[["seed_id", "sample_index", "score"]], on=["seed_id", "sample_index"], how="left")
    conversations, no_score = [], 0
    for _, group in scored.sort_values(["seed_id", "sample_index"]).groupby("seed_id", sort=True):
        values = [None if pd.isna(score) else float(score) for score in group["score"]]
        best = best_of(values)
        if best is None:
            no_score += 1
            continue
        row = group.iloc[best]
        context = [Turn(t["role"], t["text"]) for t in row["context"]]
        conversations.append(context + [Turn("ai", row["answer"])])
    return conversations, {"seeds": len(conversations) + no_score, "trained": len(conversations), "no_score": no_score}


def context_turns(conversations: Sequence[Sequence[Turn]]) -> list[int]:
    """For each v2 conversation, how many leading turns are context (all but the answer): no loss on them."""
    return [len(turns) - 1 for turns in conversations]
