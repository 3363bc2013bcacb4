"""``baize export``: the merged model loads with plain transformers, answers, and carries the chat template."""

from __future__ import annotations

import pytest
import torch

from baize_assets.cli import main
from baize_assets.core.chat.chat_model import load_chat_model
from baize_assets.core.model.chat_template import serving_chat_template
from baize_assets.core.prompts import Turn
from baize_assets.core.train.export import ExportError, export_adapter

from .adapter_files_support import train_tiny_adapter


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    return train_tiny_adapter(tmp_path_factory.mktemp("export"))[0]


@pytest.fixture(scope="module")
def merged(adapter_dir, tmp_path_factory):
    return export_adapter(adapter_dir, tmp_path_factory.mktemp("exported") / "merged", log=lambda _: None)


def test_merged_model_answers_like_the_adapter(adapter_dir, merged):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged)
    assert tokenizer.chat_template == serving_chat_template(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert not any("lora" in name for name, _ in model.named_parameters())
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Tell me about the river."}], add_generation_prompt=True, return_tensors="pt"
    )
    chat = load_chat_model(adapter_dir)
    assert inputs["input_ids"][0].tolist() == chat.prompt_ids([Turn("human", "Tell me about the river.")])
    with torch.no_grad():
        merged_logits = model(**inputs).logits
        adapter_logits = chat.model(**inputs).logits
    assert torch.allclose(merged_logits, adapter_logits, atol=1e-4)  # the merge is exact
    output = model.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert output.shape[1] > inputs["input_ids"].shape[1]


def test_training_saves_the_chat_template_with_the_adapter(adapter_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    assert tokenizer.chat_template == serving_chat_template(tokenizer)


def test_export_refuses_what_is_not_an_adapter(adapter_dir, tmp_path, capsys):
    (tmp_path / "not_an_adapter").mkdir()
    missing = r"not_an_adapter is not an adapter directory: adapter_config.json is missing"
    with pytest.raises(ExportError, match=missing):
        export_adapter(tmp_path / "not_an_adapter", tmp_path / "out")
    assert main(["export", "--adapter", str(tmp_path / "nowhere"), "--to", str(tmp_path / "out")]) == 1
    assert f"adapter directory not found: {tmp_path / 'nowhere'}" in capsys.readouterr().err

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    with pytest.raises(ExportError, match="non-empty folder"):
        export_adapter(adapter_dir, tmp_path / "notes")
    with pytest.raises(ExportError, match="inside the adapter directory"):
        export_adapter(adapter_dir, adapter_dir / "merged")
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep me" and not (tmp_path / "out").exists()


def test_gguf_names_the_llama_cpp_command(adapter_dir, tmp_path, capsys):
    args = ["export", "--adapter", str(adapter_dir), "--to", str(tmp_path / "out"), "--gguf"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "convert_hf_to_gguf.py" in err and str(tmp_path / "out") in err
    assert not (tmp_path / "out").exists()
