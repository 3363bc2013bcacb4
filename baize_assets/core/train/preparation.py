"""A LoRA training run made ready: its samples, the base model with its LoRA, the optimizer and schedule.

Shared by both objectives: the supervised loop of :mod:`.trainer` takes all of it; the
preference loop of :mod:`.preference` reuses the tokenizer and LoRA loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from peft import LoraConfig as PeftLoraConfig, PeftModel, get_peft_model
from transformers import AutoTokenizer

from ..config.pipeline import AdapterConfig, TrainingConfig
from ..corpus.eval_split import hash_ordered, held_out_split
from ..model.base import device_and_dtype, load_base_model, lora_targets, quiet_peft_deprecation
from ..model.batching import Sample, padding_id
from ..model.samples import FitStats, fit_conversations
from ..prompts import Turn
from .distributed import Processes, evaluate_shared
from .optimization import accumulation_steps, capped_warmup_steps, lr_factor, make_optimizer, optimizer_steps
from .packing import pack_rows, packing_layout


@dataclass
class TrainingData:
    """The run's train and eval samples and what fitting them into the cutoff did."""

    train_samples: list[Sample]
    eval_samples: list[Sample]
    train_fit: FitStats
    eval_fit: FitStats
    eval_note: str | None


@dataclass
class TrainingRun:
    """The model, the optimizer and what every optimizer step needs."""

    adapter: AdapterConfig
    base_ref: str
    processes: Processes
    dtype: torch.dtype
    tokenizer: Any
    pad_id: int
    model: Any
    targets: list[str]
    missing_targets: list[str]
    units: list[list[Sample]]  # what a micro-batch index picks: one sample, or one packed row of them
    layout: Any  # the packing layout, None without packing
    trainable: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    total_steps: int
    warmup_steps: int
    accumulation: int
    eval_loss_before: float | None

    @property
    def training(self) -> TrainingConfig:
        return self.adapter.training


def load_fast_tokenizer(base_ref: str):
    tokenizer = AutoTokenizer.from_pretrained(base_ref)
    if not tokenizer.is_fast:
        raise ValueError(f"the tokenizer of {base_ref} is not a fast tokenizer; label masking needs its offsets")
    return tokenizer


def prepare_samples(
    conversations: Sequence[Sequence[Turn]],
    eval_conversations: Sequence[Sequence[Turn]] | None,
    tokenizer,
    adapter: AdapterConfig,
    log: Callable[[str], None],
) -> TrainingData:
    training = adapter.training
    if eval_conversations is None:
        train_turns, eval_turns, eval_note = held_out_split(conversations, training.eval_size)
    else:
        train_turns = hash_ordered(conversations)
        eval_turns = hash_ordered(eval_conversations)
        eval_note = None if eval_turns else "no eval set: the given eval split is empty"
    train_samples, train_fit = fit_conversations(train_turns, tokenizer, training)
    eval_samples, eval_fit = fit_conversations(eval_turns, tokenizer, training)
    if not train_samples:
        raise ValueError(
            f"no training samples for adapter '{adapter.name}': all {train_fit.conversations} conversations are "
            f"longer than cutoff_len {training.cutoff_len} (overflow: {training.overflow})"
        )
    if train_fit.conversations_split or train_fit.conversations_dropped or train_fit.exchanges_dropped:
        log(
            f"longer than cutoff_len {training.cutoff_len}: {train_fit.conversations_split} conversations split, "
            f"{train_fit.conversations_dropped} dropped, {train_fit.exchanges_dropped} oversized exchanges left out"
        )
    return TrainingData(train_samples, eval_samples, train_fit, eval_fit, eval_note)


def attach_lora(model, adapter: AdapterConfig, targets: list[str], init_adapter: Path | None, log: Callable):
    """``model`` with a fresh trainable LoRA of ``adapter``'s settings, or with ``init_adapter``'s weights."""
    lora_config = PeftLoraConfig(
        r=adapter.lora.r,
        lora_alpha=adapter.lora.alpha,
        lora_dropout=adapter.lora.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(adapter.training.seed)  # LoRA init and dropout
    with quiet_peft_deprecation():
        if init_adapter is None:
            return get_peft_model(model, lora_config)
        model = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
    log(f"starting from the LoRA weights of {init_adapter} (its r, alpha and targets)")
    return model


def setup_run(
    adapter: AdapterConfig,
    base_ref: str,
    processes: Processes,
    tokenizer,
    data: TrainingData,
    init_adapter: Path | None,
    log: Callable[[str], None],
) -> TrainingRun:
    """Base model with its LoRA, micro-batch units, optimizer and schedule, on every process alike."""
    training = adapter.training
    dtype = device_and_dtype(training.precision)[1]
    pad_id = padding_id(tokenizer)
    model = load_base_model(base_ref, training, processes.device, dtype)
    targets, missing_targets = lora_targets(model, adapter.lora.target_modules, base_ref)
    if missing_targets:
        log(f"LoRA target modules not in {base_ref}, skipped: {', '.join(missing_targets)}")
    eval_loss_before = evaluate_shared(model, data.eval_samples, training.micro_batch_size, pad_id, processes)
    if training.gradient_checkpointing:
        # Before peft wraps the model; transformers also makes the embeddings' output require
        # grad, so recomputed blocks of the frozen base still carry gradients to the LoRA weights.
        model.activation_checkpointing_enable({"use_reentrant": False})
    layout = None
    units = [[sample] for sample in data.train_samples]
    if training.packing:
        layout = packing_layout(model, training.cutoff_len)
        rows = pack_rows([len(s.input_ids) for s in data.train_samples], training.cutoff_len)
        units = [[data.train_samples[i] for i in row] for row in rows]
        log(
            f"packing {len(data.train_samples)} samples into {len(units)} rows of <= {training.cutoff_len} tokens, "
            f"{layout}"
        )
    model = attach_lora(model, adapter, targets, init_adapter, log)
    trainable = [p for p in model.parameters() if p.requires_grad]
    processes.copy_from_main(trainable)  # every process starts from the same LoRA weights
    if processes.rank:
        torch.manual_seed(training.seed + processes.rank)  # dropout masks of its own
    optimizer = make_optimizer(trainable, training)
    total_steps = optimizer_steps(len(units), training)
    warmup_steps = capped_warmup_steps(training, total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, warmup_steps, total_steps))
    # fp16 gradients underflow without loss scaling; with other dtypes the scaler is a no-op.
    scaler = torch.amp.GradScaler(torch.device(processes.device).type, enabled=dtype == torch.float16)
    return TrainingRun(
        adapter=adapter,
        base_ref=base_ref,
        processes=processes,
        dtype=dtype,
        tokenizer=tokenizer,
        pad_id=pad_id,
        model=model,
        targets=targets,
        missing_targets=missing_targets,
        units=units,
        layout=layout,
        trainable=trainable,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        accumulation=accumulation_steps(training),
        eval_loss_before=eval_loss_before,
    )
