"""The simulated teacher as a judge: deterministic scores that depend on the answers.

A real judge reads the answers; this one compares each with its own answer to the same
question (the first AI turn of its self-chat about that question) by the overlap of
their content words, and with the question by how many of its words the answer takes up.
The teacher's own answer scores highest, an answer about something else lowest, so a
test can tell a better answer from a worse one. Offline scores are
simulated: they measure closeness to the simulated teacher, nothing more.

Asked for structured output, it answers the judgment's JSON schema; as a model that is no
judge (``judge=False``), it answers with scores far outside the scale, as a small chat
model asked to judge was seen to do.
"""

from __future__ import annotations

import json
import re

from ..core.prompts import (
    COMPARE_ANSWERS_FIELDS,
    RAW_AI,
    RAW_HUMAN,
    SCORE_ANSWER_FIELD,
    parse_compare_answers_prompt,
    parse_rate_conversation_prompt,
    parse_score_answer_prompt,
)
from .text import STOPWORDS, self_chat_transcript, stable_rng

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


def _judgment(scores: list[int], names: tuple[str, ...], structured: bool, explanation: str) -> str:
    if structured:
        return json.dumps({"explanation": explanation, **dict(zip(names, scores))})
    return f"{' '.join(map(str, scores))}\n{explanation}"


def judge_reply(prompt: str, model: str, as_judge: bool = True, structured: bool = False) -> str | None:
    """The judgment of a scoring or comparison prompt (JSON when ``structured``), or None when ``prompt`` is neither.

    ``as_judge`` False scores out of every scale, deterministically per prompt.
    """
    scored = parse_score_answer_prompt(prompt)
    compared = parse_compare_answers_prompt(prompt) if scored is None else None
    rated = parse_rate_conversation_prompt(prompt) if scored is None and compared is None else None
    if scored is None and compared is None and rated is None:
        return None
    if not as_judge:
        rng = stable_rng("no judge", prompt, model)
        names = COMPARE_ANSWERS_FIELDS if compared is not None else (SCORE_ANSWER_FIELD,)
        return _judgment([rng.randint(101, 999) for _ in names], names, structured,
                         "I liked this conversation a lot and would happily read more of it.")
    if rated is not None:
        human = next((t.text for t in rated if t.role == "human"), "")
        answer = next((t.text for t in rated if t.role == "ai"), "")
        return _judgment([1 + round(9 * answer_quality(human, answer, model))], (SCORE_ANSWER_FIELD,), structured,
                         "Simulated rating by how close the first answer is to the teacher's own.")
    if scored is not None:
        question, answer = scored
        score = 1 + round(99 * answer_quality(question, answer, model))
        return _judgment([score], (SCORE_ANSWER_FIELD,), structured,
                         "Simulated judgment by closeness to the question and to the reference answer.")
    question, first, second = compared
    scores = [1 + round(9 * answer_quality(question, answer, model)) for answer in (first, second)]
    return _judgment(scores, COMPARE_ANSWERS_FIELDS, structured,
                     "Simulated judgment by closeness to the reference answer.")
