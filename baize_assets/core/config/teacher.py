"""Settings of the teacher and of collection: the ``teacher`` section of the configuration.

The endpoint and key come from ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``, never from this
file, so they never land in a file that is committed or recorded.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, JsonValue, PrivateAttr, field_validator, model_validator

from .base import StrictModel, Text


class RateLimitConfig(StrictModel):
    """Client-side limits of one endpoint; None means no limit of that kind."""

    requests_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)
    # Pace this share below the limits: arrival times jitter on the way to the provider,
    # and a provider counting over short windows must never see the limit crossed.
    headroom: float = Field(default=0.02, ge=0.0, lt=0.5)


class RateLimitStoreConfig(StrictModel):
    """Where the rate limit and the budget that every process shares live."""

    # sqlite: one file, shared by the processes of one machine; redis: by any number of machines.
    kind: Literal["sqlite", "redis"] = "sqlite"
    # The SQLite file; None means rate_limits.sqlite in the output folder.
    path: Text | None = None
    # The environment variable holding the Redis URL, which may carry a password.
    url_env: str = Field(default="BAIZE_REDIS_URL", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _check_path_is_sqlite(self) -> "RateLimitStoreConfig":
        if self.path is not None and self.kind != "sqlite":
            raise ValueError(f"path is for the sqlite store; the {self.kind} store's URL comes from {self.url_env}")
        return self


class StateStoreConfig(StrictModel):
    """Where the collection's state lives: the caches of answers, the batch ledgers and the shard leases."""

    # sqlite: files and flock leases in the layout's state folder, for the processes of one machine;
    # postgres: tables and advisory locks, for steps on machines that share no disk.
    kind: Literal["sqlite", "postgres"] = "sqlite"
    # The environment variable holding the PostgreSQL URL, which may carry a password.
    url_env: str = Field(default="BAIZE_STATE_URL", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class ModelPrice(StrictModel):
    """Dollars per million tokens of one model."""

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)


class BudgetConfig(StrictModel):
    """Spending cap of one Dagster run (all its transcript steps together); None means no cap.

    ``max_forecast_dollars`` gates runs before they spend: the ``costs/forecast`` asset's
    blocking check fails when the expected cost of everything not yet paid for exceeds it,
    and the runs of the collecting jobs, which materialize the forecast first, stop there.
    """

    max_tokens: int | None = Field(default=None, ge=1)
    max_dollars: float | None = Field(default=None, gt=0)
    max_forecast_dollars: float | None = Field(default=None, gt=0)


class BatchConfig(StrictModel):
    """How ``api: batch`` collects: OpenAI's Batch API, at batch prices, results within the window."""

    poll_interval_s: float = Field(default=60.0, gt=0)
    completion_window: Literal["24h"] = "24h"
    # Batch prices are this share of teacher.prices, unless the model has its own under prices.
    price_factor: float = Field(default=0.5, gt=0, le=1)
    prices: dict[Text, ModelPrice] = Field(default_factory=dict)
    # A shard's requests go out in as many batches as these limits take. OpenAI's per-batch limits:
    # requests per input file, and the file's size (the 209,715,200 bytes its refusal names).
    max_requests_per_batch: int = Field(default=50_000, ge=1)
    max_bytes_per_batch: int = Field(default=200 * 1024 * 1024, ge=1)
    # Estimated prompt tokens the model may hold in unfinished batches at once (the organization's
    # per-model limit, which grows with its usage tier; 2,000,000 is tier 1's for gpt-4o-mini):
    # batches wait until earlier ones finish. None: no limit. max_enqueued_tokens_by_model: per model.
    max_enqueued_tokens: int | None = Field(default=2_000_000, ge=1)
    max_enqueued_tokens_by_model: dict[Text, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)

    def enqueued_token_limit(self, model: str) -> int | None:
        """The prompt tokens ``model`` may hold in unfinished batches, None for no limit."""
        return self.max_enqueued_tokens_by_model.get(model, self.max_enqueued_tokens)


# Request fields the pipeline sets itself: extra_body may not carry them.
REQUEST_FIELDS = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "reasoning_effort",
    "response_format", "stream", "stream_options", "n",
})
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]


def check_extra_body(extra_body: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """Provider-specific request fields: any JSON, but none the pipeline sets itself."""
    taken = sorted(REQUEST_FIELDS & extra_body.keys())
    if taken:
        raise ValueError(f"{', '.join(taken)} cannot go in extra_body: the pipeline sets "
                         f"{'it' if len(taken) == 1 else 'them'} (use the setting of that name)")
    return extra_body


class TeacherConfig(StrictModel):
    """The chat model that writes self-chat transcripts, and how collection runs.

    The endpoint and key come from ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` so they
    never land in a file that is committed or recorded. The same settings, filled from the
    ``judge`` block, drive the judge's requests (:meth:`PipelineConfig.judge_teacher`).
    """

    model: Text = "baize-simulated-teacher"
    # v1: one call writes the whole transcript; v1.5: one call per human turn and per AI turn.
    mode: Literal["v1", "v1.5"] = "v1"
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    # The completion budget, hidden reasoning included (sent as max_completion_tokens where the model needs it).
    max_tokens: int = Field(default=1024, ge=1)
    # A reasoning model's effort; None sends none (the model's default).
    reasoning_effort: ReasoningEffort | None = None
    # Provider-specific request fields sent as they are (vLLM's top_k, an OpenRouter route, ...).
    extra_body: dict[Text, JsonValue] = Field(default_factory=dict)
    # An answer that is not in the format asked for is asked again at most this many times;
    # each retry costs as much as the first request.
    format_retries: int = Field(default=1, ge=0)
    # A longer answer is refused (kind "oversized"), not stored; None derives it from max_tokens.
    max_answer_chars: int | None = Field(default=None, ge=1)
    # Loop guards: exchanges kept per conversation, completion tokens per v1.5 conversation.
    max_rounds: int = Field(default=8, ge=1)
    max_conversation_tokens: int = Field(default=4096, ge=1)
    # Conversations in flight per collecting process.
    max_concurrency: int = Field(default=8, ge=1, le=1024)
    # Processes that collect one shard's pending seeds together (api chat): one process is bound
    # by one core of client work, so a machine with N cores collects up to N times as fast.
    processes: int = Field(default=1, ge=1, le=64)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=5, ge=0)
    retry_base_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=30.0, gt=0)
    # Limits of the teacher's endpoint; ``endpoint_rate_limits`` overrides them per base URL.
    rate_limit: RateLimitConfig = RateLimitConfig()
    endpoint_rate_limits: dict[Text, RateLimitConfig] = Field(default_factory=dict)
    # Shared by every process that uses the same endpoint and key, as is the budget.
    rate_limit_store: RateLimitStoreConfig = RateLimitStoreConfig()
    prices: dict[Text, ModelPrice] = Field(default_factory=dict)
    budget: BudgetConfig = BudgetConfig()
    progress_every_s: float = Field(default=10.0, gt=0)
    # chat: one request per call; batch: the shard's requests as one Batch API job (v1 only).
    api: Literal["chat", "batch"] = "chat"
    batch: BatchConfig = BatchConfig()
    # Where these settings come from, for messages that name what to change: the configuration
    # section, and the environment variables of the endpoint and key.
    _section: str = PrivateAttr("teacher")
    _base_url_env: str = PrivateAttr("OPENAI_BASE_URL")
    _api_key_env: str = PrivateAttr("OPENAI_API_KEY")

    @field_validator("extra_body")
    @classmethod
    def _no_pipeline_fields_in_extra_body(cls, extra_body: dict[str, JsonValue]) -> dict[str, JsonValue]:
        return check_extra_body(extra_body)

    @property
    def section(self) -> str:
        return self._section

    @property
    def base_url_env(self) -> str:
        return self._base_url_env

    @property
    def api_key_env(self) -> str:
        return self._api_key_env

    def as_section(self, section: str, base_url_env: str, api_key_env: str) -> "TeacherConfig":
        """These settings as configuration ``section``, whose endpoint and key are in those variables."""
        copy = self.model_copy()
        copy._section, copy._base_url_env, copy._api_key_env = section, base_url_env, api_key_env
        return copy

    @model_validator(mode="after")
    def _check_batch_mode(self) -> "TeacherConfig":
        if self.api == "batch" and self.mode == "v1.5":
            raise ValueError("api 'batch' supports mode 'v1' only: v1.5 asks turn by turn and would need one batch "
                             "per round")
        if self.api == "batch" and self.processes > 1:
            raise ValueError(f"processes ({self.processes}) is for api 'chat': a batch is one job the provider runs")
        return self

    @model_validator(mode="after")
    def _check_dollar_budget_has_price(self) -> "TeacherConfig":
        if self.budget.max_dollars is not None and self.model not in self.prices:
            raise ValueError(f"budget.max_dollars needs a price for model '{self.model}' in teacher.prices")
        if self.retry_max_s < self.retry_base_s:
            raise ValueError(f"retry_max_s ({self.retry_max_s}) is below retry_base_s ({self.retry_base_s})")
        return self

    def rate_limit_for(self, base_url: str | None) -> RateLimitConfig:
        return self.endpoint_rate_limits.get((base_url or "").rstrip("/"), self.rate_limit)

    @property
    def answer_char_limit(self) -> int:
        """Characters an answer may have: ``max_answer_chars``, else far more than ``max_tokens`` can make."""
        return self.max_answer_chars if self.max_answer_chars is not None else self.max_tokens * 16 + 1024
