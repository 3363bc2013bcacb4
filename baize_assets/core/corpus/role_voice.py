"""Turns in the other speaker's voice: role confusion that no marker gives away.

A teacher writing both sides of a self-chat sometimes lets the human speak as the
assistant ("How can I help you today?", "I hope this helps!", a list of tips with no
question) or the AI speak as the human (asking for an explanation, thanking for one,
answering with questions although the prompt tells the AI not to ask any).

Human turn, assistant voice: an assistant self-reference or service phrase
(``ASSISTANT_SELF``), or at least ``min_advice_cues`` advice phrases (``ADVICE``) in a
turn that asks nothing, gives no human identity ("as a developer", "I'm a nurse": a
person sharing advice of their own) and gives the assistant no instructions ("You are
a gift expert. You will ...": a user's prompt). AI turn, human voice: a request or
reaction of the asker (``HUMAN_VOICE``), or a turn that ends with a question when at
least ``min_question_share`` of its sentences are questions.

Only a turn's own prose counts (checked on hand-labelled real conversations, see
``real_text.py``): quotes, block quotes and a script's lines are other people's words
(:func:`own_words`), and in an AI turn so are code, URLs, list items and the line a colon
introduces (interview questions or a quiz the user asked for, "Here it is:" and a
riddle). An assistant's own questions do not count: offers ("Would you like an
example?") and questions about what the task needs ("Could you provide the file?",
"What would you like the function to do?"). Once the user asks for a role or for
questions ("act as an interviewer", "ask me questions"), the AI turns after it are not
judged at all.

Every pattern is RE2 (Arrow's regex engine) and Python ``re`` alike; the masks run over
all turns of a shard at once.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config.corpus import RoleVoiceConfig
from .patterns import AI_SELF, OTHER_VOICES, SCRIPT_CUE, SCRIPT_LINES

ASSISTANT_SELF = (
    "(?i)" + AI_SELF + r"|\bas your (?:ai |virtual |digital )?assistant\b"
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
    r"|\bin (?:summary|conclusion)\b|\bto summarize\b"
)
# A numbered list counts as one more advice cue, however many lists a turn holds.
LIST_CUE = r"\n\s*2[.)]\s"
# A person introducing their own role: advice from them is theirs, not the assistant's.
HUMAN_IDENTITY = (
    r"(?i)\b(?:as an?|i(?:'m| am) an?|i work as an?) (?:[a-z-]+ )?[a-z-]*(?:er|or|ist|ian|ant|ent"
    r"|nurse|parent|mom|dad|mother|father|chef|coach|owner)\b|\bin my experience\b"
)
# A user asking the assistant to play a role or to ask questions: the AI turns after it may rightly do both.
ROLE_REQUEST = (
    r"(?i)\b(?:act|acting|behave) (?:as|like)\b|\bpretend\b|\brole-?play|\bpersona\b|\bimagine (?:you|that you)\b"
    r"|\byou will (?:be|act|play|ask|interview|quiz)\b|\bi want you to (?:act|be|play|ask|pretend|interview|quiz)\b"
    r"|\bask me\b|\bask (?:some |a few )?(?:clarifying |follow-up )?questions\b|\b(?:quiz|interview) me\b"
    r"|\blet'?s play\b|\bplay a (?:game|role)\b|\byour name is\b"
    r"|(?:^|[.!?\n]\s*)(?:now,? |from now on,? )?you(?:'re| are) (?:now )?(?:a|an|my)\b"
    r"|\b(?:write|create|give|generate|list|make|prepare|suggest|draft)(?: me)? (?:\d+|a|an|some|a few|several|more"
    r"|the) (?:[\w-]+ ){0,3}(?:questions|quiz(?:zes)?|mcqs|riddles|assessment)\b"
)
# A user's instructions to the assistant, which read like advice but are a prompt.
USER_INSTRUCTION = (
    ROLE_REQUEST + r"|\bi (?:want|need|would like|'d like) you to\b|\byour (?:task|goal|job|role|objective) is\b"
    r"|\byou (?:will|must|shall) (?:\w+ ){0,2}(?:provide|follow|consider|write|create|give|request|assess"
    r"|output|answer|respond|generate)\b"
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
# Questions an assistant asks in its own voice: offers of more, and what the task needs from the user.
ASSISTANT_QUESTION = (
    r"(?i)(?:would you like|do you want me to|shall i|should i|anything else|any (?:other|more|further) questions"
    r"|does (?:this|that) (?:help|make sense)|how (?:can|may|might) i (?:help|assist)"
    r"|is there (?:anything|something|a (?:particular|specific) \w+)|you(?:'d| would) like me to"
    r"|(?:can|could|would) you (?:please )?(?:provide|share|clarify|specify|send|paste|describe|let me know"
    r"|give me (?:more|some|a few|the)|tell me (?:more|what|which|how|a bit|a little|about your))"
    r"|what (?:specific(?:ally)? |else |exactly )?(?:would|do) you (?:like|want|need))[^.!?\n]*\?"
)
# In an AI turn, text where a "?" is not the AI asking: code blocks, inline code, URLs,
# list items and the line a colon introduces.
NOT_PROSE = (
    r"(?s:```.*?(?:```|$))|(?s:~~~.*?(?:~~~|$))|`[^`\n]*`|https?://\S+|www\.\S+"
    r"|(?m:^[ \t]*(?:[-*+•]|\d{1,3}[.):]|[a-zA-Z][.)])[ \t][^\n]*$)|:[ \t]*\n(?:[ \t]*\n)*[^\n]*"
)
_QUESTION = r"\?+"
_SENTENCE_END = r"[.!?…]+(?:\s|$)"
_ENDS_WITH_QUESTION = r"\?[\s\"'”’)\]*_]*$"

_COMPILED = {name: re.compile(pattern) for name, pattern in (
    ("assistant", ASSISTANT_SELF), ("advice", ADVICE), ("human", HUMAN_VOICE), ("question", ASSISTANT_QUESTION),
)}  # fmt: skip


def _matches(texts: pa.Array, pattern: str) -> np.ndarray:
    return pc.match_substring_regex(texts, pattern).to_numpy(zero_copy_only=False)


def _counts(texts: pa.Array, pattern: str) -> np.ndarray:
    return pc.count_substring_regex(texts, pattern).to_numpy(zero_copy_only=False)


def own_words(texts: pa.Array) -> pa.Array:
    """``texts`` without quotes, block quotes and, in a script (two or more speaker cues), its characters' lines."""
    texts = pc.replace_substring_regex(texts, OTHER_VOICES, " ")
    script = _counts(texts, SCRIPT_CUE) >= 2
    if script.any():
        texts = pc.if_else(pa.array(script), pc.replace_substring_regex(texts, SCRIPT_LINES, " "), texts)
    return texts


def own_words_of(text: str) -> str:
    """:func:`own_words` of one text, in Python."""
    text = re.sub(OTHER_VOICES, " ", text)
    return re.sub(SCRIPT_LINES, " ", text) if len(re.findall(SCRIPT_CUE, text)) >= 2 else text


def _ai_prose(ai: pa.Array) -> pa.Array:
    return own_words(pc.replace_substring_regex(ai, NOT_PROSE, " "))


def _assistant_voice(human: pa.Array, config: RoleVoiceConfig) -> np.ndarray:
    human = own_words(human)
    advises = _counts(human, ADVICE) + _matches(human, LIST_CUE) >= config.min_advice_cues
    asks = pc.match_substring(human, "?").to_numpy(zero_copy_only=False)
    speaks_as_assistant = _matches(human, ASSISTANT_SELF) | (advises & ~asks & ~_matches(human, HUMAN_IDENTITY))
    instructs = np.flatnonzero(speaks_as_assistant)
    if len(instructs):
        speaks_as_assistant[instructs] = ~_matches(human.take(pa.array(instructs)), USER_INSTRUCTION)
    return speaks_as_assistant


def _question_stats(prose: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per prose text: asker's questions (the assistant's own left out), sentences, whether it ends with a question."""
    questions = _counts(prose, _QUESTION) - _counts(prose, ASSISTANT_QUESTION)
    sentences = np.maximum(_counts(prose, _SENTENCE_END), 1)
    return questions, sentences, _matches(prose, _ENDS_WITH_QUESTION)


def _human_voice(ai: pa.Array, config: RoleVoiceConfig) -> np.ndarray:
    voiced = _matches(ai, HUMAN_VOICE)
    # A cue may sit in a quote, a list or code ("1. Can you tell me about a project?"): look again at the prose.
    cued = np.flatnonzero(voiced)
    if len(cued):
        voiced[cued] = _matches(_ai_prose(ai.take(pa.array(cued))), HUMAN_VOICE)
    # Only turns holding a "?" can be mostly questions; most answers hold none.
    asking = np.flatnonzero(pc.match_substring(ai, "?").to_numpy(zero_copy_only=False) & ~voiced)
    if len(asking):
        questions, sentences, ends_asking = _question_stats(_ai_prose(ai.take(pa.array(asking))))
        voiced[asking] = ends_asking & (questions >= 1) & (questions >= config.min_question_share * sentences)
    return voiced


def role_requested(texts: pa.Array, is_ai: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Per turn: an earlier human turn of the same conversation (``owner``, in order) asks for a role or questions."""
    human = np.flatnonzero(~is_ai)
    asks = np.zeros(len(is_ai), dtype=np.int64)
    if len(human):
        asks[human] = _matches(texts.take(pa.array(human)), ROLE_REQUEST)
    asked = np.cumsum(asks)
    first_turn = np.searchsorted(owner, owner)
    return asked - np.concatenate([[0], asked])[first_turn] > 0


def voice_mismatch(
    texts: pa.Array, is_ai: np.ndarray, config: RoleVoiceConfig, requested: np.ndarray | None = None
) -> np.ndarray:
    """Per turn: True where a human turn speaks as the assistant or an AI turn as the human.

    AI turns in ``requested`` (see :func:`role_requested`) are not judged.
    """
    mismatch = np.zeros(len(texts), dtype=bool)
    judged_ai = is_ai if requested is None else is_ai & ~requested
    for judged, check in ((~is_ai, _assistant_voice), (judged_ai, _human_voice)):
        index = np.flatnonzero(judged)
        if len(index):
            mismatch[index] = check(texts.take(pa.array(index)), config)
    return mismatch


def describe(text: str, is_ai: bool) -> str:
    """What gave a flagged turn away, for the reject's detail."""
    prose = own_words_of(re.sub(NOT_PROSE, " ", text) if is_ai else text)
    for name in ("human",) if is_ai else ("assistant", "advice"):
        if found := _COMPILED[name].search(prose):
            voice = "the human's" if is_ai else "the assistant's"
            return f"speaks in {voice} voice: '{found.group(0).strip()}'"
    if is_ai:
        asked = len(re.findall(_QUESTION, prose)) - len(_COMPILED["question"].findall(prose))
        sentences = max(len(re.findall(_SENTENCE_END, prose)), 1)
        return f"asks like the human: {asked} of {sentences} sentences are questions"
    return "gives advice in the assistant's voice"
