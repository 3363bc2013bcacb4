"""Next-token loss computed only at the labeled positions, a bounded chunk of logits at a time.

A causal LM's forward projects every position onto the vocabulary; at a 32K-128K
vocabulary those logits, upcast to fp32 for the softmax, are the largest tensor of a
training step, and with assistant-only labels a large share of them is thrown away.
Here the model's body gives the hidden states, only the positions whose next token is
labeled are kept, and the output head plus cross-entropy run over them in chunks of at
most ``LOGIT_CHUNK_ELEMENTS`` logits. For a frozen linear head (LoRA) the gradient of
each chunk is formed while its logits exist, so nothing of size positions x vocabulary
is kept for the backward pass and the head is not projected a second time.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .batching import IGNORE_INDEX, Sample, collate

# Logits per chunk: 32M fp32 values (128 MiB), ~1,000 positions at 32K, ~260 at 128K.
LOGIT_CHUNK_ELEMENTS = 1 << 25
# Config fields of heads that transform their logits (Gemma 2's soft cap, Cohere's
# scale): such models keep their own forward, which applies the transformation.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale")
MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


def predicted_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Labeled tokens that are a prediction target (the first token never is)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def causal_lm_of(model):
    """The transformers causal LM inside ``model`` (a peft model or the plain one)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class _FrozenHeadCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T + bias``, chunk by chunk, with the hidden-state gradient
    formed in the forward pass (the head's weight is frozen, so that is the only gradient it has)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk):
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden)
        for start in range(0, hidden.size(0), chunk):
            piece = slice(start, start + chunk)
            logits = F.linear(hidden[piece].to(weight.dtype), weight, bias).float()
            log_z = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, targets[piece, None]).squeeze(1)
            total += (log_z - picked).sum()
            # d loss / d logits = softmax - one_hot, formed in place over the chunk's logits
            probabilities = logits.sub_(log_z[:, None]).exp_()
            probabilities[torch.arange(len(picked), device=hidden.device), targets[piece]] -= 1
            grad_hidden[piece] = (probabilities.to(weight.dtype) @ weight).to(hidden.dtype)
        ctx.save_for_backward(grad_hidden)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad_total.to(grad_hidden.dtype), None, None, None, None


def _chunk_loss(head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def labeled_positions_loss(head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of ``head(hidden)`` against ``targets`` (one row per labeled position)."""
    if len(targets) == 0:
        return hidden.sum() * 0.0  # keeps the graph connected when a micro-batch has no labels
    vocab = head.out_features if hasattr(head, "out_features") else head.weight.size(0)
    chunk = max(1, LOGIT_CHUNK_ELEMENTS // vocab)
    frozen_linear = type(head) is torch.nn.Linear and not head.weight.requires_grad
    if frozen_linear and torch.is_grad_enabled() and hidden.requires_grad:
        bias = None if head.bias is None else head.bias.detach()
        return _FrozenHeadCrossEntropy.apply(hidden, head.weight.detach(), bias, targets, chunk)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, len(targets), chunk):
        piece = slice(start, start + chunk)
        if torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in head.parameters())):
            # A trainable head: recompute each chunk's logits in the backward pass instead of keeping them.
            total = total + checkpoint(_chunk_loss, head, hidden[piece], targets[piece], use_reentrant=False)
        else:
            total = total + _chunk_loss(head, hidden[piece], targets[piece])
    return total


def summed_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of the next-token cross-entropy over the labeled tokens of a micro-batch.

    A sum, not a mean, so a step's loss can be divided by the labeled tokens of all
    its micro-batches: every token weighs the same however the batch is split.
    """
    inputs = {name: batch[name] for name in MODEL_INPUTS if name in batch}
    targets = batch["labels"][:, 1:]
    labeled = targets != IGNORE_INDEX
    causal_lm = causal_lm_of(model)
    config = causal_lm.config.get_text_config()
    if any(getattr(config, name, None) is not None for name in LOGIT_TRANSFORMS):
        logits = model(**inputs, use_cache=False).logits[:, :-1][labeled]
        return F.cross_entropy(logits.float(), targets[labeled], reduction="sum")
    hidden = causal_lm.get_decoder()(**inputs, use_cache=False).last_hidden_state
    head = causal_lm.get_output_embeddings()
    return labeled_positions_loss(head, hidden[:, :-1][labeled], targets[labeled])


@torch.no_grad()
def evaluate(model, samples: Sequence[Sample], micro_batch_size: int, pad_id: int, device: str) -> float | None:
    """Mean per-token loss on ``samples``; None when there is nothing to evaluate."""
    if not samples:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(samples), micro_batch_size):
        batch = collate(samples[start : start + micro_batch_size], pad_id, device)
        total += float(summed_loss(model, batch))
        count += predicted_tokens(batch)
    model.train(was_training)
    return total / count if count else None
