"""The content filters: every parsed conversation of a shard checked at once, its first failure recorded.

The filters that look at words run over all turns of a shard together (Arrow string
kernels, numpy over word hashes, lingua in parallel). A conversation's reason is the
first filter it fails, in the order of ``reasons.REASONS``; the MinHash signature each
kept conversation needs for near-duplicate removal comes out of the same pass over word
shingles as the repetition check, so the per-adapter dedup only compares signatures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..config.pipeline import CorpusConfig
from ..prompts import Turn, render_conversation
from . import dedup, langid, role_voice
from .patterns import (
    AI_DISCLAIMER_PATTERN,
    OPENAI_IDENTITY_PATTERN,
    REFUSAL_PATTERN,
    SCRUB_PATTERNS,
    STRUCTURED_TEXT,
)
from .reasons import (
    AI_DISCLAIMER,
    OPENAI_MENTION,
    REFUSAL,
    REPETITION,
    ROLE_VOICE,
    SCRUBBED,
    TOO_FEW_EXCHANGES,
    TURN_TOO_LONG,
    TURN_TOO_SHORT,
    WRONG_LANGUAGE,
)
from .shingles import CHUNK_TEXTS, ngram_hashes, repeated_fraction, word_hashes


@dataclass
class Candidates:
    """Parsed conversations waiting for the content filters, and the rejects so far."""

    bases: list[dict] = field(default_factory=list)
    turns: list[list[Turn]] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def reject(self, base: dict, reason: str, detail: str | None, transcript: str | None) -> None:
        self.rejects.append({**base, "reason": reason, "detail": detail, "transcript": transcript})
        self.counts[reason] = self.counts.get(reason, 0) + 1

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


class _Turns:
    """Every turn of every candidate in flat arrays, and each conversation's first failure so far."""

    def __init__(self, conversations: list[list[Turn]]) -> None:
        self.n = n = len(conversations)
        self.lengths = np.fromiter((len(t) for t in conversations), dtype=np.int64, count=n)
        self.owner = np.repeat(np.arange(n), self.lengths)  # the conversation of each turn
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)])  # each conversation's first turn
        self.index = np.arange(len(self.owner)) - np.repeat(self.starts[:-1], self.lengths)  # within it
        self.texts = [t.text for turns in conversations for t in turns]
        self.roles = [t.role for turns in conversations for t in turns]
        self.is_ai = np.fromiter((r == "ai" for r in self.roles), dtype=bool, count=len(self.owner))
        self.array = pa.array(self.texts, type=pa.large_string())
        self.chars = pc.utf8_length(self.array).to_numpy(zero_copy_only=False) if self.texts else np.zeros(0, np.int64)
        self.exchanges = np.bincount(self.owner[self.is_ai], minlength=n)
        self.reason = np.full(n, None, dtype=object)
        self.detail = np.full(n, None, dtype=object)

    def passing(self) -> np.ndarray:
        return self.reason == None  # noqa: E711 (elementwise on objects)

    def fail_conversations(self, mask: np.ndarray, code: str, details: Callable[[int], str]) -> None:
        """Fail the conversations of ``mask`` that have not failed yet."""
        for index in np.flatnonzero(mask & self.passing()):
            self.reason[index], self.detail[index] = code, details(index)

    def fail_turns(self, mask: np.ndarray, code: str, describe: Callable[[int], str]) -> None:
        """Fail the conversation of every turn in ``mask``, naming its first such turn."""
        first = np.full(self.n, -1, dtype=np.int64)
        failing = np.flatnonzero(mask)[::-1]  # reversed: the earliest turn is written last
        first[self.owner[failing]] = failing
        self.fail_conversations(first >= 0, code, lambda c: f"turn {self.index[first[c]]}: {describe(first[c])}")


def _check_shape(turns: _Turns, config: CorpusConfig) -> None:
    """Enough exchanges, and every turn within the length bounds."""
    minimum, chars = config.min_exchanges, turns.chars
    turns.fail_conversations(
        turns.exchanges < minimum, TOO_FEW_EXCHANGES, lambda c: f"{turns.exchanges[c]} exchanges, need {minimum}"
    )
    bounds = config.turn_length
    if bounds.min_chars is not None:
        turns.fail_turns(chars < bounds.min_chars, TURN_TOO_SHORT, lambda t: f"{chars[t]} chars < {bounds.min_chars}")
    if bounds.max_chars is not None:
        turns.fail_turns(chars > bounds.max_chars, TURN_TOO_LONG, lambda t: f"{chars[t]} chars > {bounds.max_chars}")


def _check_patterns(turns: _Turns, config: CorpusConfig) -> None:
    """AI turns that refuse, speak of themselves as an AI, or name OpenAI or GPT as the speaker.

    Only the AI's own words count: quotes and a script's lines are other people's.
    """
    checks = [(code, pattern) for enabled, code, pattern in (
        (config.refusals, REFUSAL, REFUSAL_PATTERN),
        (config.ai_disclaimers, AI_DISCLAIMER, AI_DISCLAIMER_PATTERN),
        (config.openai_mentions, OPENAI_MENTION, OPENAI_IDENTITY_PATTERN),
    ) if enabled]  # fmt: skip
    ai = np.flatnonzero(turns.is_ai)
    if not checks or not len(ai):
        return
    own = role_voice.own_words(turns.array.take(pa.array(ai)))

    def quote(rx: re.Pattern, turn: int) -> str:
        # Python's re and Arrow's RE2 may part on a rare Unicode word boundary: then name no phrase.
        found = rx.search(own[int(np.searchsorted(ai, turn))].as_py())
        return f"'{found.group(0)}'" if found else "the pattern matches"

    for code, pattern in checks:
        hit = np.zeros(len(turns.texts), dtype=bool)
        hit[ai] = pc.match_substring_regex(own, pattern, ignore_case=True).to_numpy(zero_copy_only=False)
        turns.fail_turns(hit, code, lambda t, rx=re.compile(pattern, re.IGNORECASE): quote(rx, t))


def _prose_repetition(texts: list[str], words: np.ndarray, repeated: np.ndarray, ngram: int) -> None:
    """Words and repeated n-gram fraction of each structured text (code, tables) measured on its prose alone."""
    array = pa.array(texts, type=pa.large_string())
    structured = np.flatnonzero(pc.match_substring_regex(array, STRUCTURED_TEXT).to_numpy(zero_copy_only=False))
    for first in range(0, len(structured), CHUNK_TEXTS):
        chunk = structured[first : first + CHUNK_TEXTS]
        prose = pc.replace_substring_regex(array.take(pa.array(chunk)), STRUCTURED_TEXT, " ").to_pylist()
        prose_words = word_hashes(prose)
        words[chunk] = prose_words.counts()
        repeated[chunk] = repeated_fraction(ngram_hashes(prose_words, ngram))


def _shingle_pass(turns: _Turns, config: CorpusConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prose words and repeated n-gram fraction per turn, and each conversation's MinHash signature.

    One pass over word shingles, a chunk of whole conversations at a time; the signature
    covers the shingles of all of a conversation's turns. A turn holding code or a table
    has its repetition measured again on its prose (``_prose_repetition``).
    """
    repetition, near = config.repetition, config.near_dedup
    words = np.zeros(len(turns.texts), dtype=np.int64)
    repeated = np.zeros(len(turns.texts))
    signatures = np.zeros((turns.n, near.num_perm), dtype=np.uint32)
    for first_conv in range(0, turns.n, CHUNK_TEXTS):
        last_conv = min(first_conv + CHUNK_TEXTS, turns.n)
        lo, hi = turns.starts[first_conv], turns.starts[last_conv]
        chunk_words = word_hashes(turns.texts[lo:hi])
        words[lo:hi] = chunk_words.counts()
        if repetition.enabled:
            repeated[lo:hi] = repeated_fraction(ngram_hashes(chunk_words, repetition.ngram))
        if near.enabled:
            shingles = ngram_hashes(chunk_words, near.shingle_words)
            conv_offsets = shingles.offsets[turns.starts[first_conv : last_conv + 1] - lo]
            signatures[first_conv:last_conv] = dedup.minhash_of_hashes(
                shingles.hashes, conv_offsets, near.num_perm, near.seed
            )
    if repetition.enabled and turns.texts:
        _prose_repetition(turns.texts, words, repeated, repetition.ngram)
    return words, repeated, signatures


def _check_repetition(turns: _Turns, config: CorpusConfig, words: np.ndarray, repeated: np.ndarray) -> None:
    """Turns that loop over their own n-grams, and AI turns said twice."""
    repetition = config.repetition
    if not repetition.enabled:
        return
    looping = (words >= repetition.min_words) & (repeated > repetition.max_repeated_ngram_fraction)
    turns.fail_turns(looping, REPETITION, lambda t: f"{repeated[t]:.0%} of its {repetition.ngram}-grams repeat")
    if repetition.repeated_turns and turns.texts:
        said = pd.DataFrame(
            {"owner": turns.owner, "ai": turns.is_ai, "text": pc.utf8_lower(pc.utf8_trim_whitespace(turns.array))}
        )
        turns.fail_turns(said.duplicated().to_numpy() & turns.is_ai, REPETITION, lambda t: "repeats an earlier AI turn")


def _check_language(turns: _Turns, conversations: list[list[Turn]], config: CorpusConfig, language: str) -> None:
    """Conversations still passing whose sample is not confidently in ``language``."""
    lang = config.language
    pending = np.flatnonzero(turns.passing())
    samples = [
        " ".join(t.text[: lang.chars_per_turn] for t in conversations[i])[: lang.max_sample_chars] for i in pending
    ]
    confidence = langid.language_confidence(samples, language, lang.candidates, lang.english_word_share)
    low = np.zeros(turns.n, dtype=bool)
    low[pending[confidence < lang.min_confidence]] = True
    scores = dict(zip(pending.tolist(), confidence.tolist()))
    turns.fail_conversations(
        low, WRONG_LANGUAGE, lambda c: f"'{language}' confidence {scores[c]:.2f} < {lang.min_confidence}"
    )


def _scrubbed_kept_texts(turns: _Turns, kept_turn: np.ndarray, config: CorpusConfig, candidates: Candidates) -> list:
    """The texts of the kept conversations' turns with personal data replaced, each replacement counted."""
    kept_texts = turns.array.filter(pa.array(kept_turn)) if turns.texts else turns.array
    for kind, enabled in config.scrub.model_dump().items():
        if enabled and len(kept_texts):
            pattern, placeholder = SCRUB_PATTERNS[kind]
            found = pc.count_substring_regex(kept_texts, pattern)
            candidates.count(SCRUBBED[kind], int(pc.sum(found).as_py() or 0))
            kept_texts = pc.replace_substring_regex(kept_texts, pattern, placeholder)
    return kept_texts.to_pylist()


def _kept_rows(turns: _Turns, candidates: Candidates, config: CorpusConfig, signatures: np.ndarray) -> list[dict]:
    """The conversations rows of every candidate that passed, in their order."""
    keep = turns.passing()
    kept_turn = keep[turns.owner]
    kept_texts = _scrubbed_kept_texts(turns, kept_turn, config, candidates)
    kept_roles = [r for r, k in zip(turns.roles, kept_turn) if k]
    near = config.near_dedup
    version = dedup.signature_version(near)
    rows: list[dict] = []
    position = 0
    for index in np.flatnonzero(keep):
        end = position + int(turns.lengths[index])
        kept = [Turn(r, t) for r, t in zip(kept_roles[position:end], kept_texts[position:end])]
        position = end
        rows.append(
            {
                **{k: v for k, v in candidates.bases[index].items() if k != "_raw"},
                "turns": [t.as_dict() for t in kept],
                "n_exchanges": int(turns.exchanges[index]),
                "text": render_conversation(kept),
                "minhash": signatures[index] if near.enabled else None,
                "minhash_version": version if near.enabled else None,
            }
        )
    return rows


def apply_filters(candidates: Candidates, config: CorpusConfig, language: str | None, self_chat: bool) -> list[dict]:
    """Run every enabled filter over the candidates: rejects join ``candidates``, the kept rows are returned.

    ``language`` None skips the language check; ``self_chat`` False skips the role-voice
    check, since an instruction's answer may rightly be a question ("Write a question about ...").
    """
    turns = _Turns(candidates.turns)
    _check_shape(turns, config)
    _check_patterns(turns, config)
    words, repeated, signatures = _shingle_pass(turns, config)
    _check_repetition(turns, config, words, repeated)
    if language and config.language.enabled:
        _check_language(turns, candidates.turns, config, language)
    if self_chat and config.role_voice.enabled and turns.texts:
        requested = role_voice.role_requested(turns.array, turns.is_ai, turns.owner)
        voiced = role_voice.voice_mismatch(turns.array, turns.is_ai, config.role_voice, requested)
        turns.fail_turns(voiced, ROLE_VOICE, lambda t: role_voice.describe(turns.texts[t], bool(turns.is_ai[t])))
    rows = _kept_rows(turns, candidates, config, signatures)
    for index in np.flatnonzero(~turns.passing()):
        base = candidates.bases[index]
        candidates.reject(base, turns.reason[index], turns.detail[index], base["_raw"])
    return rows
