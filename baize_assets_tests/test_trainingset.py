import pandas as pd

from baize_assets.core.config import NearDedupConfig
from baize_assets.core.prompts import Turn, render_conversation
from baize_assets.core.trainingset import EXACT_DUPLICATE, build_training_set, split_of


def corpus(texts: dict[str, str], source: str = "quora") -> pd.DataFrame:
    rows = []
    for seed_id, answer in texts.items():
        turns = [Turn("human", "Tell me more"), Turn("ai", answer)]
        rows.append(
            {
                "seed_id": seed_id,
                "seed": "Tell me more",
                "source": source,
                "shard": int(seed_id[-1]) % 4,
                "turns": [t.as_dict() for t in turns],
                "n_exchanges": 1,
                "text": render_conversation(turns),
            }
        )
    return pd.DataFrame(rows)


def test_exact_duplicates_across_shards_keep_the_smallest_id_and_name_it():
    frame = corpus({"b1": "Same  answer.", "a2": "same answer.", "c3": "Other answer."})
    built = build_training_set(frame, 0.5, NearDedupConfig())
    assert sorted(built.conversations["seed_id"]) == ["a2", "c3"]
    assert built.duplicates[["seed_id", "reason", "duplicate_of"]].to_dict("records") == [
        {"seed_id": "b1", "reason": EXACT_DUPLICATE, "duplicate_of": "a2"}
    ]
    reversed_built = build_training_set(frame.iloc[::-1], 0.5, NearDedupConfig())
    assert sorted(reversed_built.conversations["seed_id"]) == ["a2", "c3"]


def test_split_is_stable_when_other_shards_change():
    ids = [f"id{i:04d}" for i in range(2000)]
    small = build_training_set(corpus({i: f"answer {i}" for i in ids[:1000]}), 0.1, NearDedupConfig()).conversations
    large = build_training_set(corpus({i: f"answer {i}" for i in ids}), 0.1, NearDedupConfig()).conversations
    merged = small.merge(large, on="seed_id", suffixes=("_small", "_large"))
    assert (merged["split_small"] == merged["split_large"]).all()
    assert 0.07 < (large["split"] == "eval").mean() < 0.13
    assert split_of("id0001", 0.1) == split_of("id0001", 0.1)
