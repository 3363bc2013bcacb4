"""One tiny trained adapter, and its loaded model, shared by the chat, batched-generation and server tests.

The same adapter is also trained on a tiny base of each tokenizer layout, for the tests whose
outcome depends on the tokenizer (prompt ids, stops, streamed decoding).
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

import pytest

from baize_assets.core.chat.chat_model import ChatModel, load_chat_model
from baize_assets.core.config.pipeline import AdapterConfig, TinyBaseConfig, TrainingConfig
from baize_assets.core.model.tiny_base import build_tiny_base
from baize_assets.core.prompts import Turn, render_conversation, render_inference_prompt
from baize_assets.core.train.trainer import train_adapter

from .tokenizer_support import TOKENIZER_KINDS

# Few positions, so that the cap on new tokens is exercised.
TINY = TinyBaseConfig(
    vocab_size=400,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=320,
)
WORDS = "river mountain cloud apple orange table chair light water fire garden music stone bread".split()


def conversations(count: int = 24) -> list[list[Turn]]:
    rng = random.Random(1)
    return [
        [Turn("human", f"Tell me about the {rng.choice(WORDS)}."), Turn("ai", " ".join(rng.sample(WORDS, 6)) + ".")]
        for _ in range(count)
    ]


@functools.cache
def _trained_adapter(root: Path, tokenizer: str) -> Path:
    """Built once per test process, however many modules import the fixtures (each would build its own)."""
    data = conversations()
    texts = [render_conversation(turns) for turns in data] + [render_inference_prompt([Turn("human", "Hello")])]
    base = root / tokenizer / "base"
    # Short pretraining: answers need not be good, only words (after 40 steps a SentencePiece base says nothing).
    build_tiny_base(texts, TINY.model_copy(update={"pretrain_steps": 100, "tokenizer": tokenizer}), base)
    adapter = AdapterConfig(
        name="served",
        sources=["synthetic"],
        training=TrainingConfig(
            learning_rate=5e-3, max_steps=4, micro_batch_size=4, effective_batch_size=8, warmup_steps=1
        ),
    )
    train_adapter(data, adapter, str(base), root / tokenizer / "baize_served", log=lambda _: None)
    return root / tokenizer / "baize_served"


@functools.cache
def _loaded(adapter_dir: Path) -> ChatModel:
    return load_chat_model(adapter_dir)


@pytest.fixture(scope="session")
def served_adapter_dir(tmp_path_factory) -> Path:
    return _trained_adapter(tmp_path_factory.getbasetemp() / "served_adapter", TinyBaseConfig().tokenizer)


@pytest.fixture(scope="session")
def served_chat(served_adapter_dir) -> ChatModel:
    return _loaded(served_adapter_dir)


@pytest.fixture(scope="session", params=TOKENIZER_KINDS)
def served_on_each_tokenizer(request, tmp_path_factory) -> tuple[Path, ChatModel]:
    """The served adapter trained on a tiny base of each tokenizer layout (the default one is served_chat's)."""
    adapter_dir = _trained_adapter(tmp_path_factory.getbasetemp() / "served_adapter", request.param)
    return adapter_dir, _loaded(adapter_dir)


def a_stop_string_inside(text: str) -> str:
    """Two ASCII letters from inside ``text``, past its first character: a stop string that cuts it."""
    pairs = (text[i : i + 2] for i in range(1, len(text) - 1))
    return next(pair for pair in pairs if pair.isascii() and pair.isalpha())
