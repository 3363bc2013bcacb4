"""The text of an answer being generated: decoded a few tokens at a time, cut at the first stop string.

Decoding a row's whole answer again at every step would cost O(n) per token, O(n^2) per
answer. :class:`AnswerText` decodes a short window of the newest tokens instead: what
``ids[read:]`` add to the whole text is the decode of ``ids[window:]`` past the decode of
``ids[window:read]``. That is exact when

- the window starts at a token boundary where the bytes before form whole characters (a
  byte-level tokenizer decodes the bytes of all tokens together, so a split inside a
  character would differ): the window only moves past text that did not end in an
  incomplete character (U+FFFD);
- it never splits a run of byte-fallback tokens (``<0xE2>``...): SentencePiece decoders
  turn such a run into text, or into one U+FFFD per byte, as a whole, and a special token
  (left out of the text) between two byte tokens does not end the run;
- its first tokens decode to some text, so that a decoder stripping the first space of
  what it decodes (SentencePiece's Metaspace) strips it in both decodes or in neither.

The window's text is recomputed at every step while the newest tokens may still change
it, and committed once they cannot: ``committed + pending`` is always the decode of all
the ids. Stop strings are searched for in what changed (with as many characters before
it as the longest stop string needs), so the first stop found is the first in the text.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

from ..prompts import STOP_MARKERS

__all__ = ["AnswerText", "cut_at_marker", "cut_at_stop", "decode_answer", "held_token_ids", "streamable_prefix"]

REPLACEMENT = "\ufffd"  # what an incomplete or invalid UTF-8 sequence decodes to
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def decode_answer(tokenizer, ids: Sequence[int]) -> str:
    """The text of generated token ids: special tokens left out, spaces exactly as the tokens have them."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # what the tokenizer's own decode does here, without its wrapper (five times the cost)
        return backend.decode(list(ids), skip_special_tokens=True)
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def held_token_ids(tokenizer) -> frozenset[int]:
    """The tokens the text is never committed after: special tokens and a byte-fallback vocabulary's byte tokens."""
    held = set(tokenizer.all_special_ids)
    held.update(i for i, token in tokenizer.added_tokens_decoder.items() if token.special)
    model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    if getattr(model, "byte_fallback", False):
        held.update(i for token, i in tokenizer.get_vocab().items() if _BYTE_TOKEN.fullmatch(token))
    return frozenset(held)


def cut_at_marker(text: str) -> str:
    """``text`` up to the first stop marker (all of it when there is none)."""
    return cut_at_stop(text, ())[0]


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the first of ``stops`` begins in ``text``; None when none is there."""
    return min((i for i in (text.find(s) for s in stops) if i >= 0), default=None)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first Baize marker or ``stop`` string, and whether one was found."""
    position = _first_stop(text, (*STOP_MARKERS, *stop))
    return (text, False) if position is None else (text[:position], True)


def streamable_prefix(answer: str, stop: Sequence[str]) -> str:
    """The part of a growing ``answer`` that can be shown now.

    Held back: a tail that may still grow into a stop string, trailing whitespace (the
    final answer is stripped) and an incomplete UTF-8 sequence.
    """
    stops = (*STOP_MARKERS, *stop)
    undecided = max((n for s in stops for n in range(1, len(s)) if answer.endswith(s[:n])), default=0)
    return answer[: len(answer) - undecided].rstrip().rstrip(REPLACEMENT)


class AnswerText:
    """The growing text of one answer's token ids, and where its first stop string (a marker or ``stop``) begins.

    ``decode`` turns ids into text (see :func:`decode_answer`); ``held_tokens`` are those
    the text is never committed after (see :func:`held_token_ids`).
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = (),
                 held_tokens: frozenset[int] = frozenset()):
        self._decode = decode
        self._stops = (*STOP_MARKERS, *stop)
        self._overlap = max(len(s) for s in self._stops) - 1  # committed characters a new stop string may start in
        self._held_tokens = held_tokens
        self.ids: list[int] = []
        self.committed = ""  # the text of ids[:read]: later tokens cannot change it
        self.pending = ""  # what ids[read:] add, for now
        self.stop_at: int | None = None  # where in ``text`` the first stop string begins
        self._window = 0  # the decoded window is ids[window:]
        self._read = 0
        self._base = ""  # the decode of ids[window:read]

    @property
    def text(self) -> str:
        """The decode of all the ids (what a decode of the whole answer gives)."""
        return self.committed + self.pending

    def append(self, token: int) -> bool:
        """Add the next token; True once the text holds a stop string (``stop_at`` says where)."""
        self.ids.append(token)
        window = self._decode(self.ids[self._window :])
        self.pending = window[len(self._base) :]
        before = self.committed[max(0, len(self.committed) - self._overlap) :]
        found = _first_stop(before + self.pending, self._stops)
        if found is not None:
            self.stop_at = len(self.committed) - len(before) + found
            return True
        if self.pending and not self.pending.endswith(REPLACEMENT) and token not in self._held_tokens:
            self._commit(window)
        return False

    def _commit(self, window: str) -> None:
        """Make the pending text final and move the window to start at the tokens just committed."""
        self.committed += self.pending
        self.pending = ""
        newest = self._decode(self.ids[self._read :])
        if newest:  # the window restarts at these tokens
            self._window, self._base = self._read, newest
        else:  # they decode to nothing on their own (a lone space a decoder strips): keep the window's start
            self._base = window
        self._read = len(self.ids)

    def answer(self) -> str:
        """The answer as it stands: the text up to the first stop string, stripped."""
        text = self.text
        return (text if self.stop_at is None else text[: self.stop_at]).strip()
