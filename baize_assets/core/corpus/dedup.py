"""Exact and near-duplicate detection for a whole training set.

Near duplicates use MinHash with LSH banding (Broder; Leskovec et al., ch. 3), in
datasketch's own scheme: its permutations (``MinHash(num_perm, seed).permutations``),
its "affine32" hashing (a 32-bit MurmurHash3 pre-mix of each shingle hash, then
``a*h + b mod 2**32``) and the bands/rows its ``MinHashLSH`` picks for the threshold.
A signature computed here equals, bit for bit, ``datasketch.MinHash`` updated with the
same shingle hashes (a test checks it); the work is batched with numpy over a chunk of
texts instead of one document at a time. Candidate pairs from a shared band are kept
only if their estimated Jaccard similarity reaches the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config.pipeline import NearDedupConfig
from .shingles import CHUNK_TEXTS, fmix32, map_chunks, ngram_hashes, shingles_of, word_hashes

_EMPTY = np.uint32(0xFFFFFFFF)  # datasketch's value for a permutation that saw nothing
# Shingles per block of the permutation step: bounds its (block x num_perm) temporary.
_BLOCK_SHINGLES = 32768
_MAX_BUCKET_LINKS = 32
_SPACE = pa.scalar(" ", pa.large_string())


@dataclass(frozen=True)
class NearDuplicate:
    index: int  # the dropped text
    duplicate_of: int  # the kept text it is near to
    similarity: float  # estimated Jaccard similarity


def normalized_texts(texts: Sequence[str]) -> pa.Array:
    """The texts as compared for exact duplicates: NFC, whitespace runs to one space, trimmed, lower case.

    The same as ``seeds.normalize_text(text).lower()``, done by Arrow's kernels (split on
    Unicode whitespace, join with one space) a chunk of texts at a time on all cores.
    """

    def normalize(chunk: Sequence[str]) -> pa.Array:
        array = pc.utf8_lower(pc.utf8_normalize(pa.array(chunk, type=pa.large_string()), form="NFC"))
        return pc.binary_join(pc.utf8_split_whitespace(pc.utf8_trim_whitespace(array)), _SPACE)

    parts = map_chunks(normalize, texts)
    # A chunk of a pandas column may come back as a chunked array: one array in the end.
    return pa.chunked_array(parts, type=pa.large_string()).combine_chunks()


def exact_groups(texts: Sequence[str]) -> np.ndarray:
    """Per text, its group number: texts equal after ``normalized_texts`` share one (0, 1, ... by first appearance)."""
    return pc.dictionary_encode(normalized_texts(texts)).indices.to_numpy()


def signature_version(config: NearDedupConfig) -> str:
    """Names the signature scheme: signatures are comparable only when this is equal."""
    return f"affine32-p{config.num_perm}-s{config.seed}-w{config.shingle_words}"


@lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # datasketch is imported where it is used: it pulls in scipy and redis (0.5 s), which every
    # Dagster process loading the definitions would otherwise pay.
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=seed).permutations
    return a.astype(np.uint32), b.astype(np.uint32)


def minhash_of_hashes(hashes: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures, one row per text, of shingle hashes laid out as in ``Shingles``."""
    a, b = _permutations(num_perm, seed)
    n_texts = len(offsets) - 1
    signatures = np.full((n_texts, num_perm), _EMPTY, dtype=np.uint32)
    mixed = fmix32(hashes.astype(np.uint32))
    non_empty = np.flatnonzero(offsets[1:] > offsets[:-1])
    buffer = np.empty((num_perm, _BLOCK_SHINGLES), dtype=np.uint32)  # reused: no page faults per block
    start = 0
    while start < len(non_empty):
        # A block of whole texts holding about _BLOCK_SHINGLES shingles.
        first = offsets[non_empty[start]]
        stop = int(np.searchsorted(offsets[non_empty + 1], first + _BLOCK_SHINGLES, side="right"))
        texts = non_empty[start : max(stop, start + 1)]
        block = mixed[first : offsets[texts[-1] + 1]]
        # Permutation-major, so the per-text minimum reduces along contiguous memory.
        permuted = (
            buffer[:, : len(block)] if len(block) <= _BLOCK_SHINGLES else np.empty((num_perm, len(block)), np.uint32)
        )
        np.multiply(a[:, None], block[None, :], out=permuted)
        np.add(permuted, b[:, None], out=permuted)
        signatures[texts] = np.minimum.reduceat(permuted, offsets[texts] - first, axis=1).T
        start += len(texts)
    return signatures


def signatures(texts: Sequence[str], config: NearDedupConfig) -> np.ndarray:
    """MinHash signatures (len(texts) x num_perm, uint32) of the word shingles of each text."""

    def chunk_signatures(chunk: Sequence[str]) -> np.ndarray:
        shingles = shingles_of(chunk, config.shingle_words)
        return minhash_of_hashes(shingles.hashes, shingles.offsets, config.num_perm, config.seed)

    parts = map_chunks(chunk_signatures, texts)
    return np.concatenate(parts) if parts else np.zeros((0, config.num_perm), dtype=np.uint32)


def conversation_signatures(conversations: Sequence[Sequence[str]], config: NearDedupConfig) -> np.ndarray:
    """Signatures of conversations given as their turn texts: shingles never span two turns."""
    out = np.zeros((len(conversations), config.num_perm), dtype=np.uint32)
    for first in range(0, len(conversations), CHUNK_TEXTS):
        chunk = conversations[first : first + CHUNK_TEXTS]
        texts = [text for turns in chunk for text in turns]
        turn_starts = np.concatenate([[0], np.cumsum([len(turns) for turns in chunk])])
        shingles = ngram_hashes(word_hashes(texts), config.shingle_words)
        out[first : first + len(chunk)] = minhash_of_hashes(
            shingles.hashes, shingles.offsets[turn_starts], config.num_perm, config.seed
        )
    return out


def lsh_bands(config: NearDedupConfig) -> tuple[int, int]:
    """(bands, rows per band) that datasketch's MinHashLSH chooses for the threshold."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=config.threshold, num_perm=config.num_perm)
    return lsh.b, lsh.r


def _candidate_pairs(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Pairs (i, j), i < j, whose signatures agree on at least one whole band; each pair once."""
    pairs = []
    n = len(sigs)
    for band in range(bands):
        part = np.ascontiguousarray(sigs[:, band * rows : (band + 1) * rows])
        keys = part.view(np.dtype((np.void, part.dtype.itemsize * rows))).ravel()
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        bucket_starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        sizes = np.diff(np.r_[bucket_starts, n])
        for start, size in zip(bucket_starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
            members = np.sort(order[start : start + size])
            # Every pair of a bucket; a huge bucket (a degenerate text repeated many
            # times) links each member to its first _MAX_BUCKET_LINKS members only.
            heads = members[:_MAX_BUCKET_LINKS]
            left = np.repeat(heads, len(members))
            right = np.tile(members, len(heads))
            pairs.append(np.stack([left, right], axis=1)[left < right])
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(pairs), axis=0)


def near_duplicates(sigs: np.ndarray, config: NearDedupConfig) -> list[NearDuplicate]:
    """Texts to drop as near duplicates of an earlier (lower-index) kept text.

    Texts are taken in index order: a text is dropped when a kept text of lower index
    shares an LSH band with it and their estimated Jaccard similarity reaches the
    threshold, the same decision as querying a datasketch ``MinHashLSH`` of the kept
    texts one by one, then inserting the text when nothing similar was found.
    """
    if len(sigs) < 2:
        return []
    bands, rows = lsh_bands(config)
    pairs = _candidate_pairs(sigs, bands, rows)
    if not len(pairs):
        return []
    similarity = (sigs[pairs[:, 0]] == sigs[pairs[:, 1]]).mean(axis=1)
    verified = pairs[similarity >= config.threshold]
    similarity = similarity[similarity >= config.threshold]
    order = np.lexsort((verified[:, 0], verified[:, 1]))
    dropped: dict[int, NearDuplicate] = {}
    for (earlier, later), score in zip(verified[order].tolist(), similarity[order].tolist()):
        if later in dropped or earlier in dropped:
            continue
        dropped[later] = NearDuplicate(later, earlier, round(score, 4))
    return sorted(dropped.values(), key=lambda d: d.index)
