"""Self-distillation data: stable contexts from a shard, the best answer per seed, nothing trained at random."""

import pandas as pd

from baize_assets.core.feedback.self_distill import best_answer_conversations, feedback_contexts, held_out_seed_ids
from baize_assets.core.prompts import Turn


def _conversations(n):
    return pd.DataFrame(
        {
            "seed_id": [f"s{i}" for i in range(n)],
            "source": ["quora"] * n,
            "shard": [0] * n,
            "turns": [
                [
                    {"role": "human", "text": f"question {i}"},
                    {"role": "ai", "text": f"answer {i}"},
                    {"role": "human", "text": f"follow-up {i}"},
                    {"role": "ai", "text": f"second answer {i}"},
                ]
                for i in range(n)
            ],
        }
    )


def test_contexts_end_with_the_last_human_turn_and_are_a_stable_choice():
    conversations = _conversations(20)
    contexts = feedback_contexts(conversations, limit=5)
    assert len(contexts) == 5
    for context in contexts:
        i = context.seed_id[1:]
        assert [t.text for t in context.context] == [f"question {i}", f"answer {i}", f"follow-up {i}"]
    # Same choice on a rerun and from a shuffled table; a larger limit only adds seeds.
    assert [c.seed_id for c in feedback_contexts(conversations.sample(frac=1, random_state=3), 5)] == [
        c.seed_id for c in contexts
    ]
    assert {c.seed_id for c in contexts} < {c.seed_id for c in feedback_contexts(conversations, 10)}
    assert len(feedback_contexts(conversations, None)) == 20


def test_v1_held_out_conversations_and_their_duplicates_are_never_sampled():
    conversations = _conversations(20)
    training_set = conversations.assign(split=["eval" if i % 5 == 0 else "train" for i in range(20)])
    duplicates = pd.DataFrame({"seed_id": ["s21", "s22"], "duplicate_of": ["s0", "s3"]})
    held_out = held_out_seed_ids(training_set, duplicates)
    assert held_out == {"s0", "s5", "s10", "s15", "s21"}  # s22 repeats a training conversation, not a held-out one
    everything = feedback_contexts(pd.concat([conversations, _conversations(23).iloc[21:]]), None)
    assert held_out <= {c.seed_id for c in everything}  # without the exclusion, v2 would answer them
    chosen = feedback_contexts(pd.concat([conversations, _conversations(23).iloc[21:]]), None, excluded=held_out)
    assert not held_out & {c.seed_id for c in chosen} and len(chosen) == 22 - 5


def test_v2_trains_on_the_best_answer_per_seed_and_leaves_unscored_seeds_out():
    context = [{"role": "human", "text": "q"}]
    samples = pd.DataFrame(
        {
            "seed_id": ["a", "a", "a", "b", "b"],
            "sample_index": [0, 1, 2, 0, 1],
            "context": [context] * 5,
            "answer": ["weak", "best", "good", "x", "y"],
        }
    )
    scores = pd.DataFrame(
        {"seed_id": ["a", "a", "a", "b", "b"], "sample_index": [0, 1, 2, 0, 1], "score": [20, 95, 80, None, None]}
    )
    conversations, counts = best_answer_conversations(samples, scores)
    assert conversations == {"a": [Turn("human", "q"), Turn("ai", "best")]}
    assert counts == {"seeds": 2, "trained": 1, "no_score": 1}


def test_v1_and_v2_held_out_losses_are_measured_with_the_same_mask():
    from baize_assets.core.config.pipeline import load_config

    config = load_config()
    plan = config.self_distillation[0]
    v1, v2 = config.adapter(plan.adapter), config.distilled_adapter(plan)
    assert v2.training.loss_on == "last_ai"  # v2 learns its best answers only ...
    assert config.evaluation_training(v2).loss_on == config.evaluation_training(v1).loss_on == "ai"  # ... judged alike
