"""Does a turn end unfinished? Cut-off detection from the text alone.

A teacher's answer can stop mid-sentence although the API reported
``finish_reason: stop``: a proxy or the provider cut it, or the model simply stopped.
The signals, strongest first:

* an unclosed code fence (an odd number of ``````` or ``~~~`` fence lines);
* a last line that is only a list marker ("3.", "-");
* a last character that announces more (",", ":", ";", "(", a dash);
* a last word that cannot end a sentence ("the", "and", "of", ...);
* an unclosed bracket or inline code span in the last paragraph;
* no sentence end at all ("." "!" "?" "…", possibly inside quotes or brackets).

The last, weakest rule is waived where text legitimately ends without a full stop: a
closed code block anywhere in the turn (code answers often end "That's it"), a last
line that is a list item or a table row, a URL, inline code, a number, an emoji, a
closing bracket or quote, a letter's sign-off ("Best regards,\nSam"), and short turns
(fewer than ``min_words`` words). The stronger signals hold
everywhere, so a code answer ending "then run it with the" is still unfinished.
"""

from __future__ import annotations

import re
import unicodedata

from ..config.corpus import UnfinishedTurnConfig

_FENCE = re.compile(r"(?m)^[ \t]*(?:```|~~~)")
_LIST_MARKER_ONLY = re.compile(r"^(?:[-*+•]|\d{1,3}[.)])$")
_LIST_ITEM = re.compile(r"^(?:[-*+•]|\d{1,3}[.)])\s+\S")
# A sentence end, possibly followed by closing quotes, brackets or emphasis.
_SENTENCE_END = re.compile(r"(?:[.!?…]|\.\.\.)[\"'”’»)\]*_]*$")
_ANNOUNCING_END = re.compile(r"[,;:(\[{/&+=–—-]$")
_LAST_WORD = re.compile(r"([A-Za-z][A-Za-z']*)\W*$")
_URL_AT_END = re.compile(r"(?:https?://|www\.)\S+$")
_TABLE_ROW = re.compile(r"^\|.*\|$")
_BRACKETS = (("(", ")"), ("[", "]"), ("{", "}"))


def _ends_with_symbol(line: str) -> bool:
    """An emoji or another pictographic symbol: a chat sign-off that needs no full stop."""
    return unicodedata.category(line[-1]) in ("So", "Sk")


def unfinished_cause(text: str, config: UnfinishedTurnConfig) -> str | None:
    """Why ``text`` looks cut off (a short phrase), or None when it ends like a finished turn."""
    text = text.strip()
    if not text:
        return None
    fences = len(_FENCE.findall(text))
    if fences % 2:
        return "unclosed code block"
    # Judge the prose after the last code block; a turn that ends with its block is finished.
    prose = _FENCE.split(text)[-1].strip() if fences else text
    if not prose:
        return None
    lines = prose.splitlines()
    last_line = lines[-1].strip()
    if _LIST_MARKER_ONLY.match(last_line):
        return f"ends at the list marker '{last_line}'"
    core = last_line.rstrip("*_ ")
    if not core or _SENTENCE_END.search(core):
        return None
    if _ANNOUNCING_END.search(core):
        return f"ends with '{core[-1]}'"
    word = _LAST_WORD.search(core)
    if word and core.endswith(word.group(1)) and word.group(1).lower() in config.dangling_words:
        return f"ends with the word '{word.group(1)}'"
    paragraph = prose.rsplit("\n\n", 1)[-1]
    for opening, closing in _BRACKETS:
        if paragraph.count(opening) > paragraph.count(closing):
            return f"unclosed '{opening}'"
    if paragraph.count("`") % 2:
        return "unclosed inline code"
    waived = (
        not config.require_sentence_end
        or fences
        or _LIST_ITEM.match(last_line)
        or _TABLE_ROW.match(core)
        or _URL_AT_END.search(core)
        or core.endswith(("`", ")", "]", '"', "”", "'", "’"))
        or core[-1].isdigit()
        or _ends_with_symbol(core)
        or (len(lines) > 1 and lines[-2].rstrip().endswith(",") and len(core.split()) <= 3)
        or len(text.split()) < config.min_words
    )
    return None if waived else "no sentence end"
