"""Turns in the other speaker's voice: role confusion that no marker gives away.

A teacher writing both sides of a self-chat sometimes lets the human speak as the
assistant ("How can I help you today?", "I hope this helps!", a list of tips with no
question) or the AI speak as the human (asking for an explanation, thanking for one,
answering with questions although the prompt tells the AI not to ask any).

Human turn, assistant voice: an assistant self-reference or service phrase
(``ASSISTANT_SELF``), or at least ``min_advice_cues`` advice phrases (``ADVICE``) in a
turn that asks nothing and gives no human identity ("as a developer", "I'm a nurse":
a person sharing advice of their own). AI turn, human voice: a request or reaction of
the asker (``HUMAN_VOICE``), or a turn that ends with a question when at least
``min_question_share`` of its sentences are questions. Offers ("Would you like an
example?"), code, URLs and rhetorical questions answered in the same turn do not count.
Quoted text is left out: a human quoting what an AI said is not speaking as one.

Every pattern is RE2 (Arrow's regex engine) and Python ``re`` alike; the masks run over
all turns of a shard at once.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config.corpus import RoleVoiceConfig

# Double-quoted spans, and single-quoted ones that open after a space, bracket or colon.
QUOTED = r"\"[^\"\n]*\"|“[^”\n]*”|(?:^|[\s(:])'[^'\n]*'"
ASSISTANT_SELF = (
    r"(?i)\bas an? (?:ai|artificial intelligence)(?: language model| assistant| model| chatbot)?[,.]"
    r"|\bas (?:a |an )?(?:ai )?language model\b|\bas your (?:ai |virtual |digital )?assistant\b"
    r"|\bi(?:'m| am) (?:just |only )?(?:an? |your )(?:ai|artificial intelligence|virtual assistant"
    r"|digital assistant|language model|chatbot)(?: language model| assistant| model)?"
    r"(?:[,.!;]|\s+(?:and|so|but|that|designed|created|trained|here|programmed)\b)"
    r"|\bhow (?:can|may|might) i (?:help|assist) you\b|\bis there anything else (?:i can|you(?:'d| would) like)"
    r"|\bi(?:'m| am) (?:always )?(?:here|happy|glad) to (?:help|assist)\b|\bi(?:'d| would) be (?:happy|glad) to help\b"
    r"|\bi hope (?:this|that|my (?:answer|explanation)) (?:helps|was helpful|answers your question)"
    r"|\bglad (?:i could|to) help\b|\blet me know if you have any (?:other|more|further) questions\b"
    r"|\bfeel free to (?:ask|reach out)\b|^\W*you(?:'re| are) (?:very |most )?welcome(?:[!.,]|$)"
    r"|\bi (?:do not|don't) have personal (?:opinions|beliefs|experiences|feelings|preferences)\b"
)
ADVICE = (
    r"(?i)\bhere (?:are|is) (?:some |a few |several |the |my |a couple of )?(?:tips|steps|ways|suggestions"
    r"|options|examples|ideas|reasons|strategies|recommendations)\b"
    r"|\b(?:i|we) (?:would |'d )?(?:recommend|suggest|advise) (?:that you|you|trying|using|starting|consulting)\b"
    r"|\byou (?:should|could|can|might want to|may want to) (?:also )?(?:try|consider|use|start|check|avoid)\b"
    r"|\bmake sure (?:to|you)\b|\bit(?:'s| is) (?:important|a good idea|best|essential|crucial) to\b"
    r"|\b(?:great|good|excellent) question\b|^\W*(?:sure|certainly|absolutely|of course)[!,.]"
    r"|\n\s*2[.)]\s|\bin (?:summary|conclusion)\b|\bto summarize\b"
)
# A person introducing their own role: advice from them is theirs, not the assistant's.
HUMAN_IDENTITY = (
    r"(?i)\b(?:as an?|i(?:'m| am) an?|i work as an?) (?:[a-z-]+ )?[a-z-]*(?:er|or|ist|ian|ant|ent"
    r"|nurse|parent|mom|dad|mother|father|chef|coach|owner)\b|\bin my experience\b"
)
HUMAN_VOICE = (
    r"(?i)\b(?:can|could|would) you (?:please )?(?:explain|tell me|help me|show me|give me|recommend|suggest)\b"
    r"|\bi (?:have|had) (?:a|another|one more) (?:question|follow-up)\b"
    r"|\bi(?:'m| am) (?:curious|wondering|confused) (?:about|if|whether|how|why|what|which)\b"
    r"|\bi (?:want|would like|'d like) to (?:know|learn|understand|find out)\b"
    r"|\bthanks?(?: you)?(?: so much| very much| a lot)? for (?:the|your|this|that) (?:help|explanation|answer"
    r"|advice|tips|suggestions?|recommendations?)\b"
    r"|^\W*that(?:'s| is| was) (?:very |really |super |so )?helpful[.!,]"
    r"|\bwhat (?:do|would) you (?:think|suggest|recommend)\b|\bwhat should i (?:do|try|use)\b"
)
# Questions an assistant may end with: offers of more, not the asker's questions.
OFFER = (
    r"(?i)(?:would you like|do you want me to|shall i|should i|anything else|any (?:other|more|further) questions"
    r"|does (?:this|that) (?:help|make sense))[^.!?\n]*\?"
)
# Text where a "?" is not a question: code blocks, inline code, URLs, quotes.
NOT_PROSE = r"(?s)```.*?(?:```|$)|~~~.*?(?:~~~|$)|`[^`\n]*`|https?://\S+|www\.\S+|" + QUOTED
_QUESTION = r"\?+"
_SENTENCE_END = r"[.!?…]+(?:\s|$)"
_ENDS_WITH_QUESTION = r"\?[\s\"'”’)\]*_]*$"

_COMPILED = {name: re.compile(pattern) for name, pattern in (
    ("assistant", ASSISTANT_SELF), ("advice", ADVICE), ("identity", HUMAN_IDENTITY), ("human", HUMAN_VOICE),
    ("offer", OFFER),
)}  # fmt: skip


def _matches(texts: pa.Array, pattern: str) -> np.ndarray:
    return pc.match_substring_regex(texts, pattern).to_numpy(zero_copy_only=False)


def _counts(texts: pa.Array, pattern: str) -> np.ndarray:
    return pc.count_substring_regex(texts, pattern).to_numpy(zero_copy_only=False)


def _unquoted(texts: pa.Array) -> pa.Array:
    return pc.replace_substring_regex(texts, QUOTED, " ")


def _assistant_voice(human: pa.Array, config: RoleVoiceConfig) -> np.ndarray:
    human = _unquoted(human)
    advises = _counts(human, ADVICE) >= config.min_advice_cues
    asks = pc.match_substring(human, "?").to_numpy(zero_copy_only=False)
    return _matches(human, ASSISTANT_SELF) | (advises & ~asks & ~_matches(human, HUMAN_IDENTITY))


def _question_stats(texts: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per text: asker's questions (offers left out), sentences, whether it ends with a question."""
    prose = pc.replace_substring_regex(texts, NOT_PROSE, " ")
    questions = _counts(prose, _QUESTION) - _counts(prose, OFFER)
    sentences = np.maximum(_counts(prose, _SENTENCE_END), 1)
    return questions, sentences, _matches(prose, _ENDS_WITH_QUESTION)


def _human_voice(ai: pa.Array, config: RoleVoiceConfig) -> np.ndarray:
    voiced = _matches(ai, HUMAN_VOICE)
    # A cue may sit inside a quote ("ask your doctor: 'Can you explain my results?'"): look again without quotes.
    cued = np.flatnonzero(voiced)
    if len(cued):
        voiced[cued] = _matches(_unquoted(ai.take(pa.array(cued))), HUMAN_VOICE)
    # Only turns holding a "?" can be mostly questions; most answers hold none.
    asking = np.flatnonzero(pc.match_substring(ai, "?").to_numpy(zero_copy_only=False) & ~voiced)
    if len(asking):
        questions, sentences, ends_asking = _question_stats(ai.take(pa.array(asking)))
        voiced[asking] = ends_asking & (questions >= 1) & (questions >= config.min_question_share * sentences)
    return voiced


def voice_mismatch(texts: pa.Array, is_ai: np.ndarray, config: RoleVoiceConfig) -> np.ndarray:
    """Per turn: True where a human turn speaks as the assistant or an AI turn as the human."""
    mismatch = np.zeros(len(texts), dtype=bool)
    for speaker_is_ai, check in ((False, _assistant_voice), (True, _human_voice)):
        index = np.flatnonzero(is_ai == speaker_is_ai)
        if len(index):
            mismatch[index] = check(texts.take(pa.array(index)), config)
    return mismatch


def describe(text: str, is_ai: bool) -> str:
    """What gave a flagged turn away, for the reject's detail."""
    unquoted = re.sub(QUOTED, " ", text)
    for name in ("human",) if is_ai else ("assistant", "advice"):
        if found := _COMPILED[name].search(unquoted):
            voice = "the human's" if is_ai else "the assistant's"
            return f"speaks in {voice} voice: '{found.group(0).strip()}'"
    if is_ai:
        prose = re.sub(NOT_PROSE, " ", text)
        asked = len(re.findall(_QUESTION, prose)) - len(_COMPILED["offer"].findall(prose))
        sentences = max(len(re.findall(_SENTENCE_END, prose)), 1)
        return f"asks like the human: {asked} of {sentences} sentences are questions"
    return "gives advice in the assistant's voice"
