"""The judge filter (opt-in, ``corpus.judge_filter``): a judge's 1-10 rating of each kept conversation.

What distilabel's UltraFeedback and the Baize v2 paper do with a judge, applied to the
corpus: the judge reads a conversation the cheap filters kept and rates the AI's replies
for helpfulness and correctness; the training set leaves out those rated under
``min_score``, with the reason ``judge_score``. A rating that could not be read (or a
request that failed) leaves the conversation in, counted: the judge's step fails instead
when most ratings are unreadable. Pure pandas, no Dagster; the requests go through the
collector like every judge call.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from ..feedback.judgments import read_conversation_score, score_row
from ..prompts import Turn, rate_conversation_prompt

JUDGE_SCORE = "judge_score"  # a training set's reason for leaving out a conversation rated too low

RATING_SCHEMA = pa.schema(
    [
        ("seed_id", pa.string()),
        ("score", pa.float64()),
        ("reason", pa.string()),  # why there is no score (a judgments reason, or request_<failure kind>)
        ("judgment", pa.string()),
        ("detail", pa.string()),
    ]
)


def rating_requests(conversations: pd.DataFrame) -> pd.DataFrame:
    """One judge request per kept conversation, in the seed-table shape the collector takes."""
    return pd.DataFrame({
        "seed_id": conversations["seed_id"],
        "seed": [rate_conversation_prompt(Turn(t["role"], t["text"]) for t in turns)
                 for turns in conversations["turns"]],
        "source": conversations["source"],
        "shard": conversations["shard"],
    })


def read_ratings(conversations: pd.DataFrame, judged: pd.DataFrame) -> pd.DataFrame:
    """One rating row per conversation (``RATING_SCHEMA``): its score, or the reason it has none."""
    by_id = judged.drop_duplicates("seed_id").set_index("seed_id")
    rows = [(seed_id, *score_row(by_id.loc[seed_id], read_conversation_score)) for seed_id in conversations["seed_id"]]
    return pd.DataFrame(rows, columns=RATING_SCHEMA.names)


def rated_below(conversations: pd.DataFrame, ratings: pd.DataFrame, min_score: int) -> pd.Series:
    """Which conversations the judge rated under ``min_score`` (an unrated one is not)."""
    scores = ratings.drop_duplicates("seed_id").set_index("seed_id")["score"]
    rated = conversations["seed_id"].map(scores)
    return rated.notna() & (rated < min_score)
