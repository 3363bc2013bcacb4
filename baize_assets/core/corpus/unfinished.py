"""Does a turn end unfinished? Cut-off detection from the text alone.

A teacher's answer can stop mid-sentence although the API reported
``finish_reason: stop``: a proxy or the provider cut it, or the model simply stopped.
The signals, in the order they are checked:

* an unclosed code block (an odd number of ``````` or ``~~~`` fence lines), or a turn
  ending with a code block that is cut inside: a bracket left open, a last line ending with
  an operator, a comma or an opening bracket, or an open string (real answers are often
  cut mid-code and then closed by whatever stored them);
* a last line that is only a list marker ("3."), an unclosed double quote in the last
  line, an unclosed inline code span in the last paragraph;
* then, when the last line has no sentence end ("." "!" "?" "…", possibly inside quotes or
  brackets): a list item left without the full stop its siblings end with, a last
  character that announces more (",", ":", ";", "(", a dash), a last word that cannot end
  a sentence ("the", "and", "of", ...), an unclosed bracket in the last paragraph, and,
  weakest, no sentence end at all.

The weakest rule is waived where text legitimately ends without a full stop: a turn that
ends with its code block or has under ``2 * min_words`` words after the last one, a last
line that is a list item, a table row, a heading (Markdown or in capitals, "THE END"),
verse (a last paragraph of short lines), a block quote, hashtags, a ``field: value``
line, a URL or domain, inline code, a number, an emoji, a closing bracket, brace or
quote, a letter's sign-off ("Best regards,\\nSam"), and short turns (fewer than
``min_words`` words). The stronger signals hold everywhere, so a code answer ending
"then run it with the" is still unfinished. The rules were checked on the final answers
of hand-labelled real conversations (``real_text.py``).
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
_URL_AT_END = re.compile(r"(?:https?://|www\.)\S+$|\b[\w-]+\.(?:com|org|net|info|io|gov|edu|co|uk)$")
_TABLE_ROW = re.compile(r"^\|.*\|$")
_HEADING = re.compile(r"^#{1,6}\s")
_FIELD_VALUE = re.compile(r"^[\w\\]+\s*:\s*\S+$")
_BRACKETS = (("(", ")"), ("[", "]"), ("{", "}"))
_VERSE_LINE_CHARS = 60
# The end of a code line that cannot end a program: an operator, a comma, an opening bracket.
_OPEN_CODE_LINE = re.compile(r"[=+\-*/&<,(\[{:\\]$")


def _ends_with_symbol(line: str) -> bool:
    """An emoji or another pictographic symbol: a chat sign-off that needs no full stop."""
    return unicodedata.category(line[-1]) in ("So", "Sk")


def _code_cause(block: str) -> str | None:
    """Why a code block that ends its turn looks cut inside, or None."""
    lines = [line.strip() for line in block.strip().splitlines() if line.strip()]
    if not lines:
        return None
    for opening, closing in _BRACKETS:
        if block.count(opening) > block.count(closing):
            return f"its last code block leaves '{opening}' open"
    last = lines[-1]
    if _OPEN_CODE_LINE.search(last):
        return f"its last code line ends with '{last[-1]}'"
    if last.replace('"""', "").count('"') % 2:
        return "its last code line leaves a string open"
    return None


def _list_cause(lines: list[str]) -> str | None:
    """A last list item without the full stop that its (at least two) preceding siblings end with.

    Siblings share the last item's indentation and kind of marker (bullet or number).
    """

    def kind(line: str) -> tuple[str, bool] | None:
        item = _LIST_ITEM.match(line.strip())
        return (line[: len(line) - len(line.lstrip())], line.strip()[0].isdigit()) if item else None

    last = kind(lines[-1])
    siblings = [line.strip().rstrip("*_ ") for line in lines if last and kind(line) == last]
    finished = [bool(_SENTENCE_END.search(item)) for item in siblings[-4:]]
    if len(finished) >= 3 and all(finished[:-1]) and not finished[-1]:
        return "its last list item lacks the full stop its siblings end with"
    return None


def _is_verse(paragraph: str) -> bool:
    """Two or more short lines, none a list item, table row or "label: text" line: a stanza."""
    lines = [line.strip() for line in paragraph.strip().splitlines()]
    return len(lines) >= 2 and all(
        0 < len(line) <= _VERSE_LINE_CHARS and "|" not in line and ": " not in line and not _LIST_ITEM.match(line)
        for line in lines
    )


def _weak_rule_waived(text: str, prose: str, lines: list[str], config: UnfinishedTurnConfig) -> bool:
    """Whether a last line without a sentence end is a legitimate ending (see the module docstring)."""
    last_line = lines[-1].strip()
    core = last_line.rstrip("*_ ")
    previous = [line.strip() for line in lines[:-1] if line.strip()]
    return bool(
        not config.require_sentence_end
        # Closing remarks after code run up to a dozen words on real answers ("That gives you a new list").
        or (_FENCE.search(text) and len(prose.split()) < 2 * config.min_words)
        or _LIST_ITEM.match(last_line)
        or _TABLE_ROW.match(core)
        or _HEADING.match(last_line)
        or _is_verse(prose.rsplit("\n\n", 1)[-1])
        or (core.isupper() and len(core.split()) <= 4)
        or last_line.startswith(">")
        or all(word.startswith("#") for word in core.split()[-2:])
        or _FIELD_VALUE.match(core)
        or _URL_AT_END.search(core)
        or core.endswith(("`", ")", "]", "}", '"', "”", "'", "’"))
        or core[-1].isdigit()
        or _ends_with_symbol(core)
        or (previous and previous[-1].endswith(",") and len(previous[-1].split()) <= 4 and len(core.split()) <= 6)
        or len(text.split()) < config.min_words
    )


def unfinished_cause(text: str, config: UnfinishedTurnConfig) -> str | None:
    """Why ``text`` looks cut off (a short phrase), or None when it ends like a finished turn."""
    text = text.strip()
    if not text:
        return None
    parts = _FENCE.split(text)
    if len(parts) % 2 == 0:
        return "unclosed code block"
    # Judge the prose after the last code block; a turn that ends with its block is judged by the block.
    prose = parts[-1].strip()
    if not prose:
        return _code_cause(parts[-2].split("\n", 1)[-1]) if len(parts) > 1 else None
    lines = prose.splitlines()
    last_line = lines[-1].strip()
    if _LIST_MARKER_ONLY.match(last_line):
        return f"ends at the list marker '{last_line}'"
    opens_quote = last_line.count('"') % 2 or last_line.count("“") > last_line.count("”")
    if opens_quote and not last_line.rstrip("*_ .").endswith(('"', "”")):
        return "ends inside a quote"
    paragraph = prose.rsplit("\n\n", 1)[-1]
    if paragraph.count("`") % 2:
        return "unclosed inline code"
    core = last_line.rstrip("*_ ")
    if not core or _SENTENCE_END.search(core):
        return None
    if cause := _list_cause(lines):
        return cause
    if _ANNOUNCING_END.search(core):
        return f"ends with '{core[-1]}'"
    word = _LAST_WORD.search(core)
    if word and core.endswith(word.group(1)) and word.group(1).lower() in config.dangling_words:
        return f"ends with the word '{word.group(1)}'"
    for opening, closing in _BRACKETS:
        if paragraph.count(opening) > paragraph.count(closing):
            return f"unclosed '{opening}'"
    return None if _weak_rule_waived(text, prose, lines, config) else "no sentence end"
