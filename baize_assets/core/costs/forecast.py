"""What asking some rows will cost, before anything is sent: a low and a high figure, and why.

A stage's rows that the cache already holds cost nothing. The rest are priced from what
the same prompt version and model really cost before (:class:`~baize_assets.core.collect.cache.CollectionStats`,
recorded by every collection, retries and rejected answers included):

* **requests** per row as seen so far (a v1 row is one request, plus its retries; a v1.5
  row one per turn);
* **prompt tokens** from the rendered prompts (about four characters a token), calibrated
  by what the endpoint reported for the prompts it was sent; a v1.5 row's growing prompts
  from the mean seen;
* **completion tokens** from the mean seen per row;
* the **range**: the sum's expected value plus or minus :data:`STANDARD_ERRORS` standard
  errors (from the spread of a row's tokens), widened by :data:`DRIFT` for what the history
  cannot know (other seeds, another day).

Without history the range is wide and says so: completions between
:data:`NO_HISTORY_LOW_SHARE` of ``max_tokens`` and all of it, prompts within a quarter of
the estimate, and for v1.5 between one round and every round of ``max_rounds``. A stage
whose model has no price is refused: a forecast in tokens only would hide the cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from ..collect.cache import CollectionStats
from ..collect.client import estimate_tokens
from ..collect.modes import Writer
from ..collect.pricing import dollars
from ..config.pipeline import ModelPrice, TeacherConfig

STANDARD_ERRORS = 2.5
DRIFT = 0.1
NO_HISTORY_LOW_SHARE = 0.125
# Rows of history below which the history is not trusted.
MIN_HISTORY_ROWS = 5


class ForecastError(ValueError):
    """A stage cannot be priced (its model has no price): the message names the setting to add."""


@dataclass(frozen=True)
class Range:
    low: float
    high: float

    @property
    def mid(self) -> float:
        return (self.low + self.high) / 2

    def __add__(self, other: "Range") -> "Range":
        return Range(self.low + other.low, self.high + other.high)


ZERO = Range(0.0, 0.0)


@dataclass(frozen=True)
class StageForecast:
    """One stage of a selection (a source's transcripts, a v2's scores, an evaluation's judgments), priced."""

    stage: str
    model: str
    rows: int  # rows the stage holds
    cached: int  # of them already paid for
    requests: Range
    prompt_tokens: Range
    completion_tokens: Range
    dollars: Range
    expected_dollars: float  # the central figure a measured spend is compared with
    basis: str  # what the figures rest on

    def as_dict(self) -> dict:
        return {"stage": self.stage, "model": self.model, "rows": self.rows, "cached": self.cached,
                "requests": [round(self.requests.low), round(self.requests.high)],
                "tokens": [round(self.prompt_tokens.low + self.completion_tokens.low),
                           round(self.prompt_tokens.high + self.completion_tokens.high)],
                "dollars": [round(self.dollars.low, 6), round(self.dollars.high, 6)],
                "expected_dollars": round(self.expected_dollars, 6), "basis": self.basis}


def price_of(settings: TeacherConfig, price: ModelPrice | None, stage: str) -> ModelPrice:
    if price is None:
        where = "teacher.batch.prices or teacher.prices" if settings.api == "batch" else "teacher.prices"
        raise ForecastError(f"{stage}: model '{settings.model}' has no price; add it under {where} "
                            "(dollars per million input and output tokens) to forecast its cost")
    return price


def _spread(low: float, high: float) -> Range:
    return Range(max(low, 0.0) * (1 - DRIFT), high * (1 + DRIFT))


@dataclass(frozen=True)
class _Tokens:
    """Requests and tokens of some rows: ranges, and the expected prompt and completion tokens."""

    requests: Range
    prompt: Range
    completion: Range
    expected_prompt: float
    expected_completion: float


def _with_history(n: int, estimate: int, writer: Writer, history: CollectionStats) -> _Tokens:
    """What ``n`` rows whose first prompts are estimated at ``estimate`` tokens will use, from ``history``."""
    per_row_requests = history.requests / history.rows
    if writer.one_call is not None and history.prompt_estimate:
        # Every request of a one-call row sends the same prompt: calibrate the estimate by what was reported.
        ratio = (history.prompt_tokens / history.requests) / (history.prompt_estimate / history.rows)
        prompt = estimate * ratio * per_row_requests
    else:
        prompt = n * history.prompt_tokens / history.rows
    completion = n * history.completion_tokens / history.rows
    mean = history.answered_tokens / history.answered if history.answered else 0.0
    variance = history.answered_tokens_sq / history.answered - mean * mean if history.answered else 0.0
    error = STANDARD_ERRORS * math.sqrt(max(variance, 0.0) * n)
    share = prompt / (prompt + completion) if prompt + completion else 0.5
    requests = n * per_row_requests
    request_error = STANDARD_ERRORS * math.sqrt(requests)
    return _Tokens(_spread(requests - request_error, requests + request_error),
                   _spread(prompt - error * share, prompt + error * share),
                   _spread(completion - error * (1 - share), completion + error * (1 - share)), prompt, completion)


def _without_history(n: int, estimate: int, writer: Writer, settings: TeacherConfig) -> _Tokens:
    """What ``n`` rows asked for the first time will use: wide, and said to be."""
    low_completion = settings.max_tokens * NO_HISTORY_LOW_SHARE
    if writer.one_call is not None:
        requests, prompt = Range(n, n), Range(estimate * 0.8, estimate * 1.25)
        completion = Range(n * low_completion, n * settings.max_tokens)
    else:
        calls = 2 * settings.max_rounds + 1  # each round's two turns, and the human turn that ends it
        requests = Range(2 * n, n * calls)
        prompt = Range(2 * estimate * 0.8, calls * (estimate * 1.25 + n * settings.max_conversation_tokens))
        completion = Range(2 * n * low_completion, n * min(settings.max_conversation_tokens + settings.max_tokens,
                                                           calls * settings.max_tokens))
    return _Tokens(requests, prompt, completion, prompt.mid, completion.mid)


def forecast_stage(stage: str, settings: TeacherConfig, writer: Writer, price: ModelPrice | None,
                   pending: Iterable[str], rows: int, history: CollectionStats) -> StageForecast:
    """The forecast of asking ``pending`` (the row texts the cache lacks) of a stage of ``rows`` rows."""
    price = price_of(settings, price, stage)
    texts = list(pending)
    n = len(texts)
    estimate = sum(estimate_tokens(writer.first_messages(text)) for text in texts)
    if n == 0:
        tokens = _Tokens(ZERO, ZERO, ZERO, 0.0, 0.0)
        basis = "every row is cached: nothing to pay"
    elif history.rows >= MIN_HISTORY_ROWS and history.requests:
        tokens = _with_history(n, estimate, writer, history)
        basis = (f"what {history.rows} earlier rows of this prompt and model cost: "
                 f"{history.requests / history.rows:.2f} requests and "
                 f"{(history.prompt_tokens + history.completion_tokens) / history.rows:.0f} tokens per row")
    else:
        tokens = _without_history(n, estimate, writer, settings)
        basis = (f"no history of this prompt and model: completions between {NO_HISTORY_LOW_SHARE:g} of "
                 f"max_tokens ({settings.max_tokens}) and all of it"
                 + ("" if writer.one_call is not None else f", one to {settings.max_rounds} rounds"))
    return StageForecast(
        stage=stage, model=settings.model, rows=rows, cached=rows - n, requests=tokens.requests,
        prompt_tokens=tokens.prompt, completion_tokens=tokens.completion,
        dollars=Range(dollars(price, tokens.prompt.low, tokens.completion.low),
                      dollars(price, tokens.prompt.high, tokens.completion.high)),
        expected_dollars=dollars(price, tokens.expected_prompt, tokens.expected_completion), basis=basis,
    )
