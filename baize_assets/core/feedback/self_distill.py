"""Self-distillation with feedback (Baize v2), the data side: what to sample, and what v2 trains on.

For each chosen conversation of a corpus shard the trained adapter answers the last human
turn, with the turns before it as context (the seed's own conversation, as in the paper),
k times; the teacher scores every answer; v2 trains on the best-scored answer per seed,
its loss on that answer only, or (``objective: dpo``) on each seed's best-versus-worst pair.
Pure pandas, no Dagster, no model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from ..corpus.schema import TURN_TYPE
from ..prompts import Turn, render_conversation, score_answer_prompt
from ..storage import Layout, read_parquet
from .judgments import best_of, read_single_score, score_row

_TURNS = pa.list_(TURN_TYPE)
SAMPLE_SCHEMA = pa.schema(
    [
        ("seed_id", pa.string()),
        ("source", pa.string()),
        ("shard", pa.int32()),
        ("sample_index", pa.int32()),
        ("context", _TURNS),
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
        ("detail", pa.string()),
    ]
)
# What v2 trains on, in the columns the trainer and the model card read of a training set.
DISTILLED_SET_SCHEMA = pa.schema(
    [
        ("seed_id", pa.string()),
        ("source", pa.string()),
        ("shard", pa.int32()),
        ("turns", _TURNS),
        ("text", pa.string()),
        ("split", pa.string()),
    ]
)
# What a preference objective trains on: per seed, its best- and worst-scored answers.
PAIR_SCHEMA = pa.schema(
    [
        ("seed_id", pa.string()),
        ("source", pa.string()),
        ("shard", pa.int32()),
        ("context", _TURNS),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("chosen_score", pa.float64()),
        ("rejected_score", pa.float64()),
    ]
)
# The judge request of one answer is keyed "<seed id>/<answer index>".
_ANSWER_KEY = "{seed_id}/{index}"


@dataclass(frozen=True)
class FeedbackContext:
    seed_id: str
    source: str
    shard: int
    context: list[Turn]  # ends with the human turn to answer


def _rank(seed_id: str, salt: int) -> str:
    return hashlib.sha256(f"{salt}\0{seed_id}".encode()).hexdigest()


def held_out_seed_ids(training_set: pd.DataFrame, duplicates: pd.DataFrame) -> set[str]:
    """v1's held-out conversations, and those its training set dropped as their duplicates.

    v2 is evaluated on v1's held-out conversations: sampling them (or a near copy of one)
    would train v2 on the prompts and contexts it is then evaluated on.
    """
    held_out = set(training_set.loc[training_set["split"] == "eval", "seed_id"])
    return held_out | set(duplicates.loc[duplicates["duplicate_of"].isin(held_out), "seed_id"])


def read_held_out_seed_ids(layout: Layout, adapter: str) -> set[str]:
    """:func:`held_out_seed_ids` of v1 ``adapter``'s training set as materialized (only the columns it needs)."""
    return held_out_seed_ids(read_parquet(layout.training_set(adapter), columns=["seed_id", "split"]),
                             read_parquet(layout.training_set_duplicates(adapter), columns=["seed_id", "duplicate_of"]))


def feedback_contexts(conversations: pd.DataFrame, limit: int | None, salt: int = 0,
                      excluded: set[str] = frozenset()) -> list[FeedbackContext]:
    """Up to ``limit`` conversations of a shard (all with None), chosen by a stable hash of their seed id,
    none of ``excluded`` (see :func:`held_out_seed_ids`).

    The same shard, limit and salt always give the same contexts, so a rerun samples the
    same questions and a larger limit only adds to a smaller one's choice.
    """
    rows = sorted((row for row in conversations.itertuples(index=False) if row.seed_id not in excluded),
                  key=lambda row: _rank(row.seed_id, salt))
    contexts = []
    for row in rows[:limit] if limit is not None else rows:
        turns = [Turn(t["role"], t["text"]) for t in row.turns]
        last_human = max((i for i, turn in enumerate(turns) if turn.role == "human"), default=None)
        if last_human is not None:
            contexts.append(FeedbackContext(row.seed_id, row.source, int(row.shard), turns[: last_human + 1]))
    return contexts


def best_answer_conversations(samples: pd.DataFrame, scores: pd.DataFrame) -> tuple[dict[str, list[Turn]], dict]:
    """The v2 training conversations by seed id (context + best answer) and counts of what was left out.

    A seed whose answers all lack a score is left out (counted), never trained on at random.
    """
    scored = samples.merge(scores[["seed_id", "sample_index", "score"]], on=["seed_id", "sample_index"], how="left")
    conversations, no_score = {}, 0
    for seed_id, group in scored.sort_values(["seed_id", "sample_index"]).groupby("seed_id", sort=True):
        values = [None if pd.isna(score) else float(score) for score in group["score"]]
        best = best_of(values)
        if best is None:
            no_score += 1
            continue
        row = group.iloc[best]
        context = [Turn(t["role"], t["text"]) for t in row["context"]]
        conversations[seed_id] = context + [Turn("ai", row["answer"])]
    return conversations, {"seeds": len(conversations) + no_score, "trained": len(conversations), "no_score": no_score}


def preference_pairs(samples: pd.DataFrame, scores: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Each seed's best- and worst-scored answers (``PAIR_SCHEMA``) and counts of the seeds left out.

    A seed with fewer than two scored answers has no pair (``no_score``); one whose best and
    worst score tie, or whose two answers are the same text, has nothing to prefer (``tied``).
    Of equal scores the first answer is the best and the last the worst.
    """
    scored = samples.merge(scores[["seed_id", "sample_index", "score"]], on=["seed_id", "sample_index"], how="left")
    rows, no_score, tied = [], 0, 0
    for seed_id, group in scored.sort_values(["seed_id", "sample_index"]).groupby("seed_id", sort=True):
        group = group[group["score"].notna()]
        if len(group) < 2:
            no_score += 1
            continue
        best = group.iloc[best_of([float(score) for score in group["score"]])]
        worst = group.iloc[len(group) - 1 - int(group["score"].iloc[::-1].to_numpy().argmin())]
        if best["score"] == worst["score"] or best["answer"] == worst["answer"]:
            tied += 1
            continue
        rows.append(
            {
                "seed_id": seed_id,
                "source": best["source"],
                "shard": int(best["shard"]),
                "context": list(best["context"]),
                "chosen": best["answer"],
                "rejected": worst["answer"],
                "chosen_score": float(best["score"]),
                "rejected_score": float(worst["score"]),
            }
        )
    counts = {"seeds": len(rows) + no_score + tied, "pairs": len(rows), "no_score": no_score, "tied": tied}
    return pd.DataFrame(rows, columns=PAIR_SCHEMA.names), counts


def pairs_path(training_set: Path) -> Path:
    """The preference pairs file, beside the distilled training set it was built with."""
    return training_set.with_suffix(".pairs.parquet")


def judge_requests(samples: pd.DataFrame) -> pd.DataFrame:
    """One teacher request per sampled answer, in the seed-table shape the collector takes."""
    return pd.DataFrame(
        {
            "seed_id": [
                _ANSWER_KEY.format(seed_id=seed_id, index=index)
                for seed_id, index in zip(samples["seed_id"], samples["sample_index"])
            ],
            "seed": [
                score_answer_prompt([Turn(t["role"], t["text"]) for t in context], answer)
                for context, answer in zip(samples["context"], samples["answer"])
            ],
            "source": samples["source"],
            "shard": samples["shard"],
        }
    )


def read_judgments(samples: pd.DataFrame, judged: pd.DataFrame) -> pd.DataFrame:
    """One score row per sampled answer (``SCORE_SCHEMA``): its score, or the reason it has none.

    ``judged`` is the collector's table for :func:`judge_requests` (``transcript`` holds
    the judgment, ``failure_kind`` a request that failed). Every answer gets a row.
    """
    by_key = judged.set_index("seed_id")
    rows = [(seed_id, index, *score_row(by_key.loc[_ANSWER_KEY.format(seed_id=seed_id, index=index)],
                                        read_single_score))
            for seed_id, index in zip(samples["seed_id"], samples["sample_index"])]
    return pd.DataFrame(rows, columns=SCORE_SCHEMA.names)


def distilled_training_set(
    samples: pd.DataFrame, scores: pd.DataFrame, held_out: pd.DataFrame
) -> tuple[pd.DataFrame, dict]:
    """v2's training set (``DISTILLED_SET_SCHEMA``): the best answer per seed (train), v1's held-out set (eval).

    Evaluating v2 on v1's eval split keeps the two adapters' held-out losses comparable.
    """
    conversations, counts = best_answer_conversations(samples, scores)
    seeds = samples.drop_duplicates("seed_id").set_index("seed_id")
    train = pd.DataFrame(
        {
            "seed_id": list(conversations),
            "source": [seeds.at[seed_id, "source"] for seed_id in conversations],
            "shard": [int(seeds.at[seed_id, "shard"]) for seed_id in conversations],
            "turns": [[t.as_dict() for t in turns] for turns in conversations.values()],
            "text": [render_conversation(turns) for turns in conversations.values()],
            "split": "train",
        }
    )
    evaluation = held_out[[name for name in DISTILLED_SET_SCHEMA.names if name != "split"]].assign(split="eval")
    return pd.concat([train, evaluation], ignore_index=True), counts
