"""Loading a base like a real deployment: on the device, in the training dtype, quietly, and not too large for it."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from baize_assets.core.chat.chat_model import load_chat_model
from baize_assets.core.config.pipeline import AdapterConfig, TrainingConfig
from baize_assets.core.model.base import load_base_model, parameter_count, refuse_large_base_on_cpu
from baize_assets.core.model.tiny_base import build_tiny_base
from baize_assets.core.prompts import render_conversation
from baize_assets.core.train.export import export_adapter
from baize_assets.core.train.trainer import train_adapter

from .test_training import TINY, synthetic_conversations

# Llama 2 7B's shape (its config.json): 6,738,415,616 parameters.
LLAMA2_7B = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                        num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("loading") / "tiny"
    texts = [render_conversation(c) for c in synthetic_conversations(16)]
    build_tiny_base(texts, TINY.model_copy(update={"pretrain_steps": 0}), out)
    return out


def test_a_7b_base_is_refused_on_the_cpu_before_any_weight_loads(tmp_path):
    LLAMA2_7B.save_pretrained(tmp_path)  # the config alone: counting needs no weights
    assert parameter_count(str(tmp_path)) == 6_738_415_616
    with pytest.raises(ValueError, match=r"6\.74B parameters, over training\.max_cpu_base_parameters \(1\.00B\).*"
                                         r"train_large_base_on_cpu: true"):
        refuse_large_base_on_cpu(str(tmp_path), TrainingConfig(), "cpu")
    refuse_large_base_on_cpu(str(tmp_path), TrainingConfig(), "cuda")  # a GPU is what it needs
    refuse_large_base_on_cpu(str(tmp_path), TrainingConfig(train_large_base_on_cpu=True), "cpu")


def test_the_limit_is_a_setting_and_forcing_trains_anyway(base, tmp_path):
    count = parameter_count(str(base))
    loaded = load_base_model(str(base), TrainingConfig(), "cpu", torch.float32)
    assert count == sum(p.numel() for p in loaded.parameters())
    small_limit = TrainingConfig(max_cpu_base_parameters=count - 1)
    with pytest.raises(ValueError, match="over training.max_cpu_base_parameters"):
        load_base_model(str(base), small_limit, "cpu", torch.float32)
    conversations = synthetic_conversations(8)
    refused = AdapterConfig(name="tiny", sources=["synthetic"],
                            training=small_limit.model_copy(update={"max_steps": 1, "precision": "fp32"}))
    with pytest.raises(ValueError, match="over training.max_cpu_base_parameters"):
        train_adapter(conversations, refused, str(base), tmp_path / "refused", log=lambda _: None)
    assert not (tmp_path / "refused").exists()
    forced_training = refused.training.model_copy(update={"train_large_base_on_cpu": True})
    forced = refused.model_copy(update={"training": forced_training})
    assert train_adapter(conversations, forced, str(base), tmp_path / "forced", log=lambda _: None)["steps"] == 1


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_weights_load_onto_the_device_in_the_training_dtype(base, precision, dtype, monkeypatch):
    calls = []
    load = AutoModelForCausalLM.from_pretrained

    def recorded(*args, **kwargs):
        calls.append(kwargs)
        return load(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", recorded)
    model = load_base_model(str(base), TrainingConfig(precision=precision), "cpu", dtype)
    # Placed and cast by from_pretrained as each weight loads, not moved or cast after.
    assert [(c["device_map"], c["dtype"]) for c in calls] == [({"": "cpu"}, dtype)]
    assert {p.dtype for p in model.parameters()} == {dtype} and {p.device.type for p in model.parameters()} == {"cpu"}


def test_training_chat_and_export_print_no_progress_bars(base, tmp_path, capfd):
    adapter = AdapterConfig(name="quiet", sources=["synthetic"], training=TrainingConfig(max_steps=1, precision="fp32"))
    train_adapter(synthetic_conversations(8), adapter, str(base), tmp_path / "quiet", log=lambda _: None)
    load_chat_model(tmp_path / "quiet")
    export_adapter(tmp_path / "quiet", tmp_path / "merged", log=lambda _: None)
    printed = capfd.readouterr()
    for bar in ("Loading weights", "Writing model shards", "it/s]", "%|"):
        assert bar not in printed.err and bar not in printed.out


def test_export_merges_in_fp32_and_saves_in_the_base_checkpoint_dtype(base, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    bf16_base = tmp_path / "bf16_base"  # as most released bases are saved
    AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16).save_pretrained(bf16_base)
    AutoTokenizer.from_pretrained(base).save_pretrained(bf16_base)
    training = TrainingConfig(max_steps=1, precision="fp32")
    adapter = AdapterConfig(name="merged", sources=["synthetic"], training=training)
    train_adapter(synthetic_conversations(8), adapter, str(bf16_base), tmp_path / "adapter", log=lambda _: None)
    export_adapter(tmp_path / "adapter", tmp_path / "merged", log=lambda _: None)
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["dtype"] == "bfloat16"
    assert {t.dtype for t in load_file(tmp_path / "merged" / "model.safetensors").values()} == {torch.bfloat16}


def test_built_in_bases_are_named_and_an_unknown_one_is_refused():
    from pydantic import ValidationError

    from baize_assets.core.model.base import resolve_base_model

    assert AdapterConfig(name="a", sources=["s"]).builtin_base == "tiny_llama"
    smollm2 = AdapterConfig(name="a", sources=["s"], base_model="builtin:smollm2-135m-instruct")
    assert smollm2.builtin_base == "smollm2_135m_instruct"
    assert AdapterConfig(name="a", sources=["s"], base_model="meta-llama/Llama-2-7b-hf").builtin_base is None
    with pytest.raises(ValidationError, match="'builtin:llama-7b' is no built-in base; the built-in ones are "
                                              "builtin:tiny-llama, builtin:smollm2-135m-instruct"):
        AdapterConfig(name="a", sources=["s"], base_model="builtin:llama-7b")
    with pytest.raises(ValueError, match="names a base the pipeline builds"):
        resolve_base_model("builtin:smollm2-135m-instruct")
