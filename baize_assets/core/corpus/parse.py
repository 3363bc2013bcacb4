"""A raw teacher transcript into alternating ``[Human]`` / ``[AI]`` turns, or the reason it cannot be.

Text before the first marker, an echoed prompt example, a trailing unanswered
question, a turn cut off by the token limit and a last AI turn that ends unfinished by
its text alone are trimmed, and each trim is named, so the corpus counts it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from ..config.corpus import UnfinishedTurnConfig
from ..prompts import MARKER_ANYWHERE, MARKER_PATTERN, Turn
from .patterns import STRUCTURED_TEXT
from .reasons import (
    EMPTY_TRANSCRIPT,
    EMPTY_TURN,
    MARKER_IN_TURN,
    NO_TURNS,
    ROLE_CONFUSION,
    TRIMMED_CUT_OFF_TURN,
    TRIMMED_ECHOED_EXAMPLE,
    TRIMMED_PREAMBLE,
    TRIMMED_UNANSWERED_QUESTION,
    TRIMMED_UNFINISHED_TURN,
    TRUNCATED,
    UNFINISHED_TURN,
)
from .unfinished import unfinished_cause

# A marker at a line start, also with one bracket missing ("[Human Hi", "AI] Hello").
_MARKER_AT_LINE_START = re.compile(
    r"(?im)^[ \t]*(?:" + MARKER_PATTERN
    + r"|[\[［][ \t]*(?P<open_role>human|ai)\b[ \t]*:?|(?P<close_role>human|ai)[ \t]*[\]］][ \t]*:?)"
)  # fmt: skip
# Speaker labels ("Human: ...", "AI: ...") used as markers by a transcript that has no bracketed ones.
_LABEL_AT_LINE_START = re.compile(r"(?im)^[ \t]*(?P<role>human|ai)[ \t]*:")
# A speaker label written inside a turn ("Human: ...", "AI: ...") at a line start, with words
# after it; looked for outside code and tables, where "user: 'admin'" is data, and a bare
# "User:" line is a heading (both seen in real answers, see real_text.py).
_INNER_SPEAKER = re.compile(r"(?im)^[ \t]{0,3}(human|ai|assistant|user)[ \t]*:[ \t]*\S")
_STRUCTURED_TEXT = re.compile(STRUCTURED_TEXT)
# The one-exchange example that ends the self-chat prompt; teachers often echo it.
_EXAMPLE_EXCHANGE = (("human", "hello!"), ("ai", "hi! how can i help you?"))
# Characters that carry no text: byte-order mark, zero-width spaces and joiners, word joiner.
_INVISIBLE = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200d\u2060"), None)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Parsed:
    turns: list[Turn]
    reason: str | None = None
    detail: str | None = None
    trimmed: tuple[str, ...] = ()


def clean_text(text: str) -> str:
    """NFC, one kind of line end, no invisible or control characters."""
    text = unicodedata.normalize("NFC", text).translate(_INVISIBLE)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
    return _CONTROL.sub("", text)


def _turn_markers(text: str) -> list[tuple[str, int, int]] | None:
    """(role, start of marker, end of marker) of every marker that starts a turn."""
    found = []
    for match in _MARKER_AT_LINE_START.finditer(text):
        role = match.group("role") or match.group("open_role") or match.group("close_role")
        found.append((role.lower(), match.start(), match.end()))
    if len(found) >= 2 or (found and not MARKER_ANYWHERE.search(text, found[0][2])):
        return found
    # One line holds the whole transcript: every bracketed marker starts a turn.
    found = [(m.group("role").lower(), m.start(), m.end()) for m in MARKER_ANYWHERE.finditer(text)]
    if found:
        return found
    labels = [(m.group("role").lower(), m.start(), m.end()) for m in _LABEL_AT_LINE_START.finditer(text)]
    return labels or None


def _before_unfinished(turns: list[Turn], config: UnfinishedTurnConfig) -> tuple[list[Turn], str | None]:
    """The exchanges before the first AI turn that ends unfinished, and why it looks cut off."""
    checked = range(len(turns)) if config.turns == "every_ai" else range(len(turns) - 1, len(turns))
    for index in checked:
        if turns[index].role == "ai" and (cause := unfinished_cause(turns[index].text, config)):
            kept = turns[:index]
            return (kept[:-1] if kept and kept[-1].role == "human" else kept), cause
    return turns, None


def _speaks_for_another_role(text: str) -> bool:
    # Most turns hold no label at all, so the costlier look outside code and tables is rarely needed.
    return bool(_INNER_SPEAKER.search(text) and _INNER_SPEAKER.search(_STRUCTURED_TEXT.sub(" ", text)))


def _turn_problem(turns: list[Turn], check_roles: bool) -> tuple[str, str] | None:
    """The reason code and detail of the first turn that is empty, out of turn or holds a marker."""
    for index, turn in enumerate(turns):
        if not turn.text:
            return EMPTY_TURN, f"turn {index} ({turn.role}) is empty"
        expected = "human" if index % 2 == 0 else "ai"
        if turn.role != expected:
            return ROLE_CONFUSION, f"turn {index} is {turn.role}, expected {expected}"
        if check_roles and _speaks_for_another_role(turn.text):
            return ROLE_CONFUSION, f"turn {index} ({turn.role}) speaks for another role"
        if match := MARKER_ANYWHERE.search(turn.text):
            return MARKER_IN_TURN, f"turn {index} ({turn.role}) contains '{match.group(0)}'"
    return None


def parse_transcript(
    transcript: str | None,
    *,
    truncated: bool = False,
    check_roles: bool = True,
    keep_truncated: bool = True,
    unfinished: UnfinishedTurnConfig | None = None,
) -> Parsed:
    """Split a raw ``[Human]`` / ``[AI]`` transcript into alternating turns.

    Text before the first marker is dropped, an echoed prompt example is dropped, and
    (unlike Baize's parser) the last exchange is kept. A trailing human turn with no
    answer is dropped, since training needs complete exchanges. A transcript cut off by
    the token limit (``truncated``) loses its last, unfinished turn, or is rejected
    when ``keep_truncated`` is false; so does one whose AI turn the ``unfinished``
    check finds cut off (with its question). Every trim is named in ``Parsed.trimmed``.
    """
    if not isinstance(transcript, str) or not transcript.strip():
        return Parsed([], EMPTY_TRANSCRIPT, None if transcript is None else "blank transcript")
    if truncated and not keep_truncated:
        return Parsed([], TRUNCATED, "finish_reason=length")
    text = clean_text(transcript)
    markers = _turn_markers(text)
    if not markers:
        return Parsed([], NO_TURNS, "no [Human]/[AI] marker")
    trimmed: list[str] = [TRIMMED_PREAMBLE] if text[: markers[0][1]].strip() else []
    turns = [
        Turn(role, text[end : following[1] if following else len(text)].strip())
        for (role, _, end), following in zip(markers, markers[1:] + [None])
    ]
    if turns[0].role == "ai" and check_roles:
        return Parsed(turns, ROLE_CONFUSION, "transcript starts with an AI turn")
    if tuple((t.role, t.text.lower()) for t in turns[:2]) == _EXAMPLE_EXCHANGE:
        turns = turns[2:]
        trimmed.append(TRIMMED_ECHOED_EXAMPLE)
    if truncated and turns:
        turns = turns[:-1]
        trimmed.append(TRIMMED_CUT_OFF_TURN)
    if turns and turns[-1].role == "human":
        turns = turns[:-1]
        trimmed.append(TRIMMED_UNANSWERED_QUESTION)
    if not turns:
        return Parsed([], TRUNCATED if truncated else NO_TURNS, "no complete exchange")
    if problem := _turn_problem(turns, check_roles):
        return Parsed(turns, *problem)
    if unfinished is not None and unfinished.enabled:
        turns, cause = _before_unfinished(turns, unfinished)
        if cause and not keep_truncated:
            return Parsed([], UNFINISHED_TURN, f"an AI turn ends unfinished ({cause}); truncated: drop")
        if cause and not turns:
            return Parsed([], UNFINISHED_TURN, f"the AI turn ends unfinished ({cause}), no complete exchange before it")
        if cause:
            trimmed.append(TRIMMED_UNFINISHED_TURN)
    return Parsed(turns, trimmed=tuple(trimmed))
