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


class TeacherConfig(_Strict):
    """The chat model that writes self-chat transcripts.

    The endpoint and key come from ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` so they
    never land in a file that is committed or recorded.
    """

    model: str = "baize-simulated-teacher"
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=1024, ge=1)
    max_concurrency: int = Field(default=8, ge=1, le=1024)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0)


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


class PipelineConfig(_Strict):
    teacher: TeacherConfig = TeacherConfig()
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
