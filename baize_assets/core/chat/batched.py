"""Batched generation with a chat adapter: many answers per forward pass, on one generation thread.

Requests are submitted from any thread and come back as futures. When idle, the
generation thread waits up to ``batch_wait_ms`` after the first request for others to
join; while rows are running, requests already queued join the running batch at the next
step (continuous batching) up to ``max_batch`` rows, so nobody waits for a whole batch to
end. Each step is one forward pass over every row (:mod:`decode` holds the rows, their
key/value cache and the prompt prefix they share). Each row keeps its own sampling
settings and seed, its own stop strings (the Baize markers plus the request's) and its
own token limit, and leaves the batch when done. Its text is decoded a few tokens at a
time (:class:`~.answer_text.AnswerText`), never the whole answer again.

The hand-written decode loop, rather than ``generate()``, is what allows per-row
settings and seeds (a seeded row gives the same answer whatever it runs with), rows
leaving early and rows joining late.
"""

from __future__ import annotations

import inspect
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..model.batching import padding_id
from ..model.lm_loss import causal_lm_of
from ..prompts import Turn
from .answer_text import AnswerText, cut_at_stop, decode_answer, held_token_ids, streamable_prefix
from .chat_model import ChatModel
from .decode import DecodeBatch, SamplingParams, check_full_attention

__all__ = ["BatchStats", "BatchedGenerator", "Completion", "PendingAnswer", "SamplingParams", "cut_at_stop",
           "streamable_prefix"]

DEFAULT_HISTORY_TOKEN_BUDGET = 2048


@dataclass(frozen=True)
class Completion:
    """One answer: ``finish_reason`` is ``stop`` (a stop string or EOS), ``length``, or ``abandoned``."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class BatchStats:
    """What the generation thread has done so far."""

    batches: int = 0  # groups of requests started together (each with one prompt pass)
    rows: int = 0  # requests started
    largest_batch: int = 0  # the most rows in one forward pass
    steps: int = 0  # forward passes
    abandoned: int = 0  # requests dropped while running because their caller gave up
    reused_prompt_tokens: int = 0  # prompt tokens taken from a prefix shared with earlier prompts, not computed


class PendingAnswer(Future):
    """A future :class:`Completion` that its caller can give up on (a client went away)."""

    abandoned = False

    def abandon(self) -> None:
        """Drop the request: before its batch starts, or at the next step of the batch running it."""
        self.abandoned = True
        self.cancel()


@dataclass
class _Request:
    prompt_ids: list[int]
    max_new_tokens: int  # params.max_new_tokens, lowered to what fits the model's positions
    params: SamplingParams
    on_text: Callable[[str], None] | None
    text: AnswerText
    future: PendingAnswer = field(default_factory=PendingAnswer)
    emitted: str = ""

    def emit(self, shown: str) -> None:
        if self.on_text and shown.startswith(self.emitted) and len(shown) > len(self.emitted):
            self.on_text(shown[len(self.emitted) :])
            self.emitted = shown


class BatchedGenerator:
    """Answers chat histories with a :class:`ChatModel`, batching whatever is submitted together.

    Use as a context manager (or call :meth:`close`). ``on_text`` callbacks and the
    futures' results are delivered on the generation thread.
    """

    def __init__(
        self,
        chat: ChatModel,
        max_batch: int = 16,
        batch_wait_ms: float = 5.0,
        history_token_budget: int = DEFAULT_HISTORY_TOKEN_BUDGET,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must not be negative, got {batch_wait_ms}")
        self.chat = chat
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_ms / 1000
        self.history_token_budget = history_token_budget
        self.stats = BatchStats()
        tokenizer = chat.tokenizer
        self._eos_id = tokenizer.eos_token_id
        self._held_tokens = held_token_ids(tokenizer)
        # Fast tokenizers must not be used by two threads at once: submit() encodes on the
        # caller's thread while the generation thread decodes. Reentrant: an ``on_text``
        # callback (run under it) may submit.
        self._tokenizer_lock = threading.RLock()
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._closed = False
        model = causal_lm_of(chat.model)
        config = model.config.get_text_config()
        check_full_attention(config, self._limit)
        # transformers 5 names the key/value cache argument ``cache``, 4.x ``past_key_values``.
        forward = inspect.signature(model.forward).parameters
        self._step_arguments = {"use_cache": True}
        if "logits_to_keep" in forward:  # only the last position's logits are needed
            self._step_arguments["logits_to_keep"] = 1
        self._cache_argument = "cache" if "cache" in forward else "past_key_values"
        vocab = chat.model.get_output_embeddings().weight.shape[0]
        self._batch = DecodeBatch(self._forward, config.num_hidden_layers, max_batch, vocab, padding_id(tokenizer),
                                  chat.device)
        self._thread = threading.Thread(target=self._run, name="batched-generation", daemon=True)
        self._thread.start()

    def __enter__(self) -> "BatchedGenerator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the generation thread once the running rows finish; requests still queued fail."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()

    def submit(
        self,
        history: Sequence[Turn],
        params: SamplingParams,
        on_text: Callable[[str], None] | None = None,
        system: str | None = None,
    ) -> PendingAnswer:
        """Queue an answer to ``history`` (ending with the human message); a future of its :class:`Completion`.

        ``system`` replaces the Baize system prompt (a client's system message).

        The oldest exchanges are dropped so that prompt and answer fit the history budget
        and the model's positions. Raises ``ValueError`` here, not in the future, when the
        history is unusable or its last message alone leaves no room to answer.
        """
        request = self._prepare(history, params, on_text, system)
        self._queue.put(request)
        return request.future

    def generate(self, histories: Sequence[Sequence[Turn]], params: SamplingParams) -> list[Completion]:
        """Answer every history (batched as ``max_batch`` allows) and wait for all of them."""
        requests = [self._prepare(history, params, None) for history in histories]
        for request in requests:  # queued together, after tokenizing, so they batch fully
            self._queue.put(request)
        return [request.future.result() for request in requests]

    def _prepare(
        self,
        history: Sequence[Turn],
        params: SamplingParams,
        on_text: Callable[[str], None] | None,
        system: str | None = None,
    ):
        if self._closed:
            raise RuntimeError("the generator is closed")
        with self._tokenizer_lock:
            ids, new_tokens = self.chat.fit_prompt(history, params.max_new_tokens, self._limit, system)
            text = AnswerText(self._decode, params.stop, self._held_tokens)
        return _Request(ids, new_tokens, params, on_text, text)

    @property
    def _limit(self) -> int:
        """The most tokens a prompt and its answer may take together."""
        return min(self.history_token_budget, self.chat.max_positions or self.history_token_budget)

    def _decode(self, ids: list[int]) -> str:
        return decode_answer(self.chat.tokenizer, ids)

    # The generation thread.

    def _run(self) -> None:
        batch = self._batch
        stopping = False
        while len(batch) or not stopping:
            admitted, stopping = self._admit(len(batch), wait=not len(batch), stopping=stopping)
            try:
                if admitted:
                    self.stats.batches += 1
                    self.stats.rows += len(admitted)
                    self._settle(len(batch), batch.join(admitted))
                    self.stats.reused_prompt_tokens = batch.reused_tokens
                if len(batch):
                    self._settle(0, batch.step())
            except Exception as exc:  # a failed step fails its requests, not the thread
                for request in [*batch.requests, *admitted]:
                    if not request.future.done():
                        request.future.set_exception(exc)
                batch.clear()
        while True:  # closed: fail what is still waiting
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            if request is not None:
                request.future.set_exception(RuntimeError("the generator was closed"))

    def _admit(self, running: int, wait: bool, stopping: bool) -> tuple[list[_Request], bool]:
        """Requests to start now, and whether the generator is closing.

        Idle (``wait``): block for one request, then take what arrives within the wait.
        Busy: take only what is already queued, so the running rows are not held up; and
        while more are queued than a quarter of the batch, wait until that many slots are
        free, so that their prompts are computed together rather than a few per pass.
        """
        admitted: list[_Request] = []
        if stopping:
            return admitted, True
        if not wait and self.max_batch - running < min(self._queue.qsize(), max(1, self.max_batch // 4)):
            return admitted, False
        deadline = None
        while running + len(admitted) < self.max_batch:
            try:
                if wait and deadline is None:
                    request = self._queue.get()
                    deadline = time.monotonic() + self.batch_wait_s
                elif wait:
                    request = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                else:
                    request = self._queue.get_nowait()
            except queue.Empty:
                break
            if request is None:
                stopping = True
                break
            if request.future.set_running_or_notify_cancel():
                admitted.append(request)
        return admitted, stopping

    def _forward(self, inputs: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache) -> torch.Tensor:
        """One forward pass (of :class:`DecodeBatch`): the last position's logits of each row."""
        self.stats.steps += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(inputs))
        with torch.no_grad():
            output = self.chat.model(input_ids=inputs, attention_mask=mask, position_ids=positions,
                                     **self._step_arguments, **{self._cache_argument: cache})
        return output.logits[:, -1, :].float()

    def _settle(self, first: int, tokens: torch.Tensor) -> None:
        """Give each row from ``first`` on its token, finish the rows that are done and drop them from the batch."""
        requests = self._batch.requests[first : first + len(tokens)]
        finished = []
        with self._tokenizer_lock:
            for index, (request, token) in enumerate(zip(requests, tokens.tolist()), start=first):
                if self._advance(request, token):
                    finished.append(index)
        self._batch.drop(finished)

    def _advance(self, request: _Request, token: int) -> bool:
        """Append ``token`` to the request's answer; whether the request is finished (its future then set)."""
        text = request.text
        if request.future.abandoned:
            self.stats.abandoned += 1
            request.future.set_result(Completion(request.emitted, "abandoned", len(request.prompt_ids),
                                                 len(text.ids)))
            return True
        hit_eos = token == self._eos_id
        stopped = not hit_eos and text.append(token)
        if stopped or hit_eos or len(text.ids) >= request.max_new_tokens:
            final = text.answer()
            request.emit(final)
            request.future.set_result(
                Completion(
                    text=final,
                    finish_reason="stop" if stopped or hit_eos else "length",
                    prompt_tokens=len(request.prompt_ids),
                    completion_tokens=len(text.ids) + int(hit_eos),
                )
            )
            return True
        if request.on_text:
            request.emit(streamable_prefix(text.text.lstrip(), request.params.stop))
        return False
