"""Chatting with a trained adapter: loading, answering, and the ``baize chat`` loop."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from peft import PeftModel
from transformers import AutoTokenizer, PreTrainedModel
from transformers.generation import BaseStreamer

from ..model.base import device_and_dtype, load_pretrained, quiet_peft_deprecation, resolve_base_model
from ..model.samples import encode
from ..prompts import BAIZE_SYSTEM_PROMPT, STOP_MARKERS, Turn, render_inference_prompt
from .answer_text import AnswerText, cut_at_marker, decode_answer, held_token_ids, streamable_prefix

__all__ = ["AnswerStreamer", "ChatModel", "adapter_base_model", "chat_main", "cut_at_marker", "load_chat_model",
           "trim_history"]

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_FILES = (ADAPTER_CONFIG_FILE, "adapter_model.safetensors")  # what peft's save_pretrained writes
# Mild by default: enough to keep a small model out of loops, little effect on a good one.
DEFAULT_REPETITION_PENALTY = 1.1


def trim_history(history: Sequence[Turn], prompt_tokens: Callable[[list[Turn]], int], budget: int) -> list[Turn]:
    """Drop the oldest complete exchanges until ``prompt_tokens(history) <= budget``.

    An exchange is the human turn(s) and the AI turn(s) answering them. The last human
    message is never dropped, so the result may still exceed the budget.
    """
    turns = list(history)
    while prompt_tokens(turns) > budget:
        first_ai = next((i for i, turn in enumerate(turns) if turn.role == "ai"), None)
        if first_ai is None:
            break
        next_human = next((i for i in range(first_ai, len(turns)) if turns[i].role == "human"), None)
        if next_human is None:
            break
        turns = turns[next_human:]
    return turns


class AnswerStreamer(BaseStreamer):
    """Pass the answer to ``callback`` as it is generated, never showing a marker.

    Text that may still turn into a marker, trailing whitespace (the final answer is
    stripped) and incomplete UTF-8 sequences are held back until they resolve. The
    answer is decoded a few tokens at a time (:class:`~.answer_text.AnswerText`).
    """

    def __init__(self, tokenizer, callback: Callable[[str], None]):
        self.callback = callback
        self.prompt_skipped = False
        self.text = AnswerText(lambda ids: decode_answer(tokenizer, ids), held_tokens=held_token_ids(tokenizer))
        self.emitted = ""

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_skipped:  # generate() first puts the prompt
            self.prompt_skipped = True
            return
        for token in value.reshape(-1).tolist():
            if self.text.stop_at is None:
                self.text.append(token)
        if self.text.stop_at is None:
            self.flush(streamable_prefix(self.text.text.lstrip(), ()))

    def flush(self, answer_so_far: str) -> None:
        """Send what of ``answer_so_far`` was not sent yet."""
        if answer_so_far.startswith(self.emitted) and len(answer_so_far) > len(self.emitted):
            self.callback(answer_so_far[len(self.emitted) :])
            self.emitted = answer_so_far

    def end(self) -> None:
        """Nothing to do: ``reply`` flushes the final answer itself."""


@dataclass
class ChatModel:
    """A base model with its LoRA adapter, ready to answer."""

    model: PeftModel | PreTrainedModel  # a plain model once the LoRA is merged in
    tokenizer: Any
    device: str

    @property
    def max_positions(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

    def prompt_ids(self, history: Sequence[Turn], system: str | None = None) -> list[int]:
        """Token ids of the inference prompt for ``history``, as training tokenizes it.

        ``system`` replaces the Baize system prompt, as a system message does in the chat template.
        """
        return encode(self.tokenizer, render_inference_prompt(history, system or BAIZE_SYSTEM_PROMPT))

    def fit_prompt(self, history: list[Turn], max_new_tokens: int, limit: int,
                   system: str | None = None) -> tuple[list[int], int]:
        """The prompt ids and the new-token budget of an answer to ``history`` within ``limit`` tokens in all.

        The oldest exchanges are dropped so that prompt and answer fit; ``max_new_tokens`` is
        lowered when even the last message alone leaves less room.
        """
        if not history or history[-1].role != "human":
            raise ValueError("the history must end with a human message")
        ids = self.prompt_ids(history, system)
        if len(ids) + max_new_tokens <= limit:
            return ids, max_new_tokens

        def count(turns: list[Turn]) -> int:
            return len(self.prompt_ids(turns, system))

        shortest = count(trim_history(history, count, 0))
        new_tokens = min(max_new_tokens, limit - shortest)
        if new_tokens < 1:
            raise ValueError(f"the message is too long: its prompt takes {shortest} tokens, the limit is {limit}")
        return self.prompt_ids(trim_history(history, count, limit - new_tokens), system), new_tokens

    def reply(
        self,
        history: list[Turn],
        max_new_tokens: int = 512,
        temperature: float = 1.0,
        top_p: float = 0.95,
        history_token_budget: int = 2048,
        repetition_penalty: float = DEFAULT_REPETITION_PENALTY,
        seed: int | None = None,
        stream: Callable[[str], None] | None = None,
    ) -> str:
        """The AI's answer to ``history``, which ends with the human message.

        The oldest exchanges are dropped so that prompt and answer fit both
        ``history_token_budget`` and the model's positions; ``max_new_tokens`` is
        lowered when even the last message alone leaves less room.
        """
        limit = min(history_token_budget, self.max_positions or history_token_budget)
        ids, new_tokens = self.fit_prompt(history, max_new_tokens, limit)

        input_ids = torch.tensor([ids], device=self.device)
        # do_sample is always explicit: a base model's generation_config may turn sampling on; top_k is off, as
        # in batched generation (generate() would otherwise keep only the 50 likeliest tokens).
        sampling = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
            if temperature > 0
            else {"do_sample": False}
        )
        if seed is not None:
            torch.manual_seed(seed)
        streamer = AnswerStreamer(self.tokenizer, stream) if stream else None
        pad_id = self.tokenizer.pad_token_id
        with torch.no_grad():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=new_tokens,
                repetition_penalty=repetition_penalty,
                stop_strings=list(STOP_MARKERS),
                tokenizer=self.tokenizer,
                pad_token_id=pad_id if pad_id is not None else self.tokenizer.eos_token_id,
                streamer=streamer,
                **sampling,
            )
        answer = cut_at_marker(decode_answer(self.tokenizer, output[0, len(ids) :].tolist())).strip()
        if streamer:
            streamer.flush(answer)
        return answer


def adapter_base_model(adapter_dir: Path) -> str:
    """The base model of the adapter in ``adapter_dir`` (a resolved local path or a hub id).

    Raises ``FileNotFoundError`` naming the path and the missing file unless it holds an adapter.
    """
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise FileNotFoundError(f"adapter directory not found: {adapter_dir}")
    for name in ADAPTER_FILES:
        if not (adapter_dir / name).is_file():
            raise FileNotFoundError(f"{adapter_dir} is not an adapter directory: {name} is missing")
    config_file = adapter_dir / ADAPTER_CONFIG_FILE
    base_model = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base_model:
        raise ValueError(f"{config_file} does not name its base model (base_model_name_or_path)")
    return resolve_base_model(base_model)


def load_chat_model(adapter_dir: Path, merge: bool = False) -> ChatModel:
    """Load the base model named in ``adapter_dir``'s adapter config, with the adapter on top.

    ``merge``: the LoRA is merged into the base weights (``merge_and_unload``), so answers
    cost what the base alone costs; the model is then a plain transformers model, with no
    base to switch back to (``disable_adapter``): merge only where nothing needs the base.
    """
    adapter_dir = Path(adapter_dir)
    base_ref = adapter_base_model(adapter_dir)
    device, dtype = device_and_dtype()
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    base = load_pretrained(base_ref, device, dtype)
    with quiet_peft_deprecation():
        model = PeftModel.from_pretrained(base, adapter_dir)
        if merge:
            model = model.merge_and_unload()
    model.eval()
    return ChatModel(model=model, tokenizer=tokenizer, device=device)


def chat_main(
    adapter: Path,
    message: str | None,
    max_new_tokens: int,
    temperature: float,
    seed: int | None,
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY,
    top_p: float = 0.9,
) -> int:
    """``baize chat``: answer ``message``, or chat on stdin until EOF or ``/exit``. Returns the exit code."""
    try:
        chat = load_chat_model(adapter, merge=True)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    options = {
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "repetition_penalty": repetition_penalty,
    }
    if message is not None:
        try:
            print(chat.reply([Turn("human", message)], **options))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0

    history: list[Turn] = []
    while True:
        try:
            line = input("You: ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if line == "/exit":
            return 0
        if not line:
            continue
        print("Baize: ", end="", flush=True)
        try:
            answer = chat.reply(
                [*history, Turn("human", line)], stream=lambda chunk: print(chunk, end="", flush=True), **options
            )
        except ValueError as exc:
            print(f"\nerror: {exc}", file=sys.stderr)
            continue
        print()
        history += [Turn("human", line), Turn("ai", answer)]
