"""The adapter's model card: Hugging Face front matter, training config, lineage, evaluation, guardrail."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from baize_assets.core.corpus.schema import data_version
from baize_assets.core.prompts import BAIZE_SYSTEM_PROMPT, CHAT_FORMAT_VERSION
from baize_assets.core.train.model_card import (
    MODEL_CARD_FILE,
    render_model_card,
    training_set_lineage,
    write_model_card,
)

from .adapter_files_support import SOURCES, train_tiny_adapter


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_adapter(tmp_path_factory.mktemp("card"))


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_training_writes_a_card_with_hub_front_matter(trained):
    adapter_dir, _ = trained
    card = (adapter_dir / MODEL_CARD_FILE).read_text(encoding="utf-8")
    summary = json.loads((adapter_dir / "training_summary.json").read_text())
    meta = front_matter(card)
    assert meta["base_model"] == summary["base_model"] and meta["library_name"] == "peft"
    assert meta["license"] == "other" and meta["license_name"]
    assert meta["datasets"] == ["training_sets/tiny_chat"] and meta["pipeline_tag"] == "text-generation"
    assert {"baize", "lora", *SOURCES} <= set(meta["tags"])
    metric = meta["model-index"][0]["results"][0]["metrics"][0]
    assert metric["value"] == summary["eval_loss_after"]
    # The training config as trained, the evaluation figures, the format and its guardrail.
    config = yaml.safe_load(card.split("```yaml\n")[1].split("```")[0])
    assert config == json.loads((adapter_dir / "training_config.json").read_text())["adapter"]
    assert f"| base model | {summary['eval_loss_before']:.4f} |" in card
    assert f"| with this adapter | {summary['eval_loss_after']:.4f} |" in card
    assert BAIZE_SYSTEM_PROMPT in card and CHAT_FORMAT_VERSION in card and "declines" in card


def test_lineage_counts_sources_splits_and_shards(trained):
    _, training_set = trained
    frame = pd.read_parquet(training_set)
    lineage = training_set_lineage(training_set)
    assert lineage["data_version"] == data_version(frame) and lineage["conversations"] == len(frame)
    for source in SOURCES:
        rows = frame[frame["source"] == source]
        assert lineage["counts"][source] == {split: int((rows["split"] == split).sum()) for split in ("train", "eval")}
    assert set(lineage["shards"]) == {"alpaca/0", "alpaca/1", "quora/0", "quora/1"}
    quora_0 = frame[(frame["source"] == "quora") & (frame["shard"] == 0)]
    assert lineage["shards"]["quora/0"] == data_version(quora_0)


def test_card_with_lineage_loads_with_huggingface_hub(trained, tmp_path):
    from huggingface_hub import ModelCard

    adapter_dir, training_set = trained
    lineage = training_set_lineage(training_set)
    path = write_model_card(adapter_dir, lineage)
    card = ModelCard.load(path)
    assert card.data.base_model == front_matter(path.read_text())["base_model"]
    assert card.data.library_name == "peft" and card.data.license == "other"
    assert card.data.eval_results[0].metric_type == "loss"
    for shard, version in lineage["shards"].items():
        assert f"| `{shard}` | `{version}` |" in card.text
    assert f"data version `{lineage['data_version']}`" in card.text
    assert not list(adapter_dir.glob(".README.md.*"))  # the temporary file was renamed into place


def test_errors_name_the_file(tmp_path, trained):
    with pytest.raises(FileNotFoundError, match="training_summary.json is missing"):
        render_model_card(tmp_path)
    pd.DataFrame({"seed_id": ["a"], "text": ["t"]}).to_parquet(tmp_path / "set.parquet")
    with pytest.raises(ValueError, match=r"set.parquet lacks the column\(s\) source, shard, split"):
        training_set_lineage(tmp_path / "set.parquet")


def test_the_card_states_what_the_training_data_cost(trained, tmp_path):
    import pyarrow.parquet as pq

    from baize_assets.core.costs.actuals import data_cost, with_data_cost

    adapter_dir, training_set = trained
    table = pq.read_table(training_set)
    priced = tmp_path / "priced.parquet"
    cost = data_cost([0.0125, None, 0.0075], table.num_rows)
    pq.write_table(table.cast(with_data_cost(table.schema, cost)), priced)
    lineage = training_set_lineage(priced)
    assert lineage["data_cost"] == {"dollars": 0.02, "conversations": table.num_rows,
                                    "dollars_per_conversation": round(0.02 / table.num_rows, 8)}
    card = render_model_card(adapter_dir, lineage)
    assert "The data cost $0.0200 of teacher calls" in card
    assert f"${0.02 / table.num_rows:.6f} per conversation of the training set" in card
    assert "The data cost" not in render_model_card(adapter_dir, training_set_lineage(training_set))


def test_a_v2_card_says_its_loss_before_training_is_v1_s_not_the_base_s(trained, tmp_path):
    import shutil

    adapter_dir, _ = trained
    v2_dir = tmp_path / "baize_x_v2"
    shutil.copytree(adapter_dir, v2_dir)
    summary = json.loads((v2_dir / "training_summary.json").read_text())
    summary["init_adapter"] = str(tmp_path / "adapters" / "baize_x")
    (v2_dir / "training_summary.json").write_text(json.dumps(summary))
    card = render_model_card(v2_dir)
    assert f"| starting adapter `baize_x` (v1) | {summary['eval_loss_before']:.4f} |" in card
    assert "| base model |" not in card
