"""Word n-gram hashes of many texts at once, for the repetition filter and MinHash dedup.

Texts are lower-cased and split on whitespace by Arrow's compute kernels, each distinct
word is hashed once with CRC-32 (stable across processes and runs, unlike Python's
``hash``), and n-gram hashes are combined with numpy over a whole chunk of texts.
Nothing loops over words in Python. Arrow and numpy release the GIL, so chunks run on
a thread pool, one thread per core.
"""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_MIX = np.uint32(0x9E3779B1)  # odd 32-bit constant (golden ratio) to chain word hashes

# Texts per chunk: bounds the memory of the per-word arrays (about 40 bytes a word).
CHUNK_TEXTS = 2048

T = TypeVar("T")


@dataclass(frozen=True)
class Shingles:
    """Hashes of the shingles of each text: text ``i`` owns ``hashes[offsets[i]:offsets[i + 1]]``."""

    hashes: np.ndarray  # uint32
    offsets: np.ndarray  # int64, len(texts) + 1

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def owners(self) -> np.ndarray:
        """The index of the text each hash belongs to."""
        return np.repeat(np.arange(len(self.offsets) - 1), self.counts())


def _offsets(counts: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def word_hashes(texts: Sequence[str | None]) -> Shingles:
    """One stable 32-bit hash per whitespace-separated, lower-cased word of each text."""
    array = pa.array(texts, type=pa.string()).fill_null("")
    if pc.all(pc.string_is_ascii(array)).as_py() is not False:
        words = pc.ascii_split_whitespace(pc.ascii_lower(array))
    else:
        words = pc.utf8_split_whitespace(pc.utf8_lower(array))
    flat = pc.list_flatten(words)
    # Splitting an empty or all-space text gives one empty word; it is no word.
    present = pc.greater(pc.binary_length(flat), 0)
    counts = np.bincount(
        pc.list_parent_indices(words).to_numpy()[present.to_numpy(zero_copy_only=False)], minlength=len(array)
    )
    flat = pc.filter(flat, present)
    encoded = pc.dictionary_encode(flat)
    vocabulary = encoded.dictionary.to_pylist()
    vocabulary_hashes = np.fromiter(
        (zlib.crc32(word.encode("utf-8")) for word in vocabulary), dtype=np.uint32, count=len(vocabulary)
    )
    hashes = vocabulary_hashes[encoded.indices.to_numpy()]
    return Shingles(hashes, _offsets(counts))


def fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, a bijection that spreads a hash over all 32 bits."""
    values = values ^ (values >> np.uint32(16))
    values = values * np.uint32(0x85EBCA6B)
    values = values ^ (values >> np.uint32(13))
    values = values * np.uint32(0xC2B2AE35)
    return values ^ (values >> np.uint32(16))


def ngram_hashes(words: Shingles, n: int) -> Shingles:
    """Hashes of every run of ``n`` consecutive words; a text of fewer words is one shingle."""
    total = len(words.hashes)
    counts = words.counts()
    # Chain the n word hashes of every start position; runs that cross into the next
    # text are computed too and masked out below.
    padded = np.concatenate([words.hashes, np.zeros(n, dtype=np.uint32)])
    combined = padded[:total].copy()
    for step in range(1, n):
        combined = combined * _MIX + padded[step : step + total]
    valid = np.ones(total, dtype=bool)
    starts, ends = words.offsets[:-1], words.offsets[1:]
    for back in range(1, n):
        tail = ends - back
        valid[tail[tail >= starts]] = False
    # A text shorter than n words still gets one shingle: the chain of all its words.
    for index in np.flatnonzero((counts > 0) & (counts < n)):
        chain = padded[starts[index] : starts[index] + 1].copy()  # an array: its products wrap silently
        for word in padded[starts[index] + 1 : ends[index]]:
            chain = chain * _MIX + word
        combined[starts[index]] = chain[0]
        valid[starts[index]] = True
    kept_counts = np.bincount(words.owners()[valid], minlength=len(counts))
    hashes = fmix32(combined[valid])
    return Shingles(hashes, _offsets(kept_counts))


def shingles_of(texts: Sequence[str | None], n: int) -> Shingles:
    return ngram_hashes(word_hashes(texts), n)


def repeated_fraction(shingles: Shingles) -> np.ndarray:
    """Per text, the share of its shingles that repeat an earlier shingle of the same text."""
    counts = shingles.counts()
    keys = np.sort((shingles.owners().astype(np.uint64) << np.uint64(32)) | shingles.hashes.astype(np.uint64))
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    distinct = np.bincount((keys[first] >> np.uint64(32)).astype(np.int64), minlength=len(counts))
    return np.where(counts > 0, 1.0 - distinct / np.maximum(counts, 1), 0.0)


def workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def map_chunks(function: Callable[[Sequence[str | None]], T], texts: Sequence[str | None]) -> list[T]:
    """``function`` over consecutive chunks of ``texts`` on a thread pool, results in order."""
    chunks = [texts[i : i + CHUNK_TEXTS] for i in range(0, len(texts), CHUNK_TEXTS)]
    if len(chunks) <= 1:
        return [function(chunk) for chunk in chunks]
    with ThreadPoolExecutor(max_workers=workers()) as pool:
        return list(pool.map(function, chunks))
