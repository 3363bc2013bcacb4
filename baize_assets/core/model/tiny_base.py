"""The offline tiny base model: a tokenizer trained here and a small pretrained Llama.

Nothing is downloaded: the tokenizer is trained on the given texts (byte-level BPE by
default, or a Llama-style SentencePiece one in either of its layouts, see
:mod:`.sentencepiece_tokenizer`, so code that must hold for every tokenizer is tested on
each), the model is built from :class:`TinyBaseConfig` and briefly pretrained (all
parameters) on the same texts, seeded, so the same texts and config always give the same files. A real language model,
if a very small one, makes adapter evaluation (base versus adapter) meaningful. The
result loads with ``AutoTokenizer`` / ``AutoModelForCausalLM``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ..config.pipeline import TinyBaseConfig
from ..prompts import STOP_MARKERS
from ..storage import staged_output_dir
from .base import no_progress_bars
from .batching import Sample, collate, length_grouped_batches, padding_id
from .sentencepiece_tokenizer import train_sentencepiece_tokenizer

BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"
SPECIAL_TOKENS = [BOS, EOS, UNK, PAD]


def directory_fingerprint(directory: Path) -> str:
    """SHA-256 over the names and contents of every file in ``directory``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of at most ``vocab_size`` tokens, markers included.

    The chat markers are normal added tokens: each is a single token, yet decoding
    keeps them as text (special tokens would be dropped by ``skip_special_tokens``).
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(STOP_MARKERS),  # the markers are added after training
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.add_tokens([AddedToken(marker, special=False, normalized=False) for marker in STOP_MARKERS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD
    )


def train_base_tokenizer(texts: list[str], config: TinyBaseConfig) -> PreTrainedTokenizerFast:
    """The tokenizer ``config.tokenizer`` names, trained on ``texts``."""
    if config.tokenizer == "byte_level_bpe":
        return train_tokenizer(texts, config.vocab_size)
    layout = "legacy" if config.tokenizer == "sentencepiece_legacy" else "first"
    return train_sentencepiece_tokenizer(texts, config.vocab_size, layout)


def pretrain(model: LlamaForCausalLM, tokenizer, texts: list[str], config: TinyBaseConfig) -> list[float]:
    """Next-token training of every parameter on ``texts`` (BOS text EOS); returns the step losses."""
    samples = []
    for text in texts:
        ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        ids = ids[: config.max_position_embeddings]
        samples.append(Sample(ids, ids))
    batches = length_grouped_batches([len(s.input_ids) for s in samples], config.pretrain_batch_size, config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.pretrain_learning_rate)
    model.train()
    losses = []
    for _ in range(config.pretrain_steps):
        batch = collate([samples[i] for i in next(batches)], padding_id(tokenizer), "cpu")
        loss = model(**batch).loss  # mean over the labeled (non-pad) tokens
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def build_tiny_base(texts: Iterable[str], config: TinyBaseConfig, out_dir: Path) -> dict:
    """Train the tokenizer on ``texts``, build the seeded Llama and save both into ``out_dir``.

    Returns a summary: parameter count, vocabulary size, shape and a fingerprint of the
    saved files.
    """
    texts = [text for text in texts if text]
    if not texts:
        raise ValueError("build_tiny_base needs at least one non-empty text to train the tokenizer on")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"hidden_size {config.hidden_size} is not divisible by "
            f"num_attention_heads {config.num_attention_heads}"
        )
    tokenizer = train_base_tokenizer(texts, config)
    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_attention_heads,
        max_position_embeddings=config.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # A private RNG state: the weights depend on config.seed only, and the caller's
    # global RNG is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(model_config)
        losses = pretrain(model, tokenizer, texts, config)
    with staged_output_dir(out_dir) as staging, no_progress_bars():
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        fingerprint = directory_fingerprint(staging)
    return {
        "path": str(out_dir),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "num_hidden_layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "max_position_embeddings": config.max_position_embeddings,
        "tokenizer_training_texts": len(texts),
        "pretrain_steps": config.pretrain_steps,
        "pretrain_loss_first": losses[0] if losses else None,
        "pretrain_loss_final": losses[-1] if losses else None,
        "fingerprint": fingerprint,
    }
