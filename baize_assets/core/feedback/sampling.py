"""Sampling k answers per feedback context from a trained adapter, batched, reproducibly.

Each answer has its own seed, derived from the seed id and the answer's index, so a
shard's samples are the same on a rerun whatever else runs in the batch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from ..chat.batched import BatchedGenerator, SamplingParams
from ..chat.chat_model import load_chat_model
from ..config.feedback import SamplingConfig
from .self_distill import SAMPLE_SCHEMA, FeedbackContext


def answer_seed(seed_id: str, index: int, salt: int) -> int:
    digest = hashlib.sha256(f"{salt}\0{seed_id}\0{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def sample_answers(
    adapter_dir: Path,
    contexts: Sequence[FeedbackContext],
    sampling: SamplingConfig,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """``sampling.answers_per_seed`` answers to each context, one row each (see ``SAMPLE_SCHEMA``)."""
    rows = []
    if not contexts:
        return pd.DataFrame(rows, columns=SAMPLE_SCHEMA.names)
    chat = load_chat_model(Path(adapter_dir), merge=True)  # only v1 answers here: no base needed
    with BatchedGenerator(chat, max_batch=sampling.batch_size, batch_wait_ms=0) as generator:
        pending = []
        for context in contexts:
            for index in range(sampling.answers_per_seed):
                params = SamplingParams(
                    max_new_tokens=sampling.max_new_tokens,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    seed=answer_seed(context.seed_id, index, sampling.seed),
                )
                pending.append((context, index, generator.submit(context.context, params)))
        for done, (context, index, future) in enumerate(pending, start=1):
            completion = future.result()
            rows.append(
                {
                    "seed_id": context.seed_id,
                    "source": context.source,
                    "shard": context.shard,
                    "sample_index": index,
                    "context": [turn.as_dict() for turn in context.context],
                    "answer": completion.text,
                    "finish_reason": completion.finish_reason,
                }
            )
            if done % max(1, len(pending) // 10) == 0:
                log(f"sampled {done}/{len(pending)} answers")
        log(f"{generator.stats.steps} forward passes, at most {generator.stats.largest_batch} rows at once")
    return pd.DataFrame(rows)
