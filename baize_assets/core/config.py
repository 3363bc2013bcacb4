"""The pipeline's configuration: one YAML file, one typed model.

Sources and adapters are declared in ``baize.yaml`` (or the file named by
``BAIZE_CONFIG``); a team adds a domain by adding entries, not Python. Every model
forbids unknown keys, so a typo fails at load time with the key's path in the message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "baize.yaml"
DEFAULT_OUTPUT_DIR = PROJECT_ROOT / "data" / "output"

# The offline default base model: built from a config and a locally trained tokenizer
# by the ``base_models/tiny_llama`` asset, no download.
TINY_BASE_MODEL = "builtin:tiny-llama"

SeedFormat = Literal["quora_tsv", "stackoverflow", "medquad", "alpaca_json", "csv", "jsonl", "text"]
SINGLE_TURN_FORMATS = {"alpaca_json"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid."""


class SourceConfig(_Strict):
    """One seed source: where its seeds are, how to read them, how to shard them."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    format: SeedFormat
    paths: list[str] = Field(min_length=1)
    domain: str = "general"
    shards: int = Field(default=4, ge=1, le=4096)
    # Column (csv) or field (jsonl) holding the seed text, for the generic formats.
    text_field: str | None = None
    # Seeds are either self-chatted by the teacher or, like Alpaca, already an
    # instruction/response pair used as single-turn data.
    self_chat: bool | None = None
    # ISO 639-1 code of the language the corpus must be in; None turns the language filter off.
    language: str | None = Field(default="en", pattern=r"^[a-z]{2}$")

    @model_validator(mode="after")
    def _check_format_options(self) -> "SourceConfig":
        if self.format in ("csv", "jsonl") and not self.text_field:
            raise ValueError(f"format '{self.format}' needs text_field (the column holding the seed)")
        if self.format in SINGLE_TURN_FORMATS and self.self_chat:
            raise ValueError(f"format '{self.format}' holds finished answers and cannot be self-chatted")
        return self

    @property
    def is_self_chat(self) -> bool:
        return self.self_chat if self.self_chat is not None else self.format not in SINGLE_TURN_FORMATS

    def resolved_paths(self, root: Path = PROJECT_ROOT) -> list[Path]:
        return [p if p.is_absolute() else root / p for p in map(Path, self.paths)]


class RateLimitConfig(_Strict):
    """Client-side limits of one endpoint; None means no limit of that kind."""

    requests_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)
    # Pace this share below the limits: arrival times jitter on the way to the provider,
    # and a provider counting over short windows must never see the limit crossed.
    headroom: float = Field(default=0.02, ge=0.0, lt=0.5)


class ModelPrice(_Strict):
    """Dollars per million tokens of one model."""

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)


class BudgetConfig(_Strict):
    """Spending cap of one Dagster run (all its transcript steps together); None means no cap."""

    max_tokens: int | None = Field(default=None, ge=1)
    max_dollars: float | None = Field(default=None, gt=0)


class TeacherConfig(_Strict):
    """The chat model that writes self-chat transcripts, and how collection runs.

    The endpoint and key come from ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` so they
    never land in a file that is committed or recorded.
    """

    model: str = "baize-simulated-teacher"
    # v1: one call writes the whole transcript; v1.5: one call per human turn and per AI turn.
    mode: Literal["v1", "v1.5"] = "v1"
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int = Field(default=1024, ge=1)
    # Loop guards: exchanges kept per conversation, completion tokens per v1.5 conversation.
    max_rounds: int = Field(default=8, ge=1)
    max_conversation_tokens: int = Field(default=4096, ge=1)
    max_concurrency: int = Field(default=8, ge=1, le=1024)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=5, ge=0)
    retry_base_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=30.0, gt=0)
    # Limits of the teacher's endpoint; ``endpoint_rate_limits`` overrides them per base URL.
    rate_limit: RateLimitConfig = RateLimitConfig()
    endpoint_rate_limits: dict[str, RateLimitConfig] = Field(default_factory=dict)
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    budget: BudgetConfig = BudgetConfig()
    # Ignore cached conversations and ask the teacher again for every seed.
    regenerate: bool = False
    progress_every_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _check_dollar_budget_has_price(self) -> "TeacherConfig":
        if self.budget.max_dollars is not None and self.model not in self.prices:
            raise ValueError(f"budget.max_dollars needs a price for model '{self.model}' in teacher.prices")
        return self

    def rate_limit_for(self, base_url: str | None) -> RateLimitConfig:
        return self.endpoint_rate_limits.get((base_url or "").rstrip("/"), self.rate_limit)


class LoraConfig(_Strict):
    """LoRA hyperparameters; defaults are Baize's."""

    r: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
    )


class TrainingConfig(_Strict):
    """Training hyperparameters; defaults are Baize's 7B recipe."""

    learning_rate: float = Field(default=2e-4, gt=0)
    epochs: float = Field(default=1.0, gt=0)
    effective_batch_size: int = Field(default=64, ge=1)
    micro_batch_size: int = Field(default=4, ge=1)
    warmup_steps: int = Field(default=100, ge=0)
    cutoff_len: int = Field(default=512, ge=16)
    eval_size: int | float = Field(default=2000, gt=0)
    eval_steps: int = Field(default=200, ge=1)
    loss_on: Literal["ai", "all"] = "ai"
    seed: int = 42
    max_steps: int | None = Field(default=None, ge=1)
    # A conversation longer than cutoff_len is split at turn boundaries into several
    # samples ("split"), each repeating earlier turns as unlabeled context up to
    # split_context_fraction of the cutoff, or left out ("drop"); either way it is counted.
    overflow: Literal["split", "drop"] = "split"
    split_context_fraction: float = Field(default=0.5, ge=0.0, lt=1.0)
    # "length_grouped" pads each micro-batch of similar lengths to its longest sample;
    # "pad_to_cutoff" pads every sample to cutoff_len, as the original did.
    batching: Literal["length_grouped", "pad_to_cutoff"] = "length_grouped"
    checkpoint_steps: int = Field(default=100, ge=1)
    keep_best: bool = True  # save the weights of the best eval loss, not the last step's
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 (else fp16) on CUDA, fp32 on CPU
    quantization: Literal["none", "8bit", "4bit"] = "none"  # base loading via bitsandbytes (QLoRA), CUDA only
    export_merged: bool = False  # also write the base with the adapter merged in, as a plain model
    # Train in a child process (dagster-pipes): the run's process stays small and
    # gets the logs streamed; a killed child resumes from its checkpoint on rerun.
    run_in_subprocess: bool = True
    eval_prompts: list[str] = Field(
        default_factory=lambda: [
            "How do I make a good cup of coffee?",
            "What is the difference between a list and a tuple in Python?",
            "What are common symptoms of the flu?",
            "How can I prepare for a job interview?",
        ]
    )

    @field_validator("eval_size")
    @classmethod
    def _fraction_below_one(cls, value: int | float) -> int | float:
        if isinstance(value, float) and value >= 1:
            raise ValueError("a float eval_size is a fraction and must be below 1")
        return value


class AdapterConfig(_Strict):
    """One LoRA adapter trained on the corpus of some sources."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    sources: list[str] = Field(min_length=1)
    base_model: str = TINY_BASE_MODEL
    lora: LoraConfig = LoraConfig()
    training: TrainingConfig = TrainingConfig()

    @property
    def uses_tiny_base(self) -> bool:
        return self.base_model == TINY_BASE_MODEL


class TinyBaseConfig(_Strict):
    """Shape of the offline tiny Llama base and its locally trained BPE tokenizer."""

    vocab_size: int = Field(default=2048, ge=300)
    hidden_size: int = Field(default=64, ge=8)
    intermediate_size: int = Field(default=176, ge=8)
    num_hidden_layers: int = Field(default=2, ge=1)
    num_attention_heads: int = Field(default=4, ge=1)
    max_position_embeddings: int = Field(default=1024, ge=64)
    seed: int = 0
    # Full-parameter pretraining on the seed texts, so the tiny base is a (very) small
    # language model rather than random weights and adapter evaluation means something.
    pretrain_steps: int = Field(default=150, ge=0)
    pretrain_learning_rate: float = Field(default=3e-3, gt=0)
    pretrain_batch_size: int = Field(default=16, ge=1)


class AutomationConfig(_Strict):
    """How a deployment keeps the graph fresh (schedules, sensors, declarative automation)."""

    # Retrain training sets and adapters when their corpus changes (AutomationCondition.eager).
    retrain_on_corpus_change: bool = True
    # Cron of the full corpus refresh: every seed table, then every shard of every source.
    refresh_cron: str = "0 3 * * 0"
    refresh_timezone: str = "UTC"
    # Whether the seed-file sensors and the refresh schedule start running when deployed;
    # either way they can be switched on and off in the Dagster UI.
    sensors_running: bool = False
    schedule_running: bool = False
    seed_sensor_interval_s: int = Field(default=60, ge=5)

    @field_validator("refresh_cron")
    @classmethod
    def _five_cron_fields(cls, value: str) -> str:
        # The schedule checks the fields themselves; this catches the common slip early.
        if len(value.split()) != 5:
            raise ValueError(f"'{value}' is not a cron expression of five fields (minute hour day month weekday)")
        return value


class TurnLengthConfig(_Strict):
    """Bounds on the characters of one turn (after stripping); None means unbounded."""

    min_chars: int | None = Field(default=2, ge=1)
    max_chars: int | None = Field(default=8000, ge=1)


class RepetitionConfig(_Strict):
    """Degenerate, looping text: repeated word n-grams inside a turn, or a turn said twice."""

    enabled: bool = True
    ngram: int = Field(default=3, ge=1)
    # A turn fails when this share of its word n-grams repeat an earlier n-gram of the turn.
    max_repeated_ngram_fraction: float = Field(default=0.3, gt=0.0, le=1.0)
    # Turns shorter than this many words are too short to judge.
    min_words: int = Field(default=20, ge=1)
    # A conversation fails when one speaker says the same turn twice (case and spaces ignored).
    repeated_turns: bool = True


class LanguageFilterConfig(_Strict):
    """The offline language identifier (lingua) applied where a source declares a language."""

    enabled: bool = True
    # Languages the identifier chooses among (ISO 639-1); fewer is faster. Must hold every declared language.
    candidates: list[str] = Field(
        default_factory=lambda: ["en", "fr", "de", "es", "pt", "it", "nl", "ru", "zh", "ja", "ko", "ar", "hi", "tr"],
        min_length=2,
    )
    # A conversation fails when the declared language's confidence on its sample is below this.
    min_confidence: float = Field(default=0.3, ge=0.0, le=1.0)
    # The sample: the first chars of each turn, up to a total, so every turn is looked at.
    chars_per_turn: int = Field(default=120, ge=10)
    max_sample_chars: int = Field(default=480, ge=10)
    # For English: a sample with at least this share of common English function words is
    # English without running the identifier (see core/langid.py); null sends every sample to it.
    english_word_share: float | None = Field(default=0.15, gt=0.0, le=1.0)


class ScrubConfig(_Strict):
    """Replace personal data in kept turns by a placeholder; each replacement is counted."""

    emails: bool = False
    phones: bool = False
    urls: bool = False


class NearDedupConfig(_Strict):
    """Near-duplicate removal by MinHash LSH (datasketch) across an adapter's training set.

    Two conversations are near duplicates when the Jaccard similarity of their sets of
    word ``shingle_words``-grams is at least ``threshold``. ``num_perm`` permutations
    give a Jaccard estimate with standard error about sqrt(J(1-J)/num_perm) (0.04 at
    J=0.7 with 128); LSH bands and rows are chosen by datasketch for the threshold.
    """

    enabled: bool = True
    threshold: float = Field(default=0.7, gt=0.0, lt=1.0)
    num_perm: int = Field(default=128, ge=16, le=1024)
    shingle_words: int = Field(default=3, ge=1, le=16)
    seed: int = 1


class CorpusConfig(_Strict):
    """Which conversations the corpus keeps. Every filter has a reason code and can be turned off."""

    min_exchanges: int = Field(default=1, ge=1)
    turn_length: TurnLengthConfig = TurnLengthConfig()
    refusals: bool = True
    openai_mentions: bool = True
    role_confusion: bool = True
    # finish_reason=length: "keep_complete" drops the cut-off last turn and keeps the rest.
    truncated: Literal["keep_complete", "drop"] = "keep_complete"
    repetition: RepetitionConfig = RepetitionConfig()
    language: LanguageFilterConfig = LanguageFilterConfig()
    scrub: ScrubConfig = ScrubConfig()
    near_dedup: NearDedupConfig = NearDedupConfig()
    # Asset check: warn when a corpus shard keeps less than this share of its transcripts.
    min_kept_ratio: float = Field(default=0.5, ge=0.0, le=1.0)


class PipelineConfig(_Strict):
    teacher: TeacherConfig = TeacherConfig()
    corpus: CorpusConfig = CorpusConfig()
    automation: AutomationConfig = AutomationConfig()
    tiny_base: TinyBaseConfig = TinyBaseConfig()
    sources: list[SourceConfig] = Field(min_length=1)
    adapters: list[AdapterConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_references(self) -> "PipelineConfig":
        names = [s.name for s in self.sources]
        for name in {n for n in names if names.count(n) > 1}:
            raise ValueError(f"source '{name}' is declared twice")
        adapter_names = [a.name for a in self.adapters]
        for name in {n for n in adapter_names if adapter_names.count(n) > 1}:
            raise ValueError(f"adapter '{name}' is declared twice")
        for adapter in self.adapters:
            for source in adapter.sources:
                if source not in names:
                    raise ValueError(
                        f"adapter '{adapter.name}' uses source '{source}', which is not declared "
                        f"(declared: {', '.join(names)})"
                    )
        return self

    def source(self, name: str) -> SourceConfig:
        return next(s for s in self.sources if s.name == name)

    def adapter(self, name: str) -> AdapterConfig:
        return next(a for a in self.adapters if a.name == name)


def _format_validation_error(path: Path, error: ValidationError) -> str:
    lines = [f"invalid configuration in {path}:"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def config_path() -> Path:
    return Path(os.environ.get("BAIZE_CONFIG") or DEFAULT_CONFIG_PATH)


def load_config(path: Path | str | None = None) -> PipelineConfig:
    """Read and validate the pipeline configuration; errors name the file and the key."""
    path = Path(path) if path is not None else config_path()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse configuration file {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"configuration file {path} must hold a mapping at the top level")
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc)) from None


def output_dir() -> Path:
    """Root of every generated file; ``BAIZE_OUTPUT_DIR`` moves it."""
    return Path(os.environ.get("BAIZE_OUTPUT_DIR") or DEFAULT_OUTPUT_DIR).resolve()
