"""The adapter's answers to the judge's questions, batched: the one part of the judge that needs torch."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from ..chat.batched import BatchedGenerator, SamplingParams
from ..chat.chat_model import load_chat_model
from ..config.feedback import JudgeConfig
from ..prompts import Turn


def adapter_answers(
    adapter_dir: Path, questions: Sequence[str], judge: JudgeConfig, log: Callable[[str], None] = print
) -> list[str]:
    """The adapter's greedy answer to each question, as ``baize chat`` would give it, batched."""
    chat = load_chat_model(Path(adapter_dir), merge=True)  # the adapter alone answers: no base needed
    params = SamplingParams(max_new_tokens=judge.max_new_tokens, temperature=0)
    with BatchedGenerator(chat, max_batch=judge.batch_size, batch_wait_ms=0) as generator:
        completions = generator.generate([[Turn("human", question)] for question in questions], params)
        log(f"answered {len(questions)} judge questions with {adapter_dir.name} in {generator.stats.steps} "
            "forward passes")
    return [completion.text for completion in completions]
