"""The tokenizer layouts every tokenizer-dependent test runs on, each trained here on the test's texts."""

from __future__ import annotations

from typing import get_args

from baize_assets.core.config.pipeline import TinyBaseConfig
from baize_assets.core.model.tiny_base import train_base_tokenizer

# byte-level BPE (markers as single tokens), SentencePiece with Metaspace "first", SentencePiece legacy.
TOKENIZER_KINDS = get_args(TinyBaseConfig.model_fields["tokenizer"].annotation)


def trained_tokenizer(kind: str, texts: list[str], vocab_size: int = 400):
    """A tokenizer of ``kind`` trained on ``texts``, as the tiny base trains it."""
    return train_base_tokenizer(texts, TinyBaseConfig(vocab_size=vocab_size, tokenizer=kind))
