import pandas as pd

from baize_assets.core.config.pipeline import NearDedupConfig
from baize_assets.core.corpus.trainingset import EXACT_DUPLICATE, build_training_set, split_of
from baize_assets.core.prompts import Turn, render_conversation


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


# The held-out ids among id0000..id0199 at a tenth, as every earlier training set split them:
# a change of salt or hash would move conversations between train and eval sets already evaluated on.
PINNED_EVAL_IDS = [24, 26, 28, 45, 65, 66, 67, 91, 96, 102, 103, 104, 127, 136, 138, 141, 150, 156, 164, 165, 175,
                   189, 194]  # fmt: skip


def test_split_of_holds_out_the_pinned_ids_and_grows_by_adding_only():
    ids = [f"id{i:04d}" for i in range(2000)]
    tenth = [i for i, seed_id in enumerate(ids[:200]) if split_of(seed_id, 0.1) == "eval"]
    assert tenth == PINNED_EVAL_IDS
    for fraction in (0.05, 0.1, 0.3):
        assert abs(sum(split_of(seed_id, fraction) == "eval" for seed_id in ids) / len(ids) - fraction) < 0.03
    # A larger fraction keeps every id a smaller one held out: raising eval_size moves none back to train.
    smaller, larger = ({s for s in ids if split_of(s, f) == "eval"} for f in (0.1, 0.3))
    assert smaller < larger
    assert {split_of(s, 0.0) for s in ids} == {"train"} and {split_of(s, 1.0) for s in ids} == {"eval"}


def test_training_set_and_trainer_hold_out_the_same_count():
    from baize_assets.core.corpus.eval_split import held_out_split

    frame = corpus({f"id{i:04d}": f"answer {i}" for i in range(5000)})
    no_near_dedup = NearDedupConfig(enabled=False)
    turns = [[Turn(**t) for t in conversation] for conversation in frame["turns"]]
    for eval_size, expected in ((2000, 1000), (300, 300)):
        built = build_training_set(frame, eval_size, no_near_dedup)
        _, trainer_eval, _ = held_out_split(turns, eval_size)
        assert (built.conversations["split"] == "eval").sum() == len(trainer_eval) == expected
    few = corpus({f"id{i}": f"answer {i}" for i in range(4)})
    assert set(build_training_set(few, 0.5, no_near_dedup).conversations["split"]) == {"train"}
    assert held_out_split([[Turn("human", "Hi"), Turn("ai", f"answer {i}")] for i in range(4)], 0.5)[1] == []
