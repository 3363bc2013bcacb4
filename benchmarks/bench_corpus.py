"""Corpus filtering and deduplication at the paper's scale.

A synthetic corpus shaped like Baize's (160,000 transcripts of 3-4 exchanges, 30-150
words per response, English words taken from the sample seed files) with 5% exact and
5% near duplicates planted, goes through the corpus stage (parse + every filter +
signatures, shard by shard like the assets) and the training-set stage (exact + near
dedup across all shards). Prints wall time, peak memory, recall of the planted
duplicates and how many clean conversations were dropped, then compares the near-dedup
stage with a plain one-document-at-a-time datasketch loop on the same documents.

    .venv/bin/python benchmarks/bench_corpus.py [--conversations 160000] [--baseline-docs 20000]
"""

from __future__ import annotations

import argparse
import re
import resource
import time

import numpy as np
import pandas as pd
from datasketch import MinHash, MinHashLSH

from baize_assets.core import corpus, dedup
from baize_assets.core.config import PROJECT_ROOT, CorpusConfig
from baize_assets.core.prompts import RAW_AI, RAW_HUMAN
from baize_assets.core.selfchat import TRANSCRIPT_SCHEMA
from baize_assets.core.trainingset import EXACT_DUPLICATE, NEAR_DUPLICATE, build_training_set

SHARDS = 8


def english_vocabulary() -> list[str]:
    text = " ".join(p.read_text(errors="ignore") for p in (PROJECT_ROOT / "data" / "seeds").rglob("*") if p.is_file())
    words = sorted(set(re.findall(r"\b[a-z]{2,12}\b", text.lower())))
    return words


def synthetic_transcripts(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, str]]:
    vocabulary = np.array(english_vocabulary())
    weights = 1.0 / np.arange(1, len(vocabulary) + 1)  # Zipf-like, as in real text
    weights /= weights.sum()
    n_exact, n_near = n // 20, n // 20
    n_clean = n - n_exact - n_near
    transcripts, kinds = [], {}

    def sentence_words(count: int) -> list[str]:
        return list(rng.choice(vocabulary, count, p=weights))

    clean_turns = []
    for _ in range(n_clean):
        turns = []
        for _ in range(int(rng.integers(3, 5))):
            turns.append((RAW_HUMAN, " ".join(sentence_words(int(rng.integers(6, 20)))).capitalize() + "?"))
            turns.append((RAW_AI, " ".join(sentence_words(int(rng.integers(30, 151)))).capitalize() + "."))
        clean_turns.append(turns)
        transcripts.append("\n".join(f"{m} {t}" for m, t in turns))
    ids = [f"c{i:07d}" for i in range(n_clean)]
    kinds.update(dict.fromkeys(ids, "clean"))
    for i in range(n_exact):
        source = int(rng.integers(n_clean))
        transcripts.append(transcripts[source].upper() if i % 2 else transcripts[source].replace(" ", "  "))
        ids.append(f"e{i:07d}")
        kinds[ids[-1]] = "exact"
    for i in range(n_near):
        turns = clean_turns[int(rng.integers(n_clean))]
        edited = []
        for marker, text in turns:
            words = text.split()
            if marker == RAW_AI:  # about 3% of a response's words replaced
                for position in rng.choice(len(words), max(1, len(words) * 3 // 100), replace=False):
                    words[position] = str(rng.choice(vocabulary))
            edited.append(f"{marker} {' '.join(words)}")
        transcripts.append("\n".join(edited))
        ids.append(f"n{i:07d}")
        kinds[ids[-1]] = "near"
    frame = pd.DataFrame({"seed_id": ids, "seed": ids, "source": "synthetic", "transcript": transcripts})
    frame["shard"] = np.arange(len(frame)) % SHARDS
    for column in TRANSCRIPT_SCHEMA.names:
        if column not in frame:
            frame[column] = None
    frame["finish_reason"] = "stop"
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True), kinds


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def baseline_near_dedup(texts: list[list[str]], ids: list[str], config) -> tuple[set[str], float]:
    """The plain way: one MinHash per document (datasketch's own hashing), query, then insert."""
    started = time.perf_counter()
    lsh = MinHashLSH(threshold=config.threshold, num_perm=config.num_perm)
    dropped = set()
    for seed_id, turns in zip(ids, texts):
        minhash = MinHash(num_perm=config.num_perm, seed=config.seed)
        shingles = []
        for turn in turns:
            words = turn.lower().split()
            n = config.shingle_words
            shingles += [" ".join(words[i : i + n]).encode() for i in range(max(1, len(words) - n + 1))]
        minhash.update_batch(shingles)
        if lsh.query(minhash):
            dropped.add(seed_id)
        else:
            lsh.insert(seed_id, minhash)
    return dropped, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=160_000)
    parser.add_argument("--baseline-docs", type=int, default=20_000)
    args = parser.parse_args()
    config = CorpusConfig()

    rng = np.random.default_rng(0)
    generated = time.perf_counter()
    transcripts, kinds = synthetic_transcripts(args.conversations, rng)
    print(f"generated {len(transcripts):,} transcripts in {time.perf_counter() - generated:.1f} s "
          f"(peak RSS so far {peak_rss_gib():.2f} GiB)")  # fmt: skip

    started = time.perf_counter()
    shards = []
    rejects = []
    for shard in range(SHARDS):
        built = corpus.build_corpus(transcripts[transcripts["shard"] == shard], config, "en")
        shards.append(built.conversations)
        rejects.append(built.rejects)
    corpus_s = time.perf_counter() - started
    conversations = pd.concat(shards, ignore_index=True)
    rejected = pd.concat(rejects, ignore_index=True)
    dedup_started = time.perf_counter()
    training = build_training_set(conversations, 0.0125, config.near_dedup)
    dedup_s = time.perf_counter() - dedup_started
    total_s = time.perf_counter() - started

    dropped_reason = dict(zip(rejected["seed_id"], rejected["reason"]))
    dropped_reason.update(zip(training.duplicates["seed_id"], training.duplicates["reason"]))
    planted = {kind: [i for i, k in kinds.items() if k == kind] for kind in ("clean", "exact", "near")}
    # A planted copy or its original may be the one kept: a pair counts as found when one of them is dropped.
    found_exact = sum(dropped_reason.get(i) == EXACT_DUPLICATE for i in planted["exact"])
    found_near = sum(dropped_reason.get(i) in (NEAR_DUPLICATE, EXACT_DUPLICATE) for i in planted["near"])
    clean_dropped = [i for i in planted["clean"] if i in dropped_reason]
    clean_dropped_as_dup = [i for i in clean_dropped if dropped_reason[i] in (NEAR_DUPLICATE, EXACT_DUPLICATE)]
    print(f"corpus stage (parse + filters + signatures, {SHARDS} shards): {corpus_s:.1f} s")
    print(f"training-set stage (exact + near dedup, split): {dedup_s:.1f} s")
    print(f"TOTAL filtering + exact + near dedup: {total_s:.1f} s for {len(transcripts):,} transcripts "
          f"(target < 60 s); peak RSS {peak_rss_gib():.2f} GiB (target < 4 GiB)")  # fmt: skip
    print(f"kept {len(training.conversations):,}; corpus rejects by reason "
          f"{rejected['reason'].value_counts().to_dict()}; "
          f"duplicates {training.duplicates['reason'].value_counts().to_dict()}")  # fmt: skip
    print(f"planted exact duplicates found: {found_exact}/{len(planted['exact'])} "
          f"(recall {found_exact / len(planted['exact']):.4f})")  # fmt: skip
    print(
        f"planted near duplicates found: {found_near}/{len(planted['near'])} "
        f"(recall {found_near / len(planted['near']):.4f})"
    )
    print(f"clean conversations dropped: {len(clean_dropped)} of {len(planted['clean']):,} "
          f"({len(clean_dropped_as_dup)} as duplicates, the rest by filters)")  # fmt: skip

    # Near-dedup stage against the plain loop, on the same documents.
    # A random sample (in seed-id order), so planted duplicates and their originals are in it.
    subset = conversations.sample(min(args.baseline_docs, len(conversations)), random_state=0).sort_values("seed_id")
    texts = [[t["text"] for t in turns] for turns in subset["turns"]]
    ids = subset["seed_id"].tolist()
    ours_started = time.perf_counter()
    sigs = dedup.conversation_signatures(texts, config.near_dedup)
    ours_dropped = {ids[d.index] for d in dedup.near_duplicates(sigs, config.near_dedup)}
    ours_s = time.perf_counter() - ours_started
    plain_dropped, plain_s = baseline_near_dedup(texts, ids, config.near_dedup)
    agree = len(ours_dropped & plain_dropped) / max(1, len(ours_dropped | plain_dropped))
    print(f"near dedup of {len(ids):,} docs: batched {ours_s:.2f} s, plain datasketch loop {plain_s:.2f} s "
          f"-> {plain_s / ours_s:.1f}x faster; dropped {len(ours_dropped)} vs {len(plain_dropped)} "
          f"(overlap {agree:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
