"""Offline language identification with lingua: its n-gram models ship inside the wheel.

The detector is built once per candidate set (building is lazy and cheap; models load
on first use) and scores many texts in one call on all cores. Lingua costs a few
hundred microseconds a sample, so English samples first go through a far cheaper
test: the share of their words that are common English function words (the
"short words" method of Grefenstette, 1995; stop-word rules like Gopher's quality
filter, Rae et al. 2021, rest on the same property). Running English prose has about
a quarter of its words in that list, text in another language almost none, so a
sample well above the threshold is settled as English and only the rest reach lingua.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lingua import IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder

# Frequent English function words that are not also frequent words of French, German,
# Spanish, Portuguese, Italian, Dutch, Turkish or the Slavic languages: "a", "in",
# "is", "of", "on", "an", "as", "to", "so", "we", "me", "my", "i", "he", "by", "was",
# "will", "also", "has" are left out for that reason.
ENGLISH_FUNCTION_WORDS = frozenset(
    "the and that with this you your are for it its be been being have had they their there them these those"
    " which what when where why who how would should could can not or but if than then from into about"
    " our she his her him were does did just very many much more most some such only other each any all"
    " because while after before over through between both".split()
)
# Fewer words than this say too little for the cheap test; such samples go to lingua.
_MIN_WORDS = 8
_PUNCTUATION = "\"'“”‘’«»()[]{}.,;:!?-–—*"


def _language(code: str) -> Language:
    try:
        return Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper()))
    except AttributeError:
        raise ValueError(f"unknown ISO 639-1 language code '{code}'") from None


@lru_cache(maxsize=8)
def _detector(candidates: tuple[str, ...]) -> LanguageDetector:
    # Low-accuracy mode scores trigrams only: several times faster, and lingua's own
    # evaluation shows it close to the full mode on sentence-length texts like the samples.
    languages = (_language(c) for c in candidates)
    return LanguageDetectorBuilder.from_languages(*languages).with_low_accuracy_mode().build()


def english_word_share(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per text, (share of its words in ``ENGLISH_FUNCTION_WORDS``, number of words)."""
    words = pc.utf8_split_whitespace(pc.utf8_lower(pa.array(texts, type=pa.large_string())))
    flat = pc.utf8_trim(pc.list_flatten(words), characters=_PUNCTUATION)
    owners = pc.list_parent_indices(words).to_numpy()
    present = pc.greater(pc.utf8_length(flat), 0).to_numpy(zero_copy_only=False)
    common = pc.is_in(flat, value_set=pa.array(sorted(ENGLISH_FUNCTION_WORDS))).to_numpy(zero_copy_only=False)
    counts = np.bincount(owners[present], minlength=len(texts))
    hits = np.bincount(owners[present & common], minlength=len(texts))
    return hits / np.maximum(counts, 1), counts


def language_confidence(
    texts: Sequence[str], language: str, candidates: Sequence[str], english_share: float | None = None
) -> np.ndarray:
    """Per text, the confidence (0..1) that it is written in ``language``.

    With ``english_share`` and ``language`` English, a text of at least a few words of
    which that share or more are common English function words is settled as English
    (confidence 1.0) without lingua; lingua scores the others.
    """
    if language not in candidates:
        raise ValueError(
            f"declared language '{language}' is not among corpus.language.candidates ({', '.join(candidates)})"
        )
    confidence = np.zeros(len(texts))
    pending = np.arange(len(texts))
    if language == "en" and english_share is not None and len(texts):
        share, words = english_word_share(texts)
        settled = (share >= english_share) & (words >= _MIN_WORDS)
        confidence[settled] = 1.0
        pending = np.flatnonzero(~settled)
    if len(pending):
        detector = _detector(tuple(sorted(candidates)))
        confidence[pending] = detector.compute_language_confidence_in_parallel(
            [texts[i] for i in pending], _language(language)
        )
    return confidence
