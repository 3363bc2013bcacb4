"""Baize conversations as model samples: the token ids and the labels the loss is computed on.

Training, evaluation and inference all tokenize through here, so ``baize chat`` sees the
ids the adapter was trained on and the held-out loss is computed on the training labels.
Conversations longer than the cutoff are split at turn boundaries or dropped, and
counted, never silently truncated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..config.pipeline import TrainingConfig
from ..prompts import Turn, conversation_segments, render_conversation
from .batching import IGNORE_INDEX, Sample

__all__ = [
    "FitStats",
    "Sample",
    "build_sample",
    "encode",
    "encode_with_offsets",
    "exchanges_of",
    "fit_conversation",
    "fit_conversations",
]


def encode_with_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` and each token's character span, with BOS prepended if any.

    BOS is added here rather than by the tokenizer's post-processor so training and
    ``baize chat`` see the same ids whichever tokenizer the base model ships.
    """
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoding["input_ids"])
    offsets = [tuple(span) for span in encoding["offset_mapping"]]
    if tokenizer.bos_token_id is not None:
        ids.insert(0, tokenizer.bos_token_id)
        offsets.insert(0, (0, 0))
    return ids, offsets


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` as the model is trained on them (BOS first when there is one)."""
    return encode_with_offsets(tokenizer, text)[0]


def build_sample(turns: Sequence[Turn], tokenizer, loss_on: str, context_turns: int = 0) -> Sample:
    """Tokenize one conversation and label the tokens the loss is computed on.

    With ``loss_on="ai"`` a token is labeled when its last character lies in an AI
    piece of :func:`conversation_segments`: a token such as ``" I"`` whose leading
    space belongs to the ``[|AI|] `` marker is still the first word of the answer.
    The first ``context_turns`` turns (complete exchanges repeated from an earlier
    sample of a split conversation) are context only and never labeled.
    """
    if loss_on == "last_ai":  # everything before the last AI turn is context
        context_turns = max(context_turns, max((i for i, t in enumerate(turns) if t.role == "ai"), default=0))
        loss_on = "ai"
    segments = conversation_segments(turns)
    text = "".join(piece for piece, _ in segments)
    in_ai_piece = []
    for piece, is_ai in segments:
        in_ai_piece.extend([is_ai] * len(piece))
    context_ai_turns = sum(turn.role == "ai" for turn in turns[:context_turns])
    context_end = 0  # the context ends with the AI piece of its last AI turn
    for piece, is_ai in segments:
        if context_ai_turns == 0:
            break
        context_end += len(piece)
        context_ai_turns -= is_ai
    ids, offsets = encode_with_offsets(tokenizer, text)
    labels = []
    for token_id, (start, end) in zip(ids, offsets):
        last_char = end - 1 if end > start else start
        after_context = last_char >= context_end
        if loss_on == "all":
            labeled = after_context
        else:
            labeled = after_context and end > start and in_ai_piece[last_char]
        labels.append(token_id if labeled else IGNORE_INDEX)
    return Sample(ids, labels)


def exchanges_of(turns: Sequence[Turn]) -> list[list[Turn]]:
    """The conversation as exchanges: human turn(s) followed by the AI turn(s) answering them."""
    exchanges: list[list[Turn]] = []
    for turn in turns:
        if not exchanges or (turn.role == "human" and exchanges[-1][-1].role == "ai"):
            exchanges.append([])
        exchanges[-1].append(turn)
    return exchanges


@dataclass
class FitStats:
    """What fitting conversations into the cutoff did, for the summary and metadata."""

    conversations: int = 0
    samples: int = 0
    conversations_split: int = 0
    conversations_dropped: int = 0
    exchanges_dropped: int = 0  # single exchanges longer than the cutoff on their own

    def add(self, other: "FitStats") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def fit_conversation(turns: Sequence[Turn], tokenizer, training: TrainingConfig) -> tuple[list[Sample], FitStats]:
    """The samples of one conversation, none longer than ``training.cutoff_len``.

    A conversation that fits is one sample. A longer one is dropped (``overflow:
    drop``) or cut at exchange boundaries (``overflow: split``): each piece repeats the
    exchanges just before it as unlabeled context, up to ``split_context_fraction`` of
    the cutoff, so every AI turn is trained once and with what led to it. An exchange
    too long to fit even alone is left out and counted.
    """
    cutoff = training.cutoff_len
    stats = FitStats(conversations=1)
    whole = build_sample(turns, tokenizer, training.loss_on)
    if len(whole.input_ids) <= cutoff:
        stats.samples = 1
        return [whole], stats
    if training.overflow == "drop":
        stats.conversations_dropped = 1
        return [], stats

    exchanges = exchanges_of(turns)

    def length(first: int, end: int) -> int:
        return len(encode(tokenizer, render_conversation([t for ex in exchanges[first:end] for t in ex])))

    context_budget = int(training.split_context_fraction * cutoff)
    samples: list[Sample] = []
    start = floor = 0  # floor: context never reaches back past a dropped exchange
    while start < len(exchanges):
        context = start
        while context > floor and length(context - 1, start) <= context_budget:
            context -= 1
        end = start
        while True:
            while end < len(exchanges) and length(context, end + 1) <= cutoff:
                end += 1
            if end > start or context == start:
                break
            context += 1  # give up context to make room for one new exchange
        if end == start:
            stats.exchanges_dropped += 1
            start = floor = start + 1
            continue
        context_turns = sum(len(ex) for ex in exchanges[context:start])
        piece = [t for ex in exchanges[context:end] for t in ex]
        samples.append(build_sample(piece, tokenizer, training.loss_on, context_turns))
        start = end
    # A piece with nothing to learn (all context, as under loss_on "last_ai") is no sample.
    samples = [sample for sample in samples if any(label != IGNORE_INDEX for label in sample.labels)]
    stats.samples = len(samples)
    stats.conversations_split = int(len(samples) > 1)
    stats.conversations_dropped = int(not samples)
    return samples, stats


def fit_conversations(
    conversations: Sequence[Sequence[Turn]], tokenizer, training: TrainingConfig
) -> tuple[list[Sample], FitStats]:
    """The samples of every conversation, in order, and what fitting them did in total."""
    samples: list[Sample] = []
    stats = FitStats()
    for turns in conversations:
        fitted, fit_stats = fit_conversation(turns, tokenizer, training)
        samples += fitted
        stats.add(fit_stats)
    return samples, stats
