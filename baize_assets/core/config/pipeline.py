"""The pipeline's configuration: one YAML file, one typed model.

Sources and adapters are declared in ``baize.yaml`` (or the file named by
``BAIZE_CONFIG``); a team adds a domain by adding entries, not Python. Every model
forbids unknown keys and takes values of its exact type only (finite numbers, no
duplicate YAML keys), so a typo fails at load time with the key's path in the message.
"""

from __future__ import annotations

import codecs
import json
import os
import zoneinfo
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .base import PROJECT_ROOT as PROJECT_ROOT, StrictModel, Text, UniqueTexts, no_repeats
from .corpus import (  # the corpus filters' settings are part of this one configuration
    CorpusConfig as CorpusConfig,
    JudgeFilterConfig as JudgeFilterConfig,
    LanguageFilterConfig as LanguageFilterConfig,
    NearDedupConfig as NearDedupConfig,
    RepetitionConfig as RepetitionConfig,
    ScrubConfig as ScrubConfig,
    TurnLengthConfig as TurnLengthConfig,
)
from .cron import cron_problem
from .feedback import (  # Baize v2's settings are part of this one configuration
    TEACHER_REFERENCE,
    JudgeConfig as JudgeConfig,
    SamplingConfig as SamplingConfig,
    SelfDistillationConfig as SelfDistillationConfig,
)
from .teacher import (  # the teacher's settings are part of this one configuration
    BatchConfig as BatchConfig,
    BudgetConfig as BudgetConfig,
    ModelPrice as ModelPrice,
    RateLimitConfig as RateLimitConfig,
    RateLimitStoreConfig as RateLimitStoreConfig,
    StateStoreConfig as StateStoreConfig,
    TeacherConfig as TeacherConfig,
)
from .training import (  # the model and training settings are part of this one configuration
    BUILTIN_BASES as BUILTIN_BASES,
    SMOLLM2_BASE_MODEL as SMOLLM2_BASE_MODEL,
    TINY_BASE_MODEL as TINY_BASE_MODEL,
    AdapterConfig as AdapterConfig,
    LoraConfig as LoraConfig,
    TinyBaseConfig as TinyBaseConfig,
    TrainingConfig as TrainingConfig,
)
from .unique_key_yaml import DuplicateKeyError, load_unique_key_yaml

DEFAULT_CONFIG_PATH = PROJECT_ROOT / "baize.yaml"
DEFAULT_OUTPUT_DIR = PROJECT_ROOT / "data" / "output"

# The key prefix and group of base model assets; no source or adapter may take this name.
BASE_MODELS_OWNER = "base_models"
# The key prefix and group of the cost forecast; reserved too.
COSTS_OWNER = "costs"
RESERVED_OWNERS = {BASE_MODELS_OWNER: "the base model assets", COSTS_OWNER: "the cost forecast"}

SeedFormat = Literal["quora_tsv", "stackoverflow", "medquad", "alpaca_json", "csv", "jsonl", "text"]
SINGLE_TURN_FORMATS = {"alpaca_json"}


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid."""


class SourceConfig(StrictModel):
    """One seed source: where its seeds are, how to read them, how to shard them."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    format: SeedFormat
    paths: UniqueTexts = Field(min_length=1)
    domain: Text = "general"
    shards: int = Field(default=4, ge=1, le=4096)
    # Column (csv) or field (jsonl) holding the seed text, for the generic formats.
    text_field: Text | None = None
    # Character encoding of the text files (StackSample's Questions.csv is latin-1).
    encoding: str = "utf-8"
    # A broken file found inside a folder path (one MedQuAD XML of thousands) is
    # quarantined and counted, or fails the source; a file named in paths always fails.
    on_bad_file: Literal["quarantine", "fail"] = "quarantine"
    # Longer seeds are quarantined: a seed is a question, and it is sent with every request.
    max_seed_chars: int = Field(default=4000, ge=16)
    # Seeds are either self-chatted by the teacher or, like Alpaca, already an
    # instruction/response pair used as single-turn data.
    self_chat: bool | None = None
    # ISO 639-1 code of the language the corpus must be in; None turns the language filter off.
    language: str | None = Field(default="en", pattern=r"^[a-z]{2}$")

    @field_validator("paths")
    @classmethod
    def _distinct_paths(cls, paths: list[str]) -> list[str]:
        no_repeats([os.path.normpath(p) for p in paths])
        return paths

    @field_validator("encoding")
    @classmethod
    def _text_encoding(cls, encoding: str) -> str:
        try:
            b"\n".decode(encoding, "ignore")  # also refuses codecs that are not text encodings (base64)
        except LookupError:
            raise ValueError(f"unknown text encoding '{encoding}' (e.g. utf-8, latin-1, cp1252, utf-16)") from None
        return encoding

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

    @property
    def is_utf8(self) -> bool:
        return codecs.lookup(self.encoding).name == "utf-8"

    def resolved_paths(self, root: Path = PROJECT_ROOT) -> list[Path]:
        return [p if p.is_absolute() else root / p for p in map(Path, self.paths)]


class AutomationConfig(StrictModel):
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
    def _valid_cron(cls, value: str) -> str:
        if problem := cron_problem(value):
            raise ValueError(f"'{value}' is not a cron schedule: {problem}")
        return value

    @field_validator("refresh_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"'{value}' is not an IANA time zone (e.g. UTC, Europe/Paris)") from None
        return value


class PipelineConfig(StrictModel):
    teacher: TeacherConfig = TeacherConfig()
    corpus: CorpusConfig = CorpusConfig()
    automation: AutomationConfig = AutomationConfig()
    tiny_base: TinyBaseConfig = TinyBaseConfig()
    sources: list[SourceConfig] = Field(min_length=1)
    adapters: list[AdapterConfig] = Field(default_factory=list)
    self_distillation: list[SelfDistillationConfig] = Field(default_factory=list)
    judge: JudgeConfig = JudgeConfig()
    state_store: StateStoreConfig = StateStoreConfig()

    @field_validator("sources", "adapters")
    @classmethod
    def _names_declared_once(cls, entries: list) -> list:
        names = [entry.name for entry in entries]
        for name in dict.fromkeys(n for i, n in enumerate(names) if n in names[:i]):
            raise ValueError(f"'{name}' is declared twice")
        return entries

    @model_validator(mode="after")
    def _check_references(self) -> "PipelineConfig":
        names = [s.name for s in self.sources]
        for reserved, owner in RESERVED_OWNERS.items():
            if reserved in names:
                raise ValueError(f"source name '{reserved}' is reserved for {owner}")
        for adapter in self.adapters:
            for source in adapter.sources:
                if source not in names:
                    raise ValueError(
                        f"adapter '{adapter.name}' uses source '{source}', which is not declared "
                        f"(declared: {', '.join(names)})"
                    )
        adapter_names = [a.name for a in self.adapters]
        for index, plan in enumerate(self.self_distillation):
            if plan.adapter not in adapter_names:
                raise ValueError(
                    f"self_distillation[{index}] improves adapter '{plan.adapter}', which is not declared "
                    f"(declared: {', '.join(adapter_names) or 'none'})"
                )
            if plan.adapter_name in adapter_names:
                raise ValueError(f"self_distillation[{index}]: name '{plan.adapter_name}' is already an adapter's")
            adapter_names.append(plan.adapter_name)
        # Sources and adapters own the first part of their assets' keys (quora/conversations,
        # baize_general/adapter), so one name cannot be both.
        for name in adapter_names:
            if name in names or name in RESERVED_OWNERS:
                raise ValueError(f"adapter name '{name}' is already taken by a source, the base models or the costs")
        try:
            self.judge_teacher()
        except ValidationError as error:
            problems = "; ".join(item["msg"].removeprefix("Value error, ") for item in error.errors())
            raise ValueError(f"judge: {problems}") from None
        if self.judge.reference != TEACHER_REFERENCE and self.judge.reference not in adapter_names:
            raise ValueError(
                f"judge.reference is '{self.judge.reference}': neither 'teacher' nor a declared adapter "
                f"(declared: {', '.join(adapter_names) or 'none'})"
            )
        language = self.corpus.language
        for source in self.sources:
            if language.enabled and source.language is not None and source.language not in language.candidates:
                raise ValueError(
                    f"source '{source.name}' declares language '{source.language}', which is not among "
                    f"corpus.language.candidates ({', '.join(language.candidates)})"
                )
        return self

    def source(self, name: str) -> SourceConfig:
        return next(s for s in self.sources if s.name == name)

    def adapter(self, name: str) -> AdapterConfig:
        return next(a for a in self.adapters if a.name == name)

    def is_judged(self, adapter: str) -> bool:
        """Whether the adapter's evaluation has a judge section (an adapter is not judged against itself)."""
        return self.judge.enabled and self.judge.reference != adapter

    def judge_teacher(self) -> TeacherConfig:
        """The settings of the judge's requests: the teacher's limits, retries, budget, prices and API,
        with the judge's model, sampling and endpoint (``judge`` in the messages they cause)."""
        judge, teacher = self.judge, self.teacher
        settings = TeacherConfig.model_validate({
            **teacher.model_dump(), "model": judge.model or teacher.model, "mode": "v1",
            "temperature": judge.temperature, "top_p": None, "max_tokens": judge.max_tokens,
            "max_answer_chars": None, "reasoning_effort": judge.reasoning_effort, "extra_body": judge.extra_body,
        })
        return settings.as_section("judge", judge.base_url_env or "OPENAI_BASE_URL",
                                   judge.api_key_env or "OPENAI_API_KEY")

    def sampling_teacher(self, plan: SelfDistillationConfig) -> TeacherConfig:
        """The collector's settings for sampling ``plan``'s answers on its serving endpoint: the sampling's
        temperature, top-p and length, the endpoint's concurrency, the teacher's retries; no price, no budget."""
        sampling, teacher = plan.sampling, self.teacher
        endpoint = sampling.endpoint
        settings = TeacherConfig(
            model=endpoint.model, temperature=sampling.temperature, top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens, max_concurrency=endpoint.max_concurrency,
            processes=endpoint.processes, timeout_s=endpoint.timeout_s, max_retries=teacher.max_retries,
            retry_base_s=teacher.retry_base_s, retry_max_s=teacher.retry_max_s,
            rate_limit_store=teacher.rate_limit_store, format_retries=0,
        )
        index = self.self_distillation.index(plan)
        return settings.as_section(f"self_distillation[{index}].sampling.endpoint", endpoint.base_url_env,
                                   endpoint.api_key_env or "")

    def evaluation_training(self, adapter: AdapterConfig) -> TrainingConfig:
        """The settings an adapter's held-out loss is measured with: a Baize v2 adapter trains on its last AI
        turn only, but is evaluated with its v1's loss mask (every AI turn), on v1's held-out conversations,
        so the two losses compare."""
        plan = next((p for p in self.self_distillation if p.adapter_name == adapter.name), None)
        if plan is None:
            return adapter.training
        return adapter.training.model_copy(update={"loss_on": self.adapter(plan.adapter).training.loss_on})

    def distilled_adapter(self, plan: SelfDistillationConfig) -> AdapterConfig:
        """The v2 adapter of ``plan``: v1's base, LoRA and training, its loss on the best answer only."""
        v1 = self.adapter(plan.adapter)
        training = v1.training.model_copy(update={"loss_on": "last_ai"})
        return v1.model_copy(update={"name": plan.adapter_name, "training": training})


def _format_validation_error(path: Path, error: ValidationError) -> str:
    """One line per problem, the first naming the file: ``invalid configuration in F: key.path: message``."""
    problems = []
    for item in error.errors():
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"].removeprefix("Value error, ")
        if item["type"] not in ("extra_forbidden", "value_error") and isinstance(item["input"], (str, int, float)):
            message += f" (got {json.dumps(item['input'], ensure_ascii=False)})"
        where = ".".join(str(part) for part in item["loc"])
        problems.append(f"{where}: {message}" if where else message)
    first, *rest = problems
    return "\n  ".join([f"invalid configuration in {path}: {first}", *rest])


def config_path() -> Path:
    return Path(os.environ.get("BAIZE_CONFIG") or DEFAULT_CONFIG_PATH)


def load_config(path: Path | str | None = None) -> PipelineConfig:
    """Read and validate the pipeline configuration; errors name the file and the key."""
    path = Path(path) if path is not None else config_path()
    try:
        raw = load_unique_key_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except DuplicateKeyError as exc:
        raise ConfigError(f"invalid configuration in {path}: {exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse configuration file {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"configuration file {path} must hold a mapping at the top level")
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc)) from None


def output_dir() -> str:
    """Root of every generated file: ``BAIZE_OUTPUT_DIR``, a folder or an fsspec URL (``s3://bucket/prefix``)."""
    root = os.environ.get("BAIZE_OUTPUT_DIR") or str(DEFAULT_OUTPUT_DIR)
    return root if "://" in root else str(Path(root).resolve())
