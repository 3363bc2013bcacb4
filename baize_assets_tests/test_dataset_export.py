"""The training set as other tools read it: chat-message Parquet per split and a dataset card, loaded by
``datasets`` and trained on by trl's SFTTrainer as they are; plots inlined for the Dagster UI."""

from __future__ import annotations

import base64
import io
import math

import pandas as pd
import pytest
import yaml
from dagster import instance_for_test, materialize

from baize_assets.assets.trainingset_assets import build_training_set_asset
from baize_assets.core.config.pipeline import (
    AdapterConfig,
    NearDedupConfig,
    PipelineConfig,
    SourceConfig,
    TeacherConfig,
    TrainingConfig,
)
from baize_assets.core.corpus.chat_dataset import CARD_FILE, Provenance, chat_dir, write_chat_dataset
from baize_assets.core.corpus.schema import CONVERSATION_SCHEMA, data_version, turns_of
from baize_assets.core.corpus.trainingset import build_training_set
from baize_assets.core.messages import turns_to_messages
from baize_assets.core.plots_markdown import MAX_WIDTH, plots_markdown, png_data_uri
from baize_assets.core.prompts import render_conversation
from baize_assets.core.storage import Layout, write_parquet_atomic
from baize_assets.resources import BaizeStorage

from .test_training import TINY, synthetic_conversations

SOURCES = [
    SourceConfig(name="quora", format="quora_tsv", paths=["q.tsv"], shards=2),
    SourceConfig(name="alpaca", format="alpaca_json", paths=["a.json"], shards=1),
]
# A Baize-format template with generation markers, so trl can keep the loss on the assistant turns.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ '[|Human|] ' + message['content'] + '\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ '[|AI|] ' }}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{{ '\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '[|AI|] ' }}{%- endif -%}"
)


def corpus_frame(count: int = 40) -> pd.DataFrame:
    """Corpus shard rows (``CONVERSATION_SCHEMA``) of synthetic conversations over the two sources."""
    rows = []
    for i, turns in enumerate(synthetic_conversations(count)):
        source, shard = ("alpaca", 0) if i % 4 == 0 else ("quora", i % 2)
        rows.append({
            "seed_id": f"{i:016x}", "seed": turns[0].text, "source": source, "shard": shard,
            "turns": [t.as_dict() for t in turns], "n_exchanges": len(turns) // 2, "text": render_conversation(turns),
            "minhash": None, "minhash_version": None,
        })  # fmt: skip
    return pd.DataFrame(rows)


def provenance(conversations: pd.DataFrame) -> Provenance:
    return Provenance(
        name="tiny", sources=SOURCES, teacher=TeacherConfig(), data_version=data_version(conversations),
        eval_size=0.25, exact_duplicates=1, near_duplicates=0, dropped_by_reason={"refusal": 2, "exact_duplicate": 1},
    )  # fmt: skip


@pytest.fixture(scope="module")
def training_set() -> pd.DataFrame:
    return build_training_set(corpus_frame(), 0.25, NearDedupConfig(enabled=False)).conversations


@pytest.fixture(scope="module")
def exported(tmp_path_factory, training_set):
    directory = tmp_path_factory.mktemp("export") / "tiny"
    counts = write_chat_dataset(training_set, directory, provenance(training_set))
    return directory, counts


def load(directory, tmp_path, **kwargs):
    import datasets

    return datasets.load_dataset(str(directory), cache_dir=str(tmp_path / "hf-cache"), **kwargs)


def test_datasets_loads_the_folder_with_its_splits_and_messages(exported, training_set, tmp_path):
    directory, counts = exported
    assert sorted(p.name for p in directory.iterdir()) == [CARD_FILE, "eval.parquet", "train.parquet"]
    corpus = load(directory, tmp_path)
    # The card's configs name the splits; without them datasets would call eval.parquet "test".
    assert set(corpus) == {"train", "eval"}
    assert {name: len(split) for name, split in corpus.items()} == counts
    assert counts["train"] + counts["eval"] == len(training_set) and counts["eval"] > 0
    assert corpus["train"].column_names == ["messages", "seed_id", "source", "split"]
    expected = dict(zip(training_set["seed_id"], (turns_to_messages(t) for t in turns_of(training_set))))
    for name, split in corpus.items():
        assert set(split["split"]) == {name}
        for row in split:
            assert row["messages"] == expected[row["seed_id"]]
            assert [m["role"] for m in row["messages"]][:2] == ["user", "assistant"]

    import datasets

    files = {name: str(directory / f"{name}.parquet") for name in ("train", "eval")}
    plain = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "plain-cache"))
    assert {name: len(split) for name, split in plain.items()} == counts


def test_dataset_card_front_matter_and_counts(exported, training_set):
    directory, counts = exported
    card = (directory / CARD_FILE).read_text()
    _, front, body = card.split("---\n", 2)
    metadata = yaml.safe_load(front)
    assert metadata["configs"] == [
        {"config_name": "default", "data_files": [
            {"split": "train", "path": "train.parquet"}, {"split": "eval", "path": "eval.parquet"}]}
    ]  # fmt: skip
    assert metadata["license"] == "other" and metadata["license_name"]
    assert metadata["task_categories"] == ["text-generation"]
    assert metadata["size_categories"] == ["n<1K"] and metadata["language"] == ["en"]
    assert {"baize", "self-chat", "conversational"} <= set(metadata["tags"])
    quora = training_set[training_set["source"] == "quora"]
    row = f"| quora    | {(quora['split'] == 'train').sum():>7} | {(quora['split'] == 'eval').sum():>6} |"
    assert row in body, body
    assert f"| total    | {counts['train']:>7} | {counts['eval']:>6} | {len(training_set):>7} |" in body
    assert data_version(training_set) in body and "baize-simulated-teacher" in body and "| refusal | 2 |" in body


def test_a_split_with_no_conversation_gets_no_file(training_set, tmp_path):
    directory = tmp_path / "train_only"
    only_train = training_set.assign(split="train")
    assert write_chat_dataset(only_train, directory, provenance(only_train)) == {"train": len(only_train), "eval": 0}
    assert not (directory / "eval.parquet").exists()
    assert set(load(directory, tmp_path)) == {"train"}
    # Rewritten whole: a split file of an earlier export does not linger.
    write_chat_dataset(training_set, directory, provenance(training_set))
    write_chat_dataset(only_train, directory, provenance(only_train))
    assert not (directory / "eval.parquet").exists()
    # An empty set: the card alone, saying so, with no configs pointing at missing files.
    empty = training_set.head(0)
    assert write_chat_dataset(empty, tmp_path / "empty", provenance(empty)) == {"train": 0, "eval": 0}
    assert [p.name for p in (tmp_path / "empty").iterdir()] == [CARD_FILE]
    card = (tmp_path / "empty" / CARD_FILE).read_text()
    assert "configs" not in yaml.safe_load(card.split("---\n", 2)[1]) and "_empty_" in card


def test_bad_training_set_is_refused_with_its_name(training_set, tmp_path):
    with pytest.raises(ValueError, match=r"training set tiny: split 'test' is not one of train, eval"):
        write_chat_dataset(training_set.assign(split="test"), tmp_path / "x", provenance(training_set))
    with pytest.raises(ValueError, match="training set tiny has no column turns"):
        write_chat_dataset(training_set.drop(columns="turns"), tmp_path / "x", provenance(training_set))


def test_trl_sft_trainer_trains_on_the_exported_dataset(exported, tmp_path):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from baize_assets.core.model.tiny_base import build_tiny_base

    directory, _ = exported
    corpus = load(directory, tmp_path)
    texts = [m["content"] for row in corpus["train"] for m in row["messages"]]
    build_tiny_base(texts, TINY.model_copy(update={"pretrain_steps": 0}), tmp_path / "base")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "base")
    tokenizer.chat_template = CHAT_TEMPLATE
    args = SFTConfig(
        output_dir=str(tmp_path / "trl"), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-3,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, assistant_only_loss=True,
        max_length=256, eval_strategy="steps", eval_steps=3, per_device_eval_batch_size=4,
    )  # fmt: skip
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tmp_path / "base"),
        args=args,
        train_dataset=corpus["train"],
        eval_dataset=corpus["eval"],
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    # trl read the messages: the loss covers every assistant turn and no user turn.
    sample = trainer.train_dataset[0]
    trained_text = tokenizer.decode([t for t, label in zip(sample["input_ids"], sample["labels"]) if label != -100])
    row = next(r for r in corpus["train"] if r["seed_id"] == sample["seed_id"])
    assert all(m["content"] in trained_text for m in row["messages"] if m["role"] == "assistant")
    assert "What do you know" not in trained_text and "[|Human|]" not in trained_text
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 3 and len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert math.isfinite(next(e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e))


def test_plots_are_inlined_small_and_missing_ones_named(tmp_path):
    from PIL import Image

    from baize_assets.core.corpus.report import plot_distributions

    plots = plot_distributions(corpus_frame(), tmp_path / "report")
    markdown = plots_markdown(plots)
    assert markdown.count("](data:image/png;base64,") == len(plots) == 2
    uri = png_data_uri(plots["words_per_response"])
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as image:
        assert image.format == "PNG" and 0 < image.width <= MAX_WIDTH
    assert len(markdown) < 40_000  # two plots, light on the event log
    assert plots_markdown({}) == "_none_"
    with pytest.raises(FileNotFoundError, match="gone.png"):
        png_data_uri(tmp_path / "gone.png")


def test_training_set_asset_writes_the_chat_dataset_and_inlines_its_plots(tmp_path):
    layout = Layout(tmp_path)
    frame = corpus_frame()
    for source in SOURCES:
        for shard in range(source.shards):
            part = frame[(frame["source"] == source.name) & (frame["shard"] == shard)]
            write_parquet_atomic(part, layout.conversations(source.name, shard), CONVERSATION_SCHEMA)
    adapter = AdapterConfig(name="tiny", sources=["quora", "alpaca"], training=TrainingConfig(eval_size=0.25))
    config = PipelineConfig(sources=SOURCES, adapters=[adapter])
    with instance_for_test() as instance:
        result = materialize(
            [build_training_set_asset(adapter, config)], instance=instance,
            resources={"storage": BaizeStorage(output_dir=str(tmp_path))},
        )  # fmt: skip
    assert result.success
    metadata = result.asset_materializations_for_node("tiny__training_set")[0].metadata
    directory = chat_dir(layout.training_set("tiny"))
    assert metadata["chat_dataset_path"].value == str(directory)
    assert metadata["plots"].value.count("data:image/png;base64,") == 2
    assert metadata["plot_words_per_response"].value.endswith("words_per_response.png")
    corpus = load(directory, tmp_path)
    assert {name: len(split) for name, split in corpus.items()} == {
        "train": metadata["train"].value, "eval": metadata["eval"].value
    }  # fmt: skip
    assert metadata["data_version"].value in (directory / CARD_FILE).read_text()
