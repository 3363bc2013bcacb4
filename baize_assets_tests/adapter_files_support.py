"""A tiny trained adapter and its training-set file, for the model card and export tests."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

from baize_assets.core.config.pipeline import AdapterConfig, TinyBaseConfig, TrainingConfig
from baize_assets.core.model.tiny_base import build_tiny_base
from baize_assets.core.prompts import Turn, render_conversation
from baize_assets.core.train.trainer import train_from_training_set

# Briefly pretrained: the card and the export need real files, not a good model.
TINY = TinyBaseConfig(
    vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, pretrain_steps=10
)
WORDS = "river mountain cloud apple orange table chair light water fire garden music stone bread".split()
SOURCES = ("quora", "alpaca")


def conversations(count: int = 24) -> list[list[Turn]]:
    rng = random.Random(1)
    return [
        [Turn("human", f"Tell me about the {rng.choice(WORDS)}."), Turn("ai", " ".join(rng.sample(WORDS, 6)) + ".")]
        for _ in range(count)
    ]


def training_set_frame(data: list[list[Turn]]) -> pd.DataFrame:
    """A training set of ``data``: two sources over two shards each, every fifth conversation held out."""
    return pd.DataFrame(
        {
            "seed_id": [f"id{i:03d}" for i in range(len(data))],
            "source": [SOURCES[i % 2] for i in range(len(data))],
            "shard": [(i // 2) % 2 for i in range(len(data))],
            "split": ["eval" if i % 5 == 0 else "train" for i in range(len(data))],
            "turns": [[t.as_dict() for t in turns] for turns in data],
            "text": [render_conversation(turns) for turns in data],
        }
    )


def train_tiny_adapter(root: Path) -> tuple[Path, Path]:
    """Build a tiny base, write a training set and train an adapter on it; returns (adapter dir, training set)."""
    data = conversations()
    build_tiny_base([render_conversation(turns) for turns in data], TINY, root / "base")
    training_set = root / "training_set.parquet"
    training_set_frame(data).to_parquet(training_set)
    adapter = AdapterConfig(
        name="tiny_chat",
        sources=list(SOURCES),
        training=TrainingConfig(
            learning_rate=5e-3, max_steps=4, micro_batch_size=4, effective_batch_size=8, warmup_steps=1, eval_steps=2
        ),
    )
    train_from_training_set(adapter, str(root / "base"), training_set, root / "adapter", None, log=lambda _: None)
    return root / "adapter", training_set
