"""LLM-as-judge evaluation in the paper's protocol: two answers in one prompt, judged in both orders.

For each question of a fixed set, the candidate's answer and a reference's (the teacher's
own, or another adapter's) are put to the judge twice, once in each order, and the two
verdicts are combined (:func:`judging.pair_verdict`), which cancels a judge's preference
for a position. No Dagster here; the teacher's answers and judgments go through the
collector like every teacher call.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..feedback.judgments import JudgeSummary, PairVerdict, pair_verdict, read_pair_scores, summarize
from ..prompts import compare_answers_prompt

CANDIDATE_FIRST = "candidate_first"
REFERENCE_FIRST = "reference_first"


def load_questions(path: Path, limit: int | None = None) -> list[str]:
    """Questions from a text file (one per line, ``#`` comments) or JSONL (a ``question`` field per line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"judge question file not found: {path}")
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                question = json.loads(line).get("question")
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(question, str) or not question.strip():
                raise ValueError(f"{path}:{number}: the JSON line has no non-empty 'question' string")
            line = question.strip()
        questions.append(line)
    if not questions:
        raise ValueError(f"{path} holds no question")
    return questions[:limit]


def question_id(index: int) -> str:
    return f"q{index:03d}"


def reference_requests(questions: Sequence[str]) -> pd.DataFrame:
    """The teacher's own answer to each question: the question is the whole prompt."""
    return pd.DataFrame({"seed_id": [f"{question_id(i)}/reference" for i in range(len(questions))],
                         "seed": list(questions), "source": "judge", "shard": 0})


def teacher_answers(answered: pd.DataFrame) -> list[str | None]:
    """The collector's table of :func:`reference_requests` as answers in question order; None where it failed."""
    ordered = answered.set_index("seed_id").loc[[f"{question_id(i)}/reference" for i in range(len(answered))]]
    return [None if isinstance(kind, str) else text
            for kind, text in zip(ordered.get("failure_kind", [None] * len(ordered)), ordered["transcript"])]


def judge_requests(questions: Sequence[str], candidate: Sequence[str], reference: Sequence[str]) -> pd.DataFrame:
    """Two judge prompts per question, in the seed-table shape the collector takes."""
    rows = []
    for index, (question, ours, theirs) in enumerate(zip(questions, candidate, reference, strict=True)):
        rows.append((f"{question_id(index)}/{CANDIDATE_FIRST}", compare_answers_prompt(question, ours, theirs)))
        rows.append((f"{question_id(index)}/{REFERENCE_FIRST}", compare_answers_prompt(question, theirs, ours)))
    return pd.DataFrame({"seed_id": [r[0] for r in rows], "seed": [r[1] for r in rows], "source": "judge", "shard": 0})


def verdicts(questions: Sequence[str], judged: pd.DataFrame) -> list[PairVerdict]:
    """Each question's verdict from the collector's table of :func:`judge_requests`; a failed request reads as none."""
    by_key = judged.set_index("seed_id")

    def judgment(key: str):
        row = by_key.loc[key]
        return read_pair_scores(None if isinstance(row.get("failure_kind"), str) else row["transcript"])

    return [
        pair_verdict(question_id(i), judgment(f"{question_id(i)}/{CANDIDATE_FIRST}"),
                     judgment(f"{question_id(i)}/{REFERENCE_FIRST}"))
        for i in range(len(questions))
    ]


def judgment_reasons(judged: pd.DataFrame) -> list[str | None]:
    """Why each judgment of the collector's table of :func:`judge_requests` holds no scores (None where it does)."""
    failures = judged["failure_kind"] if "failure_kind" in judged else [None] * len(judged)
    return [f"request_{kind}" if isinstance(kind, str) else read_pair_scores(text).reason
            for kind, text in zip(failures, judged["transcript"])]


def judge_table(
    questions: Sequence[str], candidate: Sequence[str], reference: Sequence[str], judged: pd.DataFrame
) -> tuple[pd.DataFrame, JudgeSummary]:
    """One row per question (both answers, the scores in each order, the outcome) and the summary."""
    found = verdicts(questions, judged)
    table = pd.DataFrame(
        {
            "question": list(questions),
            "candidate_answer": list(candidate),
            "reference_answer": list(reference),
            "candidate_scores": [v.candidate_scores for v in found],
            "reference_scores": [v.reference_scores for v in found],
            "outcome": [v.outcome or "unreadable" for v in found],
        }
    )
    return table, summarize(found)


def table_markdown(table: pd.DataFrame, answer_chars: int = 160) -> str:
    """The per-question table for the Dagster UI: question, both answers (shortened), scores, outcome."""
    def cell(text: object) -> str:
        text = str(text).replace("|", "\\|").replace("\n", " ")
        return (text[: answer_chars - 1] + "…") if len(text) > answer_chars else text or "_(empty)_"

    def scores(pair: Sequence[float | None]) -> str:
        return " + ".join("?" if s is None else f"{s:g}" for s in pair)

    rows = [
        f"| {cell(r.question)} | {cell(r.candidate_answer)} | {cell(r.reference_answer)} | "
        f"{scores(r.candidate_scores)} | {scores(r.reference_scores)} | {r.outcome} |"
        for r in table.itertuples()
    ]
    header = "| question | adapter | reference | adapter scores | reference scores | outcome |"
    return "\n".join([header, "| --- | --- | --- | --- | --- | --- |", *rows])
