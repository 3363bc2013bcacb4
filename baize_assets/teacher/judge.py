"""The simulated teacher as a judge: deterministic scores that depend on the answers.

A real judge reads the answers; this one compares each with its own answer to the same
question (the first AI turn of its self-chat about that question) by the overlap of
their content words, and with the question by how many of its words the answer takes up.
The teacher's own answer scores highest, an answer about something else lowest, so a
test can tell a better answer from a worse one. Offline scores are
simulated: they measure closeness to the simulated teacher, nothing more.
"""

from __future__ import annotations

import re

from ..core.prompts import RAW_AI, RAW_HUMAN, parse_compare_answers_prompt, parse_score_answer_prompt
from .text import STOPWORDS, self_chat_transcript

_WORD = re.compile(r"[a-z0-9][a-z0-9+#'-]*")


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in STOPWORDS}


def reference_answer(question: str, model: str) -> str:
    """The simulated teacher's own answer to ``question``: the first AI turn of its self-chat."""
    transcript = self_chat_transcript(question, model, 1.0)
    first_ai = transcript.split(f"\n{RAW_HUMAN}")[0].partition(RAW_AI)[2]
    return first_ai.strip()


def closeness(answer: str, reference: str) -> float:
    """F1 of the content words of ``answer`` against ``reference``, 0 to 1."""
    got, want = _content_words(answer), _content_words(reference)
    common = len(got & want)
    if not common:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def answer_quality(question: str, answer: str, model: str) -> float:
    """0 to 1: half closeness to the teacher's own answer, half the share of the question's words it takes up."""
    asked = _content_words(question)
    on_topic = len(asked & _content_words(answer)) / len(asked) if asked else 0.0
    return 0.5 * closeness(answer, reference_answer(question, model)) + 0.5 * on_topic


def judge_reply(prompt: str, model: str) -> str | None:
    """The judgment of a scoring or comparison prompt, or None when ``prompt`` is neither."""
    scored = parse_score_answer_prompt(prompt)
    if scored is not None:
        question, answer = scored
        score = 1 + round(99 * answer_quality(question, answer, model))
        return f"{score}\nSimulated judgment by closeness to the question and to the reference answer."
    compared = parse_compare_answers_prompt(prompt)
    if compared is not None:
        question, first, second = compared
        scores = [1 + round(9 * answer_quality(question, answer, model)) for answer in (first, second)]
        return f"{scores[0]} {scores[1]}\nSimulated judgment by closeness to the reference answer."
    return None
