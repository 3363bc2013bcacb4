"""Tiny base building and LoRA training, on a base model small enough for CPU tests."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from baize_assets.core.config.pipeline import (
    AdapterConfig,
    LoraConfig,
    TinyBaseConfig,
    TrainingConfig,
)
from baize_assets.core.corpus.eval_split import eval_count, split_by_hash
from baize_assets.core.model import lm_loss
from baize_assets.core.model.base import quiet_peft_deprecation
from baize_assets.core.model.batching import IGNORE_INDEX, collate, length_grouped_batches
from baize_assets.core.model.samples import build_sample, fit_conversation
from baize_assets.core.model.tiny_base import build_tiny_base, directory_fingerprint
from baize_assets.core.prompts import AI, HUMAN, TRAINING_HEADER, Turn, render_conversation
from baize_assets.core.storage import staged_output_dir
from baize_assets.core.train.packing import collate_packed, pack_rows, packing_layout
from baize_assets.core.train.trainer import train_adapter

from .tokenizer_support import TOKENIZER_KINDS, trained_tokenizer

TINY = TinyBaseConfig(
    vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2
)
WORDS = (
    "river mountain cloud apple orange table chair light dark water fire garden train music "
    "window paper stone bread coffee winter summer forest ocean city market doctor teacher"
).split()


def synthetic_conversations(count: int = 40, seed: int = 0) -> list[list[Turn]]:
    """Conversations of 1-3 exchanges made of varied words, with a learnable answer shape."""
    rng = random.Random(seed)
    conversations = []
    for _ in range(count):
        turns = []
        for _ in range(rng.randint(1, 3)):
            topic = rng.choice(WORDS)
            question = f"What do you know about the {topic} and the {rng.choice(WORDS)}?"
            answer = f"The {topic} is " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))) + "."
            turns += [Turn("human", question), Turn("ai", answer)]
        conversations.append(turns)
    return conversations


def small_adapter(**training) -> AdapterConfig:
    settings = dict(
        learning_rate=5e-3,
        epochs=4,
        max_steps=12,
        micro_batch_size=4,
        effective_batch_size=8,
        warmup_steps=2,
        cutoff_len=256,
        eval_size=0.1,
        eval_steps=6,
    )
    return AdapterConfig(name="tiny", sources=["synthetic"], training=TrainingConfig(**{**settings, **training}))


# Session-wide: test_training_runs.py trains on the same base, which takes a while to build.
@pytest.fixture(scope="session")
def conversations() -> list[list[Turn]]:
    return synthetic_conversations()


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, conversations) -> Path:
    out = tmp_path_factory.mktemp("base") / "tiny_llama"
    build_tiny_base([render_conversation(c) for c in conversations], TINY, out)
    return out


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_base)


@pytest.fixture(scope="module", params=TOKENIZER_KINDS)
def each_tokenizer(request, conversations):
    """A tokenizer of each layout, trained on the conversations as the tiny base's is."""
    return trained_tokenizer(request.param, [render_conversation(c) for c in conversations])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_base, conversations) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("adapters") / "tiny"
    summary = train_adapter(conversations, small_adapter(), str(tiny_base), out, log=lambda _: None)
    return out, summary


def test_tiny_base_loads_and_is_deterministic(tmp_path, tiny_base, conversations):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = [render_conversation(c) for c in conversations]
    # The session's base was built from the same texts and config: building again into a
    # directory holding other files gives the same files, and only them.
    shutil.copytree(tiny_base, tmp_path / "a")
    (tmp_path / "a" / "left_over.bin").write_bytes(b"old")
    first = build_tiny_base(texts, TINY, tmp_path / "a")
    assert first["fingerprint"] == directory_fingerprint(tiny_base) == directory_fingerprint(tmp_path / "a")
    assert first["vocab_size"] <= TINY.vocab_size and first["num_hidden_layers"] == 2
    # The seed alone changes the weights (a short pretraining shows it as well as the full one).
    short = TINY.model_copy(update={"pretrain_steps": 2})
    seeds = [build_tiny_base(texts, short.model_copy(update={"seed": seed}), tmp_path / f"seed{seed}")
             for seed in (0, 1)]
    assert seeds[0]["fingerprint"] != seeds[1]["fingerprint"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "seed0", "seed1"]  # no staging leftovers

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    assert model.config.vocab_size == len(tokenizer) == first["vocab_size"]
    assert len(tokenizer(HUMAN, add_special_tokens=False)["input_ids"]) == 1
    text = f"hello\n{HUMAN} world"
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text


def test_staged_output_dir_replaces_whole_or_not_at_all(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_output_dir(out) as staging:
            (staging / "new.txt").write_text("new")
            raise RuntimeError("failed half-way")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and [p.name for p in out.iterdir()] == ["old.txt"]
    with staged_output_dir(out) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and [p.name for p in out.iterdir()] == ["new.txt"]


def labeled_runs(sample, tokenizer) -> list[str]:
    """The decoded runs of consecutive labeled tokens."""
    runs, current = [], []
    for token_id, label in zip(sample.input_ids, sample.labels):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(token_id)
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def test_labels_cover_exactly_the_ai_answers(each_tokenizer):
    tokenizer = each_tokenizer
    turns = [
        Turn("human", "Tell me about the river."),
        Turn("ai", "The river is long and cold."),
        Turn("human", "And the forest?"),
        Turn("ai", "The forest is green."),
    ]
    sample = build_sample(turns, tokenizer, "ai")
    assert sample.input_ids[0] == tokenizer.bos_token_id
    runs = labeled_runs(sample, tokenizer)
    assert [run.strip() for run in runs] == [f"The river is long and cold.\n{HUMAN}", f"The forest is green.\n{HUMAN}"]

    everything = build_sample(turns, tokenizer, "all")
    assert everything.labels == everything.input_ids

    # The first exchange as context of a split piece: only the second answer is trained.
    continued = build_sample(turns, tokenizer, "ai", context_turns=2)
    assert continued.input_ids == sample.input_ids
    assert [run.strip() for run in labeled_runs(continued, tokenizer)] == [f"The forest is green.\n{HUMAN}"]
    with_context = build_sample(turns, tokenizer, "all", context_turns=2)
    assert tokenizer.decode([t for t in with_context.labels if t != IGNORE_INDEX]).strip() == (
        f"And the forest?\n{AI} The forest is green.\n{HUMAN}"
    )


def test_sentencepiece_layouts_encode_as_sentencepiece_does(conversations):
    """The converted tokenizer is SentencePiece's: same ids; the layouts differ only after a special token."""
    from baize_assets.core.model.sentencepiece_tokenizer import (
        train_sentencepiece_model,
        train_sentencepiece_tokenizer,
    )

    texts = [render_conversation(c) for c in conversations]
    processor = train_sentencepiece_model(texts, 400)
    legacy, first = (train_sentencepiece_tokenizer(texts, 400, layout) for layout in ("legacy", "first"))
    for text in [*texts[:5], "Héllo wörld 2024, naïve ✓ café", "Tabs\tand\nnew lines  twice"]:
        ids = legacy(text, add_special_tokens=False)["input_ids"]
        assert ids == processor.encode(text) == first(text, add_special_tokens=False)["input_ids"]
        assert legacy.decode(ids) == first.decode(ids) == text
    legacy_next, first_next = (tok.convert_ids_to_tokens(tok("<s>The river", add_special_tokens=False)["input_ids"])[1]
                               for tok in (legacy, first))
    assert legacy_next == "▁The" and not first_next.startswith("▁")  # "first" adds no word boundary after <s>
    assert legacy("The river")["input_ids"][0] == legacy.bos_token_id  # Llama's post-processor puts BOS first


def long_conversation(exchanges: int) -> list[Turn]:
    turns = []
    for i in range(exchanges):
        turns += [Turn("human", f"Question {i} about the river and the mountain?"),
                  Turn("ai", f"Answer {i}: the river meets the mountain near the old garden.")]
    return turns


def test_long_conversations_are_split_at_turn_boundaries_not_truncated(each_tokenizer):
    tokenizer = each_tokenizer
    turns = long_conversation(8)
    whole = build_sample(turns, tokenizer, "ai")
    # Pieces of about half the conversation, however long each tokenizer makes it.
    cutoff = len(whole.input_ids) // 2
    training = TrainingConfig(cutoff_len=cutoff, split_context_fraction=0.5)
    samples, stats = fit_conversation(turns, tokenizer, training)
    assert stats.conversations_split == 1 and stats.samples == len(samples) > 1 and stats.exchanges_dropped == 0
    assert all(len(s.input_ids) <= cutoff for s in samples)
    trained = [run.strip() for s in samples for run in labeled_runs(s, tokenizer)]
    # Every AI answer is trained exactly once, in order, each ending with the stop marker.
    assert trained == [f"Answer {i}: the river meets the mountain near the old garden.\n{HUMAN}" for i in range(8)]
    # Every piece after the first starts with earlier turns as unlabeled context.
    for sample in samples[1:]:
        text = tokenizer.decode(sample.input_ids, skip_special_tokens=True)
        first_trained = labeled_runs(sample, tokenizer)[0].strip().split(":")[0]
        assert text.startswith(TRAINING_HEADER) and f"{AI} Answer" in text.split(first_trained)[0]

    dropped, drop_stats = fit_conversation(turns, tokenizer, training.model_copy(update={"overflow": "drop"}))
    assert dropped == [] and drop_stats.conversations_dropped == 1

    oversized = [Turn("human", "Tell me everything."), Turn("ai", "river " * 250), *turns[:2]]
    kept, oversized_stats = fit_conversation(oversized, tokenizer, training)
    assert oversized_stats.exchanges_dropped == 1 and len(kept) == 1
    assert [run.strip() for run in labeled_runs(kept[0], tokenizer)] == [trained[0]]


def test_length_grouped_batches_waste_little_and_cover_each_epoch():
    rng = random.Random(0)
    lengths = [rng.randint(20, 400) for _ in range(2000)]
    batches = length_grouped_batches(lengths, micro_batch_size=8, seed=3)
    epoch = [next(batches) for _ in range(250)]
    assert sorted(i for batch in epoch for i in batch) == list(range(2000))
    real = sum(lengths[i] for batch in epoch for i in batch)
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in epoch)
    assert real / padded >= 0.9
    again = length_grouped_batches(lengths, micro_batch_size=8, seed=3)
    assert [next(again) for _ in range(250)] == epoch
    assert next(batches) != epoch[0]  # a new epoch, a new order

def test_eval_split_is_small_and_content_based():
    assert eval_count(4, 2000) == 0
    assert eval_count(40, 2000) == 8  # a count beyond a fifth of the data is capped at a fifth
    assert eval_count(40, 9) == 8 and eval_count(40, 7) == 7  # so a larger request never holds out fewer
    assert eval_count(40, 0.1) == 4
    assert eval_count(1000, 50) == 50
    texts = [f"conversation {i}" for i in range(20)]
    train, held_out = split_by_hash(texts, 3)
    train_reversed, held_out_reversed = split_by_hash(texts[::-1], 3)
    assert {texts[i] for i in held_out} == {texts[::-1][i] for i in held_out_reversed}
    assert len(train) == 17 and not set(train) & set(held_out)


def test_training_writes_a_loadable_adapter_that_learns(trained, tiny_base):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, summary = trained
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "training_summary.json"} <= names
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_base.resolve())
    assert json.loads((out / "training_summary.json").read_text()) == summary
    assert summary["steps"] == 12 and summary["n_train"] == 36 and summary["n_eval"] == 4
    assert summary["trained_tokens"] < summary["tokens_seen"]
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
    assert [entry["step"] for entry in summary["eval_history"]] == [6, 12]
    with quiet_peft_deprecation():
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), out)


def test_same_seed_gives_the_same_adapter(trained, tiny_base, conversations, tmp_path):
    out, _ = trained
    shuffled = conversations[::-1]  # the input order must not matter either
    train_adapter(shuffled, small_adapter(), str(tiny_base), tmp_path / "again", log=lambda _: None)
    first = load_file(out / "adapter_model.safetensors")
    again = load_file(tmp_path / "again" / "adapter_model.safetensors")
    assert first.keys() == again.keys()
    assert all((first[name] == again[name]).all() for name in first)


def test_tiny_data_trains_without_eval_set(tiny_base, conversations, tmp_path):
    lines = []
    adapter = small_adapter(max_steps=2)
    summary = train_adapter(conversations[:3], adapter, str(tiny_base), tmp_path / "a", log=lines.append)
    assert summary["n_eval"] == 0 and summary["eval_loss_after"] is None
    assert "no eval set" in summary["eval_note"]
    assert any(line.startswith("step 2/2 loss") for line in lines)


def test_errors_name_the_problem(tiny_base, conversations, tmp_path):
    with pytest.raises(ValueError, match="no conversations"):
        train_adapter([], small_adapter(), str(tiny_base), tmp_path / "a")
    missing = tmp_path / "no_such_base"
    with pytest.raises(FileNotFoundError, match="no_such_base"):
        train_adapter(conversations, small_adapter(), str(missing), tmp_path / "a")
    adapter = small_adapter().model_copy(update={"lora": LoraConfig(target_modules=["c_attn"])})
    with pytest.raises(ValueError, match="c_attn"):
        train_adapter(conversations, adapter, str(tiny_base), tmp_path / "a", log=lambda _: None)
    assert not (tmp_path / "a").exists()


# The label-only loss, packing and the trainer's options.


@pytest.fixture(scope="module")
def lora_model(tiny_base):
    from peft import LoraConfig as PeftLoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_base, attn_implementation="sdpa")
    config = PeftLoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    with quiet_peft_deprecation():
        model = get_peft_model(base, config)
    with torch.no_grad():  # LoRA B starts at zero; make the adapter change the output
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    return model


@pytest.fixture(scope="module")
def samples(tokenizer, conversations):
    return [build_sample(turns, tokenizer, "ai") for turns in conversations[:6]]


def loss_and_grads(model, batch, loss_fn):
    """The per-token loss, as a training step divides it, and the gradients of the trainable parameters."""
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch) / lm_loss.predicted_tokens(batch)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def full_logits_loss(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.size(-1)), batch["labels"][:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum",
    )


def assert_same(first, second, atol=1e-5):
    (loss_a, grads_a), (loss_b, grads_b) = first, second
    assert torch.allclose(loss_a, loss_b, atol=atol, rtol=1e-6), (loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=atol, rtol=1e-5), name


@pytest.mark.parametrize("chunk_positions", [1000, 3])  # one chunk, then many
def test_label_only_loss_equals_the_full_logits_loss_and_gradients(lora_model, samples, monkeypatch, chunk_positions):
    vocab = lora_model.get_base_model().get_output_embeddings().out_features
    monkeypatch.setattr(lm_loss, "LOGIT_CHUNK_ELEMENTS", chunk_positions * vocab)
    batch = collate(samples, pad_id=0, device="cpu")
    label_only = loss_and_grads(lora_model, batch, lm_loss.summed_loss)
    assert_same(label_only, loss_and_grads(lora_model, batch, full_logits_loss))


def test_label_only_loss_of_a_trainable_head_and_in_evaluation(tiny_base, samples, monkeypatch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base)  # every parameter trainable, the head too
    monkeypatch.setattr(lm_loss, "LOGIT_CHUNK_ELEMENTS", 5 * model.config.vocab_size)
    batch = collate(samples, pad_id=0, device="cpu")
    assert_same(loss_and_grads(model, batch, lm_loss.summed_loss), loss_and_grads(model, batch, full_logits_loss))
    with torch.no_grad():
        expected = float(full_logits_loss(model, batch)) / lm_loss.predicted_tokens(batch)
    assert lm_loss.evaluate(model, samples, len(samples), 0, "cpu") == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_packed_and_unpacked_batches_give_the_same_loss_and_gradients(lora_model, samples, implementation):
    model_config = lora_model.get_base_model().config
    model_config._attn_implementation = implementation
    try:
        layout = packing_layout(lora_model, cutoff_len=256)
        unpacked = collate(samples, pad_id=0, device="cpu")
        rows = pack_rows([len(s.input_ids) for s in samples], cutoff_len=256)
        assert len(rows) < len(samples)  # several samples share a row
        packed = collate_packed([[samples[i] for i in row] for row in rows], 0, "cpu", layout, torch.float32)
        assert packed["input_ids"].shape[0] == len(rows)
        assert lm_loss.predicted_tokens(packed) == lm_loss.predicted_tokens(unpacked)
        assert_same(
            loss_and_grads(lora_model, packed, lm_loss.summed_loss),
            loss_and_grads(lora_model, unpacked, lm_loss.summed_loss),
        )
    finally:
        model_config._attn_implementation = "sdpa"


def test_packing_refuses_attention_that_cannot_keep_samples_apart(lora_model):
    model_config = lora_model.get_base_model().config
    model_config._attn_implementation = "flex_attention"
    try:
        with pytest.raises(ValueError, match="flex_attention.*cannot keep packed samples apart"):
            packing_layout(lora_model, cutoff_len=256)
    finally:
        model_config._attn_implementation = "sdpa"


def test_pack_rows_fills_rows_without_overflow():
    rng = random.Random(3)
    lengths = [rng.randint(5, 100) for _ in range(200)]
    rows = pack_rows(lengths, 128)
    assert sorted(i for row in rows for i in row) == list(range(200))
    assert all(sum(lengths[i] for i in row) <= 128 for row in rows)
    assert len(rows) <= 1.1 * sum(lengths) / 128 + 1
    with pytest.raises(ValueError, match="sample 1 has 300 tokens, more than cutoff_len 128"):
        pack_rows([10, 300], 128)


def test_options_train_the_same_adapter_or_run(tiny_base, conversations, tmp_path):
    """Gradient checkpointing changes nothing but memory; fused AdamW is picked on CPU; a packed run trains."""
    plain = train_adapter(conversations, small_adapter(max_steps=3, optimizer="adamw"), str(tiny_base),
                          tmp_path / "plain", log=lambda _: None)
    checkpointed = train_adapter(conversations, small_adapter(max_steps=3, gradient_checkpointing=True,
                                                              optimizer="adamw"), str(tiny_base),
                                 tmp_path / "checkpointed", log=lambda _: None)
    assert plain["optimizer"] == "adamw"
    assert checkpointed["train_loss_final"] == pytest.approx(plain["train_loss_final"], abs=1e-5)
    first, again = (load_file(tmp_path / d / "adapter_model.safetensors") for d in ("plain", "checkpointed"))
    assert all(torch.allclose(first[name], again[name], atol=1e-6) for name in first)
    packed = train_adapter(conversations, small_adapter(max_steps=3, packing=True), str(tiny_base),
                           tmp_path / "packed", log=lambda _: None)
    assert packed["optimizer"] == "adamw_fused" and packed["packed_rows"] < packed["train_samples"]
    assert packed["real_token_ratio"] > plain["real_token_ratio"] - 0.05
    assert packed["eval_loss_after"] < packed["eval_loss_before"]
