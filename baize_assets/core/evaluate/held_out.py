"""Evaluation of a trained adapter: held-out loss of base versus adapter, and sample answers.

The adapter is loaded exactly as ``baize chat`` loads it, the base is the same model
with the adapter switched off, the held-out conversations are tokenized exactly as in
training, and the answers come from :meth:`ChatModel.reply`, the code behind ``baize chat``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Sequence

from ..chat.chat_model import load_chat_model
from ..config.pipeline import TrainingConfig
from ..model.batching import collate, padding_id
from ..model.lm_loss import evaluate, predicted_tokens
from ..model.samples import fit_conversations
from ..prompts import Turn
from ..storage import write_text_atomic

ANSWER_MAX_NEW_TOKENS = 64


def perplexity(loss: float | None) -> float | None:
    return None if loss is None else math.exp(min(loss, 50.0))  # capped: a diverged model stays printable


def evaluate_adapter(
    adapter_dir: Path,
    eval_conversations: Sequence[Sequence[Turn]],
    training: TrainingConfig,
    log: Callable[[str], None] = print,
) -> dict:
    """Held-out loss and perplexity of the base and of the adapter, and the adapter's answers.

    ``adapter_beats_base`` is true when the adapter's held-out loss is strictly lower;
    it is false, with a ``note``, when there is nothing held out to compare on.
    """
    started = time.perf_counter()
    chat = load_chat_model(Path(adapter_dir))
    tokenizer = chat.tokenizer
    pad_id = padding_id(tokenizer)
    samples, fit = fit_conversations(eval_conversations, tokenizer, training)
    tokens = sum(
        predicted_tokens(collate(samples[i : i + training.micro_batch_size], pad_id, "cpu"))
        for i in range(0, len(samples), training.micro_batch_size)
    )
    adapter_loss = evaluate(chat.model, samples, training.micro_batch_size, pad_id, chat.device)
    with chat.model.disable_adapter():
        base_loss = evaluate(chat.model, samples, training.micro_batch_size, pad_id, chat.device)
    log(f"held-out loss: base {base_loss}, adapter {adapter_loss} on {tokens} tokens of {len(samples)} samples")
    answers = []
    for prompt in training.eval_prompts:
        answer = chat.reply([Turn("human", prompt)], max_new_tokens=ANSWER_MAX_NEW_TOKENS, temperature=0)
        answers.append({"prompt": prompt, "answer": answer})
    comparable = base_loss is not None and adapter_loss is not None
    return {
        "adapter_dir": str(Path(adapter_dir).resolve()),
        "eval_conversations": fit.conversations,
        "eval_samples": len(samples),
        "eval_tokens": tokens,
        "conversations_split": fit.conversations_split,
        "conversations_dropped": fit.conversations_dropped,
        "base_eval_loss": base_loss,
        "adapter_eval_loss": adapter_loss,
        "base_perplexity": perplexity(base_loss),
        "adapter_perplexity": perplexity(adapter_loss),
        "adapter_beats_base": comparable and adapter_loss < base_loss,
        "note": None if comparable else "no held-out tokens to compare base and adapter on",
        "answers": answers,
        "seconds": round(time.perf_counter() - started, 3),
    }


def write_report(report: dict, path: Path) -> None:
    """Write the report as JSON to ``path``, atomically."""
    write_text_atomic(json.dumps(report, indent=2) + "\n", path)
