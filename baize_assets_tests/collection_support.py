"""Helpers of the collection tests: seed tables, and a collector process that can be killed.

``python -m baize_assets_tests.collection_support SEEDS CACHE BASE_URL TEACHER_JSON`` runs
the self-chat collector on a seed Parquet file with a transcript cache, reading the key
from ``OPENAI_API_KEY``, as a run's process would.
"""

from __future__ import annotations

import os
import sys

import pandas as pd

from baize_assets.core.collect.cache import TranscriptCache
from baize_assets.core.collect.collector import collect_transcripts
from baize_assets.core.config.pipeline import TeacherConfig
from baize_assets.core.storage import seed_id

_TOPICS = ["tides", "bread", "glass", "volcanoes", "bees", "rust", "clouds", "magnets", "coffee", "maps"]


def make_seeds(count: int, source: str = "quora", shard: int = 0, start: int = 0) -> pd.DataFrame:
    """``count`` distinct seed questions in the seed table's shape."""
    texts = [f"Question {n}: how do {_TOPICS[n % len(_TOPICS)]} work in case {n}?" for n in range(start, start + count)]
    return pd.DataFrame([{"seed_id": seed_id(t), "seed": t, "source": source, "shard": shard} for t in texts])


def main(argv: list[str]) -> int:
    seeds_path, cache_path, base_url, teacher_json = argv
    teacher = TeacherConfig.model_validate_json(teacher_json)
    with TranscriptCache(cache_path) as cache:
        collect_transcripts(
            pd.read_parquet(seeds_path), teacher, api_key=os.environ["OPENAI_API_KEY"], base_url=base_url,
            log=lambda line: print(line, flush=True), cache=cache,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
