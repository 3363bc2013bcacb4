"""Loading a trained adapter and answering with it, on a tiny CPU base model."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from baize_assets.core.chat.chat_model import (
    chat_main,
    cut_at_marker,
    load_chat_model,
    trim_history,
)
from baize_assets.core.prompts import (
    AI,
    HUMAN,
    STOP_MARKERS,
    Turn,
)

from .serving_support import TINY, served_adapter_dir, served_chat  # noqa: F401


@pytest.fixture(scope="module")
def adapter_dir(served_adapter_dir) -> Path:
    return served_adapter_dir


@pytest.fixture(scope="module")
def chat(served_chat):
    return served_chat


def words_in(turns: list[Turn]) -> int:
    return sum(len(turn.text.split()) for turn in turns)


def test_trim_history_drops_oldest_exchanges_first():
    history = [
        Turn("human", "one two"),
        Turn("ai", "three four"),
        Turn("human", "five"),
        Turn("ai", "six seven"),
        Turn("human", "eight nine"),
    ]
    assert trim_history(history, words_in, budget=100) == history
    assert trim_history(history, words_in, budget=5) == history[2:]
    assert trim_history(history, words_in, budget=1) == history[4:]  # the last message always stays
    assert trim_history(history[4:], words_in, budget=0) == history[4:]


def test_cut_at_marker_keeps_the_text_before_the_first_marker():
    assert cut_at_marker(f"Sure.\n{HUMAN} more{AI}") == "Sure.\n"
    assert cut_at_marker("no marker") == "no marker"


def test_reply_is_a_clean_answer_within_the_budget(chat, monkeypatch):
    calls = []
    generate = chat.model.generate

    def spy(**kwargs):
        calls.append((kwargs["input_ids"].shape[1], kwargs["max_new_tokens"]))
        return generate(**kwargs)

    monkeypatch.setattr(chat.model, "generate", spy)
    answer = chat.reply([Turn("human", "Tell me about the river.")], max_new_tokens=12, temperature=0)
    assert isinstance(answer, str) and not any(marker in answer for marker in STOP_MARKERS)

    history = [Turn("human" if i % 2 == 0 else "ai", f"the stone and the bread {i}") for i in range(12)]
    history.append(Turn("human", "And the water?"))
    last_only = len(chat.prompt_ids(history[-1:]))
    last_exchange = len(chat.prompt_ids(history[-3:]))  # room for the newest exchange, not for two
    chat.reply(history, max_new_tokens=8, temperature=0, history_token_budget=last_exchange + 8)
    prompt_length, new_tokens = calls[-1]
    assert new_tokens == 8 and last_only < prompt_length == last_exchange

    chat.reply(history[-1:], max_new_tokens=5000, temperature=0)
    prompt_length, new_tokens = calls[-1]
    assert prompt_length + new_tokens == TINY.max_position_embeddings

    with pytest.raises(ValueError, match="too long"):
        chat.reply(history, max_new_tokens=8, history_token_budget=last_only)


def test_streamed_chunks_make_up_the_answer(chat):
    chunks = []
    answer = chat.reply([Turn("human", "Hello")], max_new_tokens=24, temperature=1.0, seed=3, stream=chunks.append)
    assert "".join(chunks) == answer
    assert answer == chat.reply([Turn("human", "Hello")], max_new_tokens=24, temperature=1.0, seed=3)


def test_chat_main_answers_one_message(adapter_dir, capsys):
    assert chat_main(adapter_dir, "Hello", max_new_tokens=8, temperature=0, seed=None) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n") and not any(marker in out for marker in STOP_MARKERS)


def test_chat_main_interactive_until_exit(adapter_dir, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello\n\nTell me about the fire.\n/exit\nnever read\n"))
    assert chat_main(adapter_dir, None, max_new_tokens=6, temperature=0, seed=None) == 0
    assert capsys.readouterr().out.count("Baize: ") == 2


def test_load_chat_model_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_chat_model(tmp_path)
    assert chat_main(tmp_path / "nowhere", "Hi", max_new_tokens=4, temperature=0, seed=None) == 1


def test_streamer_holds_back_what_may_become_a_marker(chat):
    from baize_assets.core.chat.chat_model import AnswerStreamer

    chunks = []
    streamer = AnswerStreamer(chat.tokenizer, chunks.append)
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt, which generate() puts first
    for token_id in chat.tokenizer(f" The river is cold.\n{HUMAN} more", add_special_tokens=False)["input_ids"]:
        streamer.put(torch.tensor([token_id]))
        assert "[" not in "".join(chunks)
    streamer.flush("The river is cold.")
    assert "".join(chunks) == "The river is cold." and len(chunks) > 1


def test_cli_passes_its_sampling_settings(adapter_dir, capsys, monkeypatch):
    from baize_assets.cli import main

    seen = []
    original = load_chat_model(adapter_dir).__class__.reply

    def spy(self, history, **options):
        seen.append({key: options[key] for key in ("repetition_penalty", "temperature", "top_p")})
        return original(self, history, **options)

    monkeypatch.setattr("baize_assets.core.chat.chat_model.ChatModel.reply", spy)
    args = ["chat", "--adapter", str(adapter_dir), "--message", "Hello", "--max-new-tokens", "4"]
    assert main([*args, "--repetition-penalty", "1.3", "--temperature", "0.2", "--top-p", "0.5"]) == 0
    assert seen == [{"repetition_penalty": 1.3, "temperature": 0.2, "top_p": 0.5}]
    assert main(args) == 0 and seen[-1] == {"repetition_penalty": 1.1, "temperature": 0.7, "top_p": 0.9}
    assert main([*args, "--repetition-penalty", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err
    assert main([*args, "--top-p", "0"]) == 2
    assert "--top-p must be in (0, 1]" in capsys.readouterr().err


def test_a_folder_with_an_adapter_config_but_no_weights_is_named_with_the_missing_file(tmp_path):
    from baize_assets.core.chat.chat_model import adapter_base_model

    (tmp_path / "adapter_config.json").write_text('{"base_model_name_or_path": "gpt2"}')
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} is not an adapter directory: adapter_model.safetensors"):
        adapter_base_model(tmp_path)
