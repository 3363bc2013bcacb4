"""How each row's next token is chosen: its own sampling settings, its own random numbers, no per-row sync.

The order of ``generate()``: repetition penalty on the tokens seen, temperature, top-p,
then a draw (argmax at temperature 0). A sampled row draws by inverting its
distribution's cumulative sum at one uniform number per step, the ``step``-th of its own
stream: :func:`uniform_stream` gives a seeded row the same numbers whatever else runs
with it, so a seed and its settings always give the same answer. All rows draw together,
in one pass of tensor operations.

Top-p keeps the most likely tokens until the probability of those above a token reaches
``top_p``. Sorting the whole vocabulary for that (what ``generate()`` does) is the
costliest part of a step on a CPU; ``topk`` of the likeliest 256 tokens, then of 4,096
for the rows whose nucleus is wider, costs a fraction of it, and only the rows whose
nucleus is wider still are sorted whole. (SmolLM2-135M at temperature 1, top-p 0.95:
half the rows' nuclei hold at most 256 tokens, 99% at most 4,096.) Which of these a
row goes through depends on its own distribution alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .chat_model import DEFAULT_REPETITION_PENALTY

__all__ = ["SamplingParams", "next_tokens", "uniform_stream"]

NUCLEUS_CANDIDATES = (256, 4096)  # the likeliest tokens a row's nucleus is looked for in, in turn, before all


@dataclass(frozen=True)
class SamplingParams:
    """How one answer is sampled; ``temperature`` 0 is greedy."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must not be negative, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be positive, got {self.repetition_penalty}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")


def uniform_stream(params: SamplingParams, steps: int) -> torch.Tensor:
    """The uniform numbers in [0, 1) an answer draws its tokens with, one per step (empty when greedy).

    Seeded: from a CPU generator of its own, the same on every device and in every batch.
    Unseeded: from torch's global generator (``torch.manual_seed`` repeats them).
    """
    if params.temperature == 0:
        return torch.empty(0)
    if params.seed is None:
        return torch.rand(steps)
    generator = torch.Generator()
    generator.manual_seed(params.seed)
    return torch.rand(steps, generator=generator)


@dataclass(frozen=True)
class RowMix:
    """Which kinds of rows a batch holds, known on the host: only the work some row needs is done."""

    penalised: bool  # a repetition penalty other than 1
    greedy: bool  # temperature 0
    whole: bool  # sampled from the whole distribution (top_p 1)
    nucleus: bool  # sampled with top_p < 1

    @classmethod
    def of(cls, params: list[SamplingParams]) -> "RowMix":
        sampled = [p for p in params if p.temperature > 0]
        return cls(
            penalised=any(p.repetition_penalty != 1 for p in params),
            greedy=len(sampled) < len(params),
            whole=any(p.top_p >= 1 for p in sampled),
            nucleus=any(p.top_p < 1 for p in sampled),
        )


def _draw(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Per row, the index where its cumulative ``probs`` (not normalised) pass ``uniform`` of their total."""
    cumulative = probs.cumsum(dim=-1)
    total = cumulative[:, -1:]
    index = torch.searchsorted(cumulative, uniform[:, None] * total, right=True)
    # Where the product rounds up to the total: the last token with any probability.
    last = (cumulative < total).sum(dim=-1, keepdim=True)
    return torch.minimum(index, last).squeeze(1)


def _nucleus_draw(descending: torch.Tensor, tokens: torch.Tensor, total: torch.Tensor, top_p: torch.Tensor,
                  uniform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw among the top-p of candidates ``descending`` (scaled logits, most likely first; ``total`` their
    logsumexp over the vocabulary); also whether the candidates hold the whole nucleus."""
    probs = (descending - total[:, None]).exp()
    above = probs.cumsum(dim=-1) - probs  # the probability of the candidates more likely than each
    kept = probs.masked_fill(above >= top_p[:, None], 0)
    chosen = tokens.gather(1, _draw(kept, uniform)[:, None]).squeeze(1)
    return chosen, (above[:, -1] + probs[:, -1]) >= top_p


def next_tokens(logits: torch.Tensor, seen: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor,
                penalty: torch.Tensor, uniform: torch.Tensor, mix: RowMix) -> torch.Tensor:
    """One token per row: repetition penalty on the tokens ``seen``, then greedy or temperature + top-p sampling
    at the row's ``uniform`` number."""
    if mix.penalised:
        factor = penalty[:, None]
        logits = torch.where(seen, torch.where(logits < 0, logits * factor, logits / factor), logits)
    tokens = logits.argmax(dim=-1) if mix.greedy else torch.zeros_like(temperature, dtype=torch.long)
    if not (mix.whole or mix.nucleus):
        return tokens
    scaled = logits / temperature.clamp(min=1e-6)[:, None]
    if mix.whole:
        tokens = torch.where((temperature > 0) & (top_p >= 1), _draw(scaled.softmax(dim=-1), uniform), tokens)
    if mix.nucleus:
        total = scaled.logsumexp(dim=-1)
        rows = ((temperature > 0) & (top_p < 1)).nonzero().squeeze(1)  # a host sync per round, never per row
        vocabulary = scaled.shape[-1]
        for count in [*(c for c in NUCLEUS_CANDIDATES if c < vocabulary), vocabulary]:
            candidates, candidate_tokens = scaled[rows].topk(count, dim=-1)
            chosen, covered = _nucleus_draw(candidates, candidate_tokens, total[rows], top_p[rows], uniform[rows])
            if count == vocabulary:  # the whole vocabulary holds every nucleus
                tokens[rows] = chosen
                break
            tokens[rows[covered]] = chosen[covered]
            rows = rows[~covered]
            if not len(rows):
                break
    return tokens
