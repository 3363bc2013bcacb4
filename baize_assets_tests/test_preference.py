"""Baize v2 by DPO: best-vs-worst pairs from the scores, a v2 adapter materialized by Dagster that prefers them."""

from __future__ import annotations

import json
import math
import random
import sys

import pandas as pd
import pytest
import torch
from dagster import AssetKey, materialize
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from baize_assets.assets.feedback_assets import build_self_distillation_assets
from baize_assets.assets.keys import adapter_key, training_set_key
from baize_assets.core.chat.chat_model import load_chat_model
from baize_assets.core.config.feedback import PreferenceConfig, SelfDistillationConfig
from baize_assets.core.config.pipeline import (
    AdapterConfig,
    PipelineConfig,
    SourceConfig,
    TinyBaseConfig,
    TrainingConfig,
)
from baize_assets.core.feedback.self_distill import (
    DISTILLED_SET_SCHEMA,
    PAIR_SCHEMA,
    SAMPLE_SCHEMA,
    SCORE_SCHEMA,
    pairs_path,
    preference_pairs,
)
from baize_assets.core.model.base import quiet_peft_deprecation
from baize_assets.core.model.batching import collate
from baize_assets.core.model.lm_loss import summed_loss
from baize_assets.core.model.samples import build_sample
from baize_assets.core.model.tiny_base import build_tiny_base
from baize_assets.core.prompts import Turn, render_conversation
from baize_assets.core.storage import Layout, write_parquet_atomic
from baize_assets.core.train.preference import require_trl
from baize_assets.core.train.preparation import attach_lora
from baize_assets.resources import BaizeStorage

V1, V2, SOURCE = "bot", "bot_v2", "faq"
WORDS = "river mountain cloud apple orange table chair light water fire garden music stone bread".split()
# No pretraining: DPO's mechanics need a model, not a good one.
TINY = TinyBaseConfig(
    vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, pretrain_steps=0
)
DPO = PreferenceConfig(beta=0.1, learning_rate=1e-2, epochs=3)


def _pipeline(objective: str = "dpo", dpo: PreferenceConfig = DPO) -> PipelineConfig:
    training = TrainingConfig(micro_batch_size=4, effective_batch_size=8, warmup_steps=1,
                              launcher={"kind": "in_process"})
    return PipelineConfig(
        sources=[SourceConfig(name=SOURCE, format="text", paths=["x"], shards=1)],
        adapters=[AdapterConfig(name=V1, sources=[SOURCE], training=training)],
        self_distillation=[SelfDistillationConfig(adapter=V1, objective=objective, dpo=dpo)],
    )


def _frame(rows: list[dict], schema) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=schema.names)


def test_pairs_are_each_seeds_best_against_its_worst_and_ties_or_unscored_seeds_are_left_out():
    context = [{"role": "human", "text": "q"}]
    answers = {
        "a": [("weak", 20), ("best", 95), ("middle", 60), ("also weak", 20)],  # worst: the last of equals
        "b": [("x", None), ("y", None)],  # no score
        "c": [("only", 70), ("unscored", None)],  # one score: nothing to compare
        "d": [("same", 50), ("other", 50)],  # tie
        "e": [("top", 80), ("top too", 80), ("low", 10)],  # best: the first of equals
        "f": [("repeat", 90), ("repeat", 30)],  # the same text twice
    }
    samples = _frame(
        [
            {"seed_id": seed, "source": SOURCE, "shard": 0, "sample_index": i, "context": context, "answer": text}
            for seed, rows in answers.items()
            for i, (text, _) in enumerate(rows)
        ],
        SAMPLE_SCHEMA,
    )
    scores = _frame(
        [
            {"seed_id": seed, "sample_index": i, "score": score}
            for seed, rows in answers.items()
            for i, (_, score) in enumerate(rows)
        ],
        SCORE_SCHEMA,
    )
    pairs, counts = preference_pairs(samples.sample(frac=1, random_state=0), scores)
    assert list(pairs.columns) == PAIR_SCHEMA.names
    assert pairs[["seed_id", "chosen", "rejected", "chosen_score", "rejected_score"]].values.tolist() == [
        ["a", "best", "also weak", 95.0, 20.0],
        ["e", "top", "low", 80.0, 10.0],
    ]
    assert counts == {"seeds": 6, "pairs": 2, "no_score": 2, "tied": 2}


def _question(rng: random.Random) -> tuple[str, str, str]:
    word = rng.choice(WORDS)
    return f"Tell me about the {word}.", f"The {word} is calm and clear.", " ".join(rng.sample(WORDS, 5))


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    """v1 (a LoRA unlike the base), its scored answers and training set on disk; v2's set and adapter by Dagster."""
    root = tmp_path_factory.mktemp("dpo")
    layout, config = Layout(root), _pipeline()
    rng = random.Random(0)
    questions = [_question(rng) for _ in range(16)]
    texts = [render_conversation([Turn("human", q), Turn("ai", a)]) for q, a, _ in questions]
    build_tiny_base(
        texts + [render_conversation([Turn("human", q), Turn("ai", r)]) for q, _, r in questions],
        TINY,
        layout.tiny_base(),
    )
    v1 = attach_lora(
        AutoModelForCausalLM.from_pretrained(layout.tiny_base()),
        config.adapter(V1),
        ["q_proj", "v_proj"],
        None,
        log=lambda _: None,
    )
    torch.manual_seed(1)
    for name, parameter in v1.named_parameters():
        if "lora_B" in name:  # a v1 that is not the base: the reference must be v1's weights, not the base's
            torch.nn.init.normal_(parameter, std=0.05)
    v1.save_pretrained(layout.adapter(V1))
    samples, scores, held_out = [], [], []
    for i, (question, good, bad) in enumerate(questions):
        context = [{"role": "human", "text": question}]
        for index, (answer, score) in enumerate([(bad, 10.0), (good, 90.0), (bad + " " + good, 50.0)]):
            samples.append(
                {
                    "seed_id": f"s{i:02d}",
                    "source": SOURCE,
                    "shard": 0,
                    "sample_index": index,
                    "context": context,
                    "answer": answer,
                    "finish_reason": "stop",
                }
            )
            scores.append({"seed_id": f"s{i:02d}", "sample_index": index, "score": score})
        if i % 4 == 0:
            turns = [Turn("human", question), Turn("ai", good)]
            held_out.append(
                {
                    "seed_id": f"s{i:02d}",
                    "source": SOURCE,
                    "shard": 0,
                    "split": "eval",
                    "turns": [t.as_dict() for t in turns],
                    "text": render_conversation(turns),
                }
            )
    write_parquet_atomic(_frame(samples, SAMPLE_SCHEMA), layout.feedback_samples(V2, SOURCE, 0), SAMPLE_SCHEMA)
    write_parquet_atomic(_frame(scores, SCORE_SCHEMA), layout.feedback_scores(V2, SOURCE, 0), SCORE_SCHEMA)
    write_parquet_atomic(_frame(held_out, DISTILLED_SET_SCHEMA), layout.training_set(V1), DISTILLED_SET_SCHEMA)
    # v2's training set and adapter; what they read (v1, its answers and scores) is on disk above.
    assets = [a for a in build_self_distillation_assets(config) if {training_set_key(V2), adapter_key(V2)} & a.keys]
    resources = {"storage": BaizeStorage(output_dir=str(root))}
    result = materialize(assets, resources=resources)
    return layout, config, assets, resources, result, questions


def _answer_nll(model, tokenizer, question: str, answer: str) -> float:
    sample = build_sample([Turn("human", question), Turn("ai", answer)], tokenizer, "last_ai")
    with torch.no_grad():
        return float(summed_loss(model, collate([sample], tokenizer.pad_token_id, "cpu")))


def test_a_dpo_v2_materializes_from_the_pairs_with_v1_as_its_reference(materialized):
    layout, _, _, _, result, questions = materialized
    assert result.success
    pairs = pd.read_parquet(pairs_path(layout.training_set(V2)))
    assert len(pairs) == 16 and (pairs["chosen_score"] == 90).all() and (pairs["rejected_score"] == 10).all()
    set_metadata = result.asset_materializations_for_node(training_set_key(V2).to_python_identifier())[0].metadata
    assert set_metadata["pairs_pairs"].value == 16 and set_metadata["pairs_tied"].value == 0

    metadata = result.asset_materializations_for_node(adapter_key(V2).to_python_identifier())[0].metadata
    summary = json.loads((layout.adapter(V2) / "training_summary.json").read_text())
    dpo = summary["dpo"]
    assert metadata["objective"].value == summary["objective"] == "dpo" and metadata["pairs"].value == 16
    assert summary["init_adapter"] == str(layout.adapter(V1)) and summary["steps"] == 6
    # v2 starts as v1 and v1 is the reference, so the first step's loss is exactly log 2 (v1 is not the base).
    assert dpo["dpo_loss_first"] == pytest.approx(math.log(2), abs=1e-4)
    assert dpo["dpo_loss_final"] < dpo["dpo_loss_first"] - 0.01
    assert dpo["reward_margin_final"] > dpo["reward_margin_first"] and dpo["reward_accuracy_final"] > 0.5
    assert summary["eval_loss_before"] is not None and summary["eval_loss_after"] is not None

    # From the saved weights alone: v2 moved towards the chosen answers and away from the rejected, relative to v1.
    tokenizer = AutoTokenizer.from_pretrained(layout.adapter(V2))
    margins = {}
    for name in (V1, V2):
        with quiet_peft_deprecation():
            base = AutoModelForCausalLM.from_pretrained(layout.tiny_base())
            model = PeftModel.from_pretrained(base, layout.adapter(name))
        model.eval()
        margins[name] = sum(
            _answer_nll(model, tokenizer, q, bad) - _answer_nll(model, tokenizer, q, good) for q, good, bad in questions
        )
    assert margins[V2] > margins[V1]


def test_the_dpo_adapter_directory_is_a_standard_one_that_chat_loads(materialized):
    layout = materialized[0]
    files = {path.name for path in layout.adapter(V2).iterdir()}
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "training_summary.json",
        "training_config.json",
        "loss_curve.png",
        "README.md",
    } <= files
    assert "ref" not in files  # trl's frozen reference copy is not part of v2
    assert "DPO (sigmoid, beta 0.1" in (layout.adapter(V2) / "README.md").read_text()
    chat = load_chat_model(layout.adapter(V2))
    assert isinstance(chat.reply([Turn("human", "Tell me about the river.")], max_new_tokens=4), str)


def test_without_trl_a_dpo_v2_fails_naming_the_extra(materialized, monkeypatch):
    layout, _, assets, resources, _, _ = materialized
    monkeypatch.setitem(sys.modules, "trl", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'baize_assets\[dpo\]'"):
        require_trl()
    result = materialize(assets, selection=[adapter_key(V2)], resources=resources, raise_on_error=False)
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    assert "pip install 'baize_assets[dpo]'" in failure.step_failure_data.error.to_string()


def _v2_code_version(config: PipelineConfig) -> str:
    key: AssetKey = adapter_key(V2)
    asset = next(a for a in build_self_distillation_assets(config) if key in a.keys)
    return asset.code_versions_by_key[key]


def test_the_v2_adapters_code_version_changes_with_the_objective_and_only_its_active_settings():
    sft, dpo = _v2_code_version(_pipeline("sft")), _v2_code_version(_pipeline("dpo"))
    assert sft != dpo
    assert _v2_code_version(_pipeline("dpo", DPO.model_copy(update={"beta": 0.5}))) != dpo
    # The DPO settings change nothing while the objective is SFT.
    assert _v2_code_version(_pipeline("sft", DPO.model_copy(update={"beta": 0.5}))) == sft
