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
  errors (from the spread of a row's tokens, and from how few rows the mean was measured
  on), widened by :data:`DRIFT` for what the history cannot know (other seeds, another day).

Without history the range is wide and says so: a self-chat transcript's completion between
:data:`NO_HISTORY_LOW_SHARE` of ``max_tokens`` and all of it, any other answer's (a
judgment, a v1.5 turn) between :data:`SHORT_TURN_TOKENS` and ``max_tokens``, prompts within
a quarter of the estimate, and for v1.5 between one round and every round of ``max_rounds``. A stage
whose model has no price is refused: a forecast in tokens only would hide the cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

from ..collect.cache import CollectionStats
from ..collect.client import estimate_tokens
from ..collect.modes import Writer
from ..collect.pricing import dollars
from ..config.pipeline import ModelPrice, TeacherConfig

# Bump when the forecast's method changes: the forecast asset's code_version.
FORECAST_VERSION = "1"
STANDARD_ERRORS = 2.5
DRIFT = 0.15
NO_HISTORY_LOW_SHARE = 0.125
# Without history, the fewest tokens a v1.5 turn (one question, one short answer) is assumed to take.
SHORT_TURN_TOKENS = 16
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


def combined(stage: str, forecasts: Sequence[StageForecast]) -> StageForecast:
    """Several stages' forecasts as one (a judged evaluation: the reference answers and the judgments)."""
    total = StageForecast(stage, ", ".join(dict.fromkeys(f.model for f in forecasts)), 0, 0, ZERO, ZERO, ZERO, ZERO,
                          0.0, "; ".join(f.basis for f in forecasts))
    for f in forecasts:
        total = replace(total, rows=total.rows + f.rows, cached=total.cached + f.cached,
                        requests=total.requests + f.requests, prompt_tokens=total.prompt_tokens + f.prompt_tokens,
                        completion_tokens=total.completion_tokens + f.completion_tokens,
                        dollars=total.dollars + f.dollars, expected_dollars=total.expected_dollars + f.expected_dollars)
    return total


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
    seen = history.answered
    mean = history.answered_tokens / seen if seen else 0.0
    variance = history.answered_tokens_sq / seen - mean * mean if seen else 0.0
    # The n rows' own spread, and the uncertainty of a mean measured on ``seen`` rows, applied n times.
    error = STANDARD_ERRORS * math.sqrt(max(variance, 0.0) * n * (1 + n / max(seen, 1)))
    share = prompt / (prompt + completion) if prompt + completion else 0.5
    if writer.one_call is not None:  # one request a row, and retries at the rate seen (counted like arrivals)
        extra = n * (per_row_requests - 1)
        extra_error = STANDARD_ERRORS * math.sqrt(max(extra, 1.0))
        requests = Range(n + max(extra - extra_error, 0.0), n + (extra + extra_error) * (1 + DRIFT))
    else:
        mid = n * per_row_requests
        requests = _spread(mid - STANDARD_ERRORS * math.sqrt(mid), mid + STANDARD_ERRORS * math.sqrt(mid))
    return _Tokens(requests,
                   _spread(prompt - error * share, prompt + error * share),
                   _spread(completion - error * (1 - share), completion + error * (1 - share)), prompt, completion)


def _least_completion(writer: Writer, settings: TeacherConfig) -> float:
    """Without history, the fewest completion tokens one request is assumed to take: a share of ``max_tokens``
    for a whole self-chat transcript, a short turn for anything else (a judgment, an answer, a v1.5 turn)."""
    return settings.max_tokens * NO_HISTORY_LOW_SHARE if writer.mode == "v1" else SHORT_TURN_TOKENS


def _without_history(n: int, estimate: int, writer: Writer, settings: TeacherConfig) -> _Tokens:
    """What ``n`` rows asked for the first time will use: wide, and said to be."""
    low_completion = _least_completion(writer, settings)
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
        basis = (f"no history of this prompt and model: completions of {_least_completion(writer, settings):g} "
                 f"tokens to max_tokens ({settings.max_tokens}) a request"
                 + ("" if writer.one_call is not None else f", one to {settings.max_rounds} rounds"))
    return StageForecast(
        stage=stage, model=settings.model, rows=rows, cached=rows - n, requests=tokens.requests,
        prompt_tokens=tokens.prompt, completion_tokens=tokens.completion,
        dollars=Range(dollars(price, tokens.prompt.low, tokens.completion.low),
                      dollars(price, tokens.prompt.high, tokens.completion.high)),
        expected_dollars=dollars(price, tokens.expected_prompt, tokens.expected_completion), basis=basis,
    )
