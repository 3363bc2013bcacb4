"""The simulated teacher's words: deterministic placeholder self-chats and replies.

Every answer is a function of the request (seed, model, temperature), built from
templates around the seed's key phrases, so runs are reproducible and nobody mistakes
the text for a real teacher's. Token counts use one approximation everywhere:
``ceil(whitespace-separated words * 4 / 3)`` (see :func:`approx_tokens`).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from typing import Any, Sequence

from baize_assets.core.prompts import (
    RAW_AI,
    RAW_HUMAN,
    seed_from_self_chat_prompt,
)


def approx_tokens(text: str) -> int:
    """Approximate token count: whitespace-separated words × 4/3, rounded up."""
    return math.ceil(len(text.split()) * 4 / 3)


def prompt_tokens_of(messages: list[Any]) -> int:
    """The prompt tokens of a request's messages, as the chat endpoint counts them (non-messages count none)."""
    return sum(approx_tokens(content_text(m.get("content"))) for m in messages if isinstance(m, dict))


def apply_limits(text: str, stop: Sequence[str], max_tokens: int | None) -> tuple[str, str]:
    """Cut ``text`` like OpenAI does; returns ``(text, finish_reason)``.

    The text ends before the first occurrence of any stop sequence, then at
    ``max_tokens`` approximate tokens (finish reason ``length``).
    """
    cuts = [text.find(s) for s in stop if s and s in text]
    if cuts:
        text = text[: min(cuts)]
    if max_tokens is not None and approx_tokens(text) > max_tokens:
        # The most words whose approximate count fits: ceil(4w/3) <= m  <=>  w <= 3m/4.
        keep_words = (3 * max_tokens) // 4
        words = list(re.finditer(r"\S+", text))
        return (text[: words[keep_words - 1].end()] if keep_words else ""), "length"
    return text, "stop"


STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be because been before
    being between both but by can could did do does doing down during each few for from
    further had has have having he her here hers him his how i if in into is it its itself
    just me more most my no nor not now of off on once only or other our out over own same
    she should so some such than that the their them then there these they this those
    through to too under until up very was we were what when where which while who whom
    why will with would you your yours best way ways get make thing things tell know explain
    please like want need think use using good""".split()
)

_FIRST_QUESTION_FOR_QUESTION = ("{seed}", "I have a question: {seed}", "Can you help me with this? {seed}")
_FIRST_QUESTION_FOR_TOPIC = (
    "Can you tell me about {seed}?",
    "I'd like to learn about {seed}. Where should I start?",
    "What is important to know about {seed}?",
)
_FOLLOW_UPS = (
    "How does {a} relate to {b}?",
    "What should a beginner know about {a}?",
    "What is a common mistake people make with {a}?",
    "Could you give me an example involving {a}?",
    "Why does {a} matter in practice?",
    "Where can I learn more about {a}?",
    "Does {b} change how {a} works?",
    "What would you do first if you were dealing with {a}?",
)
# The first answer of every transcript opens with one of these, so nobody mistakes
# the corpus for a real teacher's.
_PLACEHOLDER_OPENERS = (
    "This is a simulated answer about {a}, written as a placeholder.",
    "As a simulated teacher, I can give a placeholder overview of {a}.",
    "Here is a placeholder explanation of {a} from the simulated teacher.",
)
_ANSWER_SENTENCES = (
    "The short version is that {a} depends a lot on context, so it helps to start with the basics.",
    "A useful first step is to look at how {a} connects to {b}.",
    "Many people find {a} easier once they break it into smaller, concrete steps.",
    "The details vary from case to case, but the core idea behind {a} stays the same.",
    "One practical example is comparing {a} and {b} side by side and noting where they differ.",
    "It is worth checking a reliable reference on {a}, because advice about it changes over time.",
    "A common mistake is to treat {a} as a single thing when it really has several parts.",
    "If you keep {b} in mind, the role of {a} becomes much clearer.",
    "Practising {a} a little every day usually works better than doing it all at once.",
    "In most situations {a} matters less than people expect, while {b} matters more.",
    "There is no single right answer about {a}, but a few principles apply almost everywhere.",
    "Thinking about why {a} exists in the first place often explains how it behaves.",
)
_PLAIN_REPLIES = (
    "This is a simulated reply from {model} about {a}; a real teacher model would answer here.",
    "Simulated answer from {model}: your message about {a} was received, and this placeholder stands in for a reply.",
    "Placeholder reply from {model}. A real model would now discuss {a} and {b} in detail.",
)
def stable_rng(*parts: object) -> random.Random:
    """A random generator seeded from a stable hash of ``parts`` (not Python's ``hash``)."""
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _clean(text: str) -> str:
    """One line of text without raw markers, safe to put inside a marker-format turn."""
    return " ".join(text.replace(RAW_HUMAN, " ").replace(RAW_AI, " ").split())


def key_phrases(text: str) -> list[str]:
    """The distinct runs of content words in ``text`` (at most 3 words each), in order.

    "How do volcanoes form on the ocean floor?" gives ["volcanoes form", "ocean floor"]:
    runs read better in the templates than single words.
    """
    words = [w.strip("'-") for w in re.findall(r"\w[\w+#'-]*", text)]
    if words and words[0].istitle():
        words[0] = words[0].lower()  # capitalised only because it starts the sentence
    phrases: list[list[str]] = [[]]
    for word in words:
        if len(word) < 3 or word.lower() in STOPWORDS or len(phrases[-1]) == 3:
            phrases.append([])
        if len(word) >= 3 and word.lower() not in STOPWORDS:
            phrases[-1].append(word)
    distinct = dict.fromkeys(" ".join(p) for p in phrases if p)
    return list(distinct) or [w for w in words if w][:3] or ["this topic"]


def _two_phrases(rng: random.Random, phrases: list[str]) -> dict[str, str]:
    """Template fields: ``a`` a key phrase, ``b`` another one (or "its context")."""
    a = rng.choice(phrases)
    others = [p for p in phrases if p != a]
    return {"a": a, "b": rng.choice(others) if others else "its context"}


def self_chat_transcript(seed: str, model: str, temperature: float) -> str:
    """A deterministic placeholder self-chat about ``seed`` in the raw marker format.

    It continues after the prompt's example exchange: 2 to 4 ``[Human]``/``[AI]``
    exchanges, each answer 2–4 sentences mentioning the seed's key words.
    """
    rng = stable_rng("self-chat", seed, model, float(temperature))
    topic = _clean(seed) or "this topic"
    phrases = key_phrases(topic)
    if topic.endswith("?"):
        questions = [rng.choice(_FIRST_QUESTION_FOR_QUESTION).format(seed=topic)]
    else:
        questions = [rng.choice(_FIRST_QUESTION_FOR_TOPIC).format(seed=topic.rstrip("."))]
    exchanges = rng.randint(2, 4)
    questions += [q.format(**_two_phrases(rng, phrases)) for q in rng.sample(_FOLLOW_UPS, exchanges - 1)]

    lines = []
    for number, question in enumerate(questions):
        sentences = [s.format(**_two_phrases(rng, phrases)) for s in rng.sample(_ANSWER_SENTENCES, rng.randint(2, 4))]
        if number == 0:
            sentences[0] = rng.choice(_PLACEHOLDER_OPENERS).format(**_two_phrases(rng, phrases))
        lines += [f"{RAW_HUMAN} {question}", f"{RAW_AI} {' '.join(sentences)}"]
    return "\n".join(lines)


def plain_reply(message: str, model: str, temperature: float) -> str:
    """A deterministic short placeholder answer to an ordinary chat message."""
    rng = stable_rng("plain", message, model, float(temperature))
    return rng.choice(_PLAIN_REPLIES).format(model=model, **_two_phrases(rng, key_phrases(_clean(message))))


def content_text(content: Any) -> str:
    """The text of a message's content: a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def last_user_text(messages: list[dict[str, Any]]) -> str:
    return next((content_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")


def prompt_subject(messages: list[dict[str, Any]]) -> str:
    """The seed of a self-chat prompt, else the last user message: what a scripted reply is chosen by."""
    last_user = last_user_text(messages)
    seed = seed_from_self_chat_prompt(last_user)
    return last_user if seed is None else seed

