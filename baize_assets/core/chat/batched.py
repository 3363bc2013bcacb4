"""Batched generation with a chat adapter: many answers per forward pass, on one generation thread.

Requests are submitted from any thread and come back as futures. When idle, the
generation thread waits up to ``batch_wait_ms`` after the first request for others to
join; while rows are running, requests already queued join the running batch at the next
step (continuous batching) up to ``max_batch`` rows, so nobody waits for a whole batch to
end. Each step is one forward pass over every row (:mod:`decode_batch` holds the
tensors). Each row keeps its own sampling settings and seed, its own stop strings (the
Baize markers plus the request's) and its own token limit, and leaves the batch when done.

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

from ..prompts import STOP_MARKERS, Turn
from .chat_model import ChatModel, cut_at_marker, trim_history
from .decode import DecodeBatch, SamplingParams, next_tokens

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


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first Baize marker or ``stop`` string, and whether one was found."""
    cut = cut_at_marker(text)
    positions = [i for i in (cut.find(s) for s in stop) if i >= 0]
    if positions:
        cut = cut[: min(positions)]
    return cut, len(cut) < len(text)


def streamable_prefix(answer: str, stop: Sequence[str]) -> str:
    """The part of a growing ``answer`` that can be shown now.

    Held back: a tail that may still grow into a stop string, trailing whitespace (the
    final answer is stripped) and an incomplete UTF-8 sequence.
    """
    stops = (*STOP_MARKERS, *stop)
    undecided = max((n for s in stops for n in range(1, len(s)) if answer.endswith(s[:n])), default=0)
    return answer[: len(answer) - undecided].rstrip().rstrip("\ufffd")


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
    future: PendingAnswer = field(default_factory=PendingAnswer)
    generated: list[int] = field(default_factory=list)
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
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._vocab = chat.model.get_output_embeddings().weight.shape[0]
        self._eos_id = tokenizer.eos_token_id
        # Fast tokenizers must not be used by two threads at once: submit() encodes on the
        # caller's thread while the generation thread decodes. Reentrant: an ``on_text``
        # callback (run under it) may submit.
        self._tokenizer_lock = threading.RLock()
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._closed = False
        # transformers 5 names the key/value cache argument ``cache``, 4.x ``past_key_values``.
        forward = inspect.signature(chat.model.get_base_model().forward).parameters
        self._step_arguments = {"use_cache": True}
        if "logits_to_keep" in forward:  # only the last position's logits are needed
            self._step_arguments["logits_to_keep"] = 1
        self._cache_argument = "cache" if "cache" in forward else "past_key_values"
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
        if not history or history[-1].role != "human":
            raise ValueError("the history must end with a human message")
        limit = min(self.history_token_budget, self.chat.max_positions or self.history_token_budget)
        with self._tokenizer_lock:

            def count(turns: list[Turn]) -> int:
                return len(self.chat.prompt_ids(turns, system))

            shortest = count(trim_history(history, count, 0))
            new_tokens = min(params.max_new_tokens, limit - shortest)
            if new_tokens < 1:
                raise ValueError(f"the message is too long: its prompt takes {shortest} tokens, the limit is {limit}")
            ids = self.chat.prompt_ids(trim_history(history, count, limit - new_tokens), system)
        return _Request(ids, new_tokens, params, on_text)

    # The generation thread.

    def _run(self) -> None:
        running: DecodeBatch | None = None
        stopping = False
        while running is not None or not stopping:
            admitted, stopping = self._admit(len(running) if running else 0, wait=running is None, stopping=stopping)
            try:
                if admitted:
                    self.stats.batches += 1
                    self.stats.rows += len(admitted)
                    fresh = self._step(DecodeBatch.start(admitted, self._pad_id, self._vocab, self.chat.device))
                    running = fresh if running is None else running.extend(fresh) if fresh else running
                if running is not None:
                    running = self._step(running)
            except Exception as exc:  # a failed step fails its requests, not the thread
                for request in [*(running.requests if running else []), *admitted]:
                    if not request.future.done():
                        request.future.set_exception(exc)
                running = None
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
        Busy: take only what is already queued, so the running rows are not held up.
        """
        admitted: list[_Request] = []
        if stopping:
            return admitted, True
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

    def _step(self, rows: DecodeBatch) -> DecodeBatch | None:
        """One forward pass over ``rows``: each gets its next token; the rows still generating, or None."""
        self.stats.steps += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(rows))
        with torch.no_grad():
            logits = self.chat.model(
                input_ids=rows.inputs,
                attention_mask=rows.mask,
                position_ids=rows.positions,
                **self._step_arguments,
                **{self._cache_argument: rows.cache},
            ).logits[:, -1, :].float()
            tokens = next_tokens(logits, rows.seen, rows.temperature, rows.top_p, rows.penalty, rows.generators)
        rows.seen[torch.arange(len(rows), device=tokens.device), tokens] = True
        keep = self._advance(rows.requests, tokens.tolist())
        if not keep:
            return None
        rows.inputs, rows.positions = tokens[:, None], rows.positions[:, -1:] + 1
        rows.mask = torch.cat([rows.mask, rows.mask.new_ones(len(rows), 1)], dim=1)
        if len(keep) < len(rows):
            rows.select(keep)
        return rows

    def _advance(self, requests: list[_Request], tokens: list[int]) -> list[int]:
        """Append each live row's token, finish the rows that are done; the indices of the others."""
        keep = []
        with self._tokenizer_lock:
            for index, (request, token) in enumerate(zip(requests, tokens)):
                if request.future.abandoned:
                    self.stats.abandoned += 1
                    request.future.set_result(Completion(request.emitted, "abandoned", len(request.prompt_ids),
                                                         len(request.generated)))
                    continue
                hit_eos = token == self._eos_id
                if not hit_eos:
                    request.generated.append(token)
                text = self.chat.tokenizer.decode(request.generated, skip_special_tokens=True)
                answer, stopped = cut_at_stop(text, request.params.stop)
                answer = answer.lstrip()
                if stopped or hit_eos or len(request.generated) >= request.max_new_tokens:
                    final = answer.rstrip()
                    request.emit(final)
                    request.future.set_result(
                        Completion(
                            text=final,
                            finish_reason="stop" if stopped or hit_eos else "length",
                            prompt_tokens=len(request.prompt_ids),
                            completion_tokens=len(request.generated) + int(hit_eos),
                        )
                    )
                else:
                    request.emit(streamable_prefix(answer, request.params.stop))
                    keep.append(index)
        return keep

