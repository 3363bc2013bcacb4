"""Reading a teacher's judgments: one answer scored 1-100 (self-distillation), two answers 1-10 (evaluation).

A judgment is free text from a model, or the JSON object of its structured output
(:data:`~baize_assets.core.prompts.SCORE_ANSWER_FORMAT`), so nothing here trusts it: an
answer without a number, with a number out of range, with two candidate numbers or with a
refusal is a row with a reason, never a crash and never a silent zero. A step whose
judgments mostly hold no score fails instead of passing them on (:func:`unscored_problem`).
Pure Python, no Dagster.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from ..corpus.patterns import REFUSAL_PATTERN
from ..prompts import COMPARE_ANSWERS_FIELDS, SCORE_ANSWER_FIELD

# Reasons a judgment gave no score.
NO_SCORE = "no_score"
OUT_OF_RANGE = "out_of_range"
SEVERAL_SCORES = "several_scores"
JUDGE_REFUSED = "judge_refused"
EMPTY_JUDGMENT = "empty_judgment"
JUDGMENT_REASONS = (NO_SCORE, OUT_OF_RANGE, SEVERAL_SCORES, JUDGE_REFUSED, EMPTY_JUDGMENT)

SINGLE_SCALE = (1, 100)
PAIR_SCALE = (1, 10)
CONVERSATION_SCALE = (1, 10)

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w])")
# "85/100", "85 out of 100", "8/10": the denominator names the scale, it is not a second score.
_OUT_OF = re.compile(r"\s*(?:/|out of)\s*(?:100|10)\b", re.IGNORECASE)
_LABEL = re.compile(r"^\s*(?:\**\s*)?(?:overall\s+)?(?:score|rating|scores|ratings)\s*\**\s*[:=]?\s*", re.IGNORECASE)
_LEADING = re.compile(r"\s*[-+]?\d+(?:\.\d+)?(?:[\s,;]+[-+]?\d+(?:\.\d+)?)*(?![\w.]\d)")
_REFUSAL = re.compile(REFUSAL_PATTERN + r"|\bi (?:cannot|can't|won't|will not) (?:rate|score|judge|evaluate)",
                      re.IGNORECASE)


@dataclass(frozen=True)
class Judgment:
    """What a judgment says: its scores (empty when none could be read) or why there are none."""

    scores: tuple[float, ...]
    reason: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


def _numbers(line: str) -> list[float]:
    """The scores a line gives: the numbers it starts with, else every number in it.

    "85. It covers 3 points" starts with its score; "I would rate it 64" does not.
    """
    stripped = _OUT_OF.sub("", _LABEL.sub("", line))
    leading = _LEADING.match(stripped)
    if leading:
        return [float(match) for match in _NUMBER.findall(leading.group(0))]
    return [float(match) for match in _NUMBER.findall(stripped)]


def _first_line_with_numbers(text: str) -> tuple[str, list[float]]:
    for line in text.splitlines():
        numbers = _numbers(line)
        if numbers:
            return line.strip(), numbers
    return "", []


def _json_scores(text: str, fields: tuple[str, ...]) -> tuple[str, list[float]] | None:
    """The scores of a structured judgment (``fields`` of a JSON object), or None when ``text`` is no JSON object."""
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    values = [data.get(name) for name in fields]
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ", ".join(f"{name}={data.get(name)!r}" for name in fields), numbers if len(numbers) == len(fields) else []


def _read(text: str | None, count: int, scale: tuple[int, int], fields: tuple[str, ...]) -> Judgment:
    text = (text or "").strip()
    if not text:
        return Judgment((), EMPTY_JUDGMENT, "the judgment is empty")
    line, numbers = _json_scores(text, fields) or _first_line_with_numbers(text)
    if not numbers:
        if _REFUSAL.search(text):
            return Judgment((), JUDGE_REFUSED, text[:200])
        return Judgment((), NO_SCORE, f"no number in the judgment: {text[:200]!r}")
    if len(numbers) != count:
        return Judgment((), SEVERAL_SCORES if len(numbers) > count else NO_SCORE,
                        f"expected {count} score(s) on the line {line[:200]!r}, found {len(numbers)}")
    low, high = scale
    outside = [n for n in numbers if not low <= n <= high]
    if outside:
        return Judgment((), OUT_OF_RANGE, f"{outside[0]:g} is outside {low}-{high} in {line[:200]!r}")
    return Judgment(tuple(numbers))


def read_single_score(text: str | None) -> Judgment:
    """One score 1-100: a structured judgment's ``score``, else the first line of a judgment that holds a number."""
    return _read(text, 1, SINGLE_SCALE, (SCORE_ANSWER_FIELD,))


def read_conversation_score(text: str | None) -> Judgment:
    """One score 1-10 of a whole conversation (the judge filter), structured or on the first line with a number."""
    return _read(text, 1, CONVERSATION_SCALE, (SCORE_ANSWER_FIELD,))


def read_pair_scores(text: str | None) -> Judgment:
    """Two scores 1-10 (first answer, second answer), from a structured judgment or the first line with numbers."""
    return _read(text, 2, PAIR_SCALE, COMPARE_ANSWERS_FIELDS)


def score_row(reply, read: Callable[[str | None], Judgment]) -> tuple:
    """(score, reason, judgment, detail) of one collected judge reply (a row of the collector's table): the
    score ``read`` finds in it, or why it has none (``request_<kind>`` when the request failed)."""
    if isinstance(reply.get("failure_kind"), str):
        return None, f"request_{reply['failure_kind']}", None, reply.get("failure_message")
    judgment = read(reply["transcript"])
    return judgment.scores[0] if judgment.ok else None, judgment.reason, reply["transcript"], judgment.detail or None


def unscored_problem(reasons: Iterable[str | None], max_fraction: float, step: str, model: str) -> str | None:
    """Why a step's judgments cannot be used, when more than ``max_fraction`` of them hold no score; else None.

    ``reasons`` holds one entry per judgment: None (or NaN) where it was scored, else why not.
    """
    reasons = list(reasons)
    # A table's missing reason may read as NaN rather than None: only a reason's text counts.
    unscored = Counter(reason for reason in reasons if isinstance(reason, str))
    missing = sum(unscored.values())
    if not reasons or missing <= max_fraction * len(reasons):
        return None
    counts = ", ".join(f"{count} {reason}" for reason, count in unscored.most_common())
    return (f"{missing} of the {len(reasons)} judgments of {step} hold no score ({counts}), more than "
            f"judge.max_unscored_fraction ({max_fraction:g}) allows. Is judge.model ('{model}') a judge? A chat "
            "model that is not one answers a judge prompt with prose or numbers off the scale: name a stronger "
            "model in judge.model (on its own endpoint with judge.base_url_env and judge.api_key_env if need be)")


@dataclass(frozen=True)
class PairVerdict:
    """One question judged in both orders; ``None`` scores are orders whose judgment was unreadable."""

    question_id: str
    candidate_scores: tuple[float | None, float | None]
    reference_scores: tuple[float | None, float | None]

    @property
    def readable(self) -> bool:
        return all(s is not None for s in self.candidate_scores + self.reference_scores)

    @property
    def outcome(self) -> str | None:
        """win / tie / loss of the candidate, on the scores summed over both orders."""
        if not self.readable:
            return None
        difference = sum(self.candidate_scores) - sum(self.reference_scores)
        return "win" if difference > 0 else "loss" if difference < 0 else "tie"


def pair_verdict(question_id: str, candidate_first: Judgment, reference_first: Judgment) -> PairVerdict:
    """Combine the two orders: ``candidate_first`` judged (candidate, reference), the other (reference, candidate).

    Judging both orders and summing cancels the judge's preference for a position.
    """
    a = candidate_first.scores if candidate_first.ok else (None, None)
    b = reference_first.scores if reference_first.ok else (None, None)
    return PairVerdict(question_id, (a[0], b[1]), (a[1], b[0]))


@dataclass(frozen=True)
class JudgeSummary:
    relative_score_pct: float | None
    wins: int
    ties: int
    losses: int
    unreadable: int

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def summarize(verdicts: Iterable[PairVerdict]) -> JudgeSummary:
    """The paper's relative score (candidate total / reference total, %) and win/tie/loss counts.

    Questions with an unreadable order are counted as unreadable and left out of both.
    """
    verdicts = list(verdicts)
    readable = [v for v in verdicts if v.readable]
    candidate = sum(sum(v.candidate_scores) for v in readable)
    reference = sum(sum(v.reference_scores) for v in readable)
    outcomes = [v.outcome for v in readable]
    return JudgeSummary(
        relative_score_pct=round(100 * candidate / reference, 2) if reference else None,
        wins=outcomes.count("win"),
        ties=outcomes.count("tie"),
        losses=outcomes.count("loss"),
        unreadable=len(verdicts) - len(readable),
    )


def best_of(scores: Sequence[float | None]) -> int | None:
    """Index of the best-scored answer (first of equals), or None when no answer has a score."""
    scored = [(score, -index) for index, score in enumerate(scores) if score is not None]
    return -max(scored)[1] if scored else None
