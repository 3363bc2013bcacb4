"""LoRA fine-tuning of a causal LM on Baize conversations, in a plain PyTorch loop.

The loop is small on purpose (``transformers.Trainer`` is slow to import and hides the
loss masking): AdamW (fused where torch can), linear warmup then linear decay, gradient
accumulation to the effective batch, length-grouped or packed micro-batches, the loss
computed at the labeled positions only (:mod:`.lm_loss`), a held-out eval split,
checkpoints that a rerun resumes from (:mod:`.checkpoints`), and a seeded order, so the
same configuration and data give the same adapter, on one process or data-parallel over
the processes of a ``torchrun`` / ``accelerate launch`` (:mod:`.distributed`).
Conversations longer than the cutoff are split at turn boundaries or dropped, and
counted, never silently truncated.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import peft
import torch
import transformers
from peft import LoraConfig as PeftLoraConfig, PeftModel, get_peft_model
from transformers import AutoTokenizer

from ..config.pipeline import AdapterConfig, TrainingConfig
from ..corpus.eval_split import MIN_CONVERSATIONS_FOR_EVAL, eval_count
from ..model.base import (
    device_and_dtype,
    export_merged,
    load_base_model,
    lora_targets,
    quiet_peft_deprecation,
    resolve_base_model,
)
from ..model.batching import IGNORE_INDEX, Sample, collate
from ..model.lm_loss import predicted_tokens, summed_loss
from ..prompts import Turn, conversation_segments, render_conversation
from ..storage import staged_output_dir
from .checkpoints import (
    CHECKPOINT_FILE,
    adapter_weights_digest,
    load_checkpoint,
    load_trainable_state,
    run_fingerprint,
    save_checkpoint,
    trainable_state,
)
from .distributed import evaluate_shared, launch_processes, restore_rng
from .optimization import accumulation_steps, lr_factor, make_optimizer, micro_batches, optimizer_steps
from .packing import collate_packed, pack_rows, packing_layout

__all__ = ["train_adapter", "train_from_training_set"]

MAX_WARMUP_FRACTION = 0.1  # tiny runs would otherwise spend every step warming up
MAX_GRAD_NORM = 1.0  # Hugging Face Trainer's default clipping
SUMMARY_FILE = "training_summary.json"
CONFIG_FILE = "training_config.json"
LOSS_CURVE_FILE = "loss_curve.png"
MERGED_DIR = "merged"


def encode_with_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` and each token's character span, with BOS prepended if any.

    BOS is added here rather than by the tokenizer's post-processor so training and
    ``baize chat`` see the same ids whichever tokenizer the base model ships.
    """
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoding["input_ids"])
    offsets = [tuple(span) for span in encoding["offset_mapping"]]
    if tokenizer.bos_token_id is not None:
        ids.insert(0, tokenizer.bos_token_id)
        offsets.insert(0, (0, 0))
    return ids, offsets


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` as the model is trained on them (BOS first when there is one)."""
    return encode_with_offsets(tokenizer, text)[0]


def build_sample(turns: Sequence[Turn], tokenizer, loss_on: str, context_turns: int = 0) -> Sample:
    """Tokenize one conversation and label the tokens the loss is computed on.

    With ``loss_on="ai"`` a token is labeled when its last character lies in an AI
    piece of :func:`conversation_segments`: a token such as ``" I"`` whose leading
    space belongs to the ``[|AI|] `` marker is still the first word of the answer.
    The first ``context_turns`` turns (complete exchanges repeated from an earlier
    sample of a split conversation) are context only and never labeled.
    """
    if loss_on == "last_ai":  # everything before the last AI turn is context
        context_turns = max(context_turns, max((i for i, t in enumerate(turns) if t.role == "ai"), default=0))
        loss_on = "ai"
    segments = conversation_segments(turns)
    text = "".join(piece for piece, _ in segments)
    in_ai_piece = []
    for piece, is_ai in segments:
        in_ai_piece.extend([is_ai] * len(piece))
    context_ai_turns = sum(turn.role == "ai" for turn in turns[:context_turns])
    context_end = 0  # the context ends with the AI piece of its last AI turn
    for piece, is_ai in segments:
        if context_ai_turns == 0:
            break
        context_end += len(piece)
        context_ai_turns -= is_ai
    ids, offsets = encode_with_offsets(tokenizer, text)
    labels = []
    for token_id, (start, end) in zip(ids, offsets):
        last_char = end - 1 if end > start else start
        after_context = last_char >= context_end
        if loss_on == "all":
            labeled = after_context
        else:
            labeled = after_context and end > start and in_ai_piece[last_char]
        labels.append(token_id if labeled else IGNORE_INDEX)
    return Sample(ids, labels)


def exchanges_of(turns: Sequence[Turn]) -> list[list[Turn]]:
    """The conversation as exchanges: human turn(s) followed by the AI turn(s) answering them."""
    exchanges: list[list[Turn]] = []
    for turn in turns:
        if not exchanges or (turn.role == "human" and exchanges[-1][-1].role == "ai"):
            exchanges.append([])
        exchanges[-1].append(turn)
    return exchanges


@dataclass
class FitStats:
    """What fitting conversations into the cutoff did, for the summary and metadata."""

    conversations: int = 0
    samples: int = 0
    conversations_split: int = 0
    conversations_dropped: int = 0
    exchanges_dropped: int = 0  # single exchanges longer than the cutoff on their own

    def add(self, other: "FitStats") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def fit_conversation(turns: Sequence[Turn], tokenizer, training: TrainingConfig) -> tuple[list[Sample], FitStats]:
    """The samples of one conversation, none longer than ``training.cutoff_len``.

    A conversation that fits is one sample. A longer one is dropped (``overflow:
    drop``) or cut at exchange boundaries (``overflow: split``): each piece repeats the
    exchanges just before it as unlabeled context, up to ``split_context_fraction`` of
    the cutoff, so every AI turn is trained once and with what led to it. An exchange
    too long to fit even alone is left out and counted.
    """
    cutoff = training.cutoff_len
    stats = FitStats(conversations=1)
    whole = build_sample(turns, tokenizer, training.loss_on)
    if len(whole.input_ids) <= cutoff:
        stats.samples = 1
        return [whole], stats
    if training.overflow == "drop":
        stats.conversations_dropped = 1
        return [], stats

    exchanges = exchanges_of(turns)

    def length(first: int, end: int) -> int:
        return len(encode(tokenizer, render_conversation([t for ex in exchanges[first:end] for t in ex])))

    context_budget = int(training.split_context_fraction * cutoff)
    samples: list[Sample] = []
    start = floor = 0  # floor: context never reaches back past a dropped exchange
    while start < len(exchanges):
        context = start
        while context > floor and length(context - 1, start) <= context_budget:
            context -= 1
        end = start
        while True:
            while end < len(exchanges) and length(context, end + 1) <= cutoff:
                end += 1
            if end > start or context == start:
                break
            context += 1  # give up context to make room for one new exchange
        if end == start:
            stats.exchanges_dropped += 1
            start = floor = start + 1
            continue
        context_turns = sum(len(ex) for ex in exchanges[context:start])
        piece = [t for ex in exchanges[context:end] for t in ex]
        samples.append(build_sample(piece, tokenizer, training.loss_on, context_turns))
        start = end
    # A piece with nothing to learn (all context, as under loss_on "last_ai") is no sample.
    samples = [sample for sample in samples if any(label != IGNORE_INDEX for label in sample.labels)]
    stats.samples = len(samples)
    stats.conversations_split = int(len(samples) > 1)
    stats.conversations_dropped = int(not samples)
    return samples, stats


def fit_conversations(
    conversations: Sequence[Sequence[Turn]], tokenizer, training: TrainingConfig
) -> tuple[list[Sample], FitStats]:
    samples: list[Sample] = []
    stats = FitStats()
    for turns in conversations:
        fitted, fit_stats = fit_conversation(turns, tokenizer, training)
        samples += fitted
        stats.add(fit_stats)
    return samples, stats


def split_by_hash(texts: Sequence[str], n_eval: int) -> tuple[list[int], list[int]]:
    """Indices of the train and eval conversations, both ordered by content hash.

    Ordering by the hash of the text makes the split, and the training order built on
    it, independent of the order the conversations arrive in.
    """
    order = sorted(range(len(texts)), key=lambda i: (hashlib.sha256(texts[i].encode()).hexdigest(), i))
    return order[n_eval:], order[:n_eval]


def held_out_split(
    conversations: Sequence[Sequence[Turn]], eval_size: int | float
) -> tuple[list[Sequence[Turn]], list[Sequence[Turn]], str | None]:
    """The train and eval conversations of a run given no eval split, each in content-hash order.

    As many are held out as :func:`.eval_split.eval_count` says, the rule the training set
    follows too; the third item says why none are, if none are.
    """
    n_eval = eval_count(len(conversations), eval_size)
    train_ids, eval_ids = split_by_hash([render_conversation(turns) for turns in conversations], n_eval)
    too_few = f"no eval set: {len(conversations)} conversations, fewer than {MIN_CONVERSATIONS_FOR_EVAL}"
    note = None if n_eval else too_few
    return [conversations[i] for i in train_ids], [conversations[i] for i in eval_ids], note


def _hash_ordered(conversations: Sequence[Sequence[Turn]]) -> list[Sequence[Turn]]:
    """Conversations in content-hash order, as split_by_hash orders a split."""
    order = split_by_hash([render_conversation(turns) for turns in conversations], 0)[0]
    return [conversations[i] for i in order]


def format_loss(loss: float | None) -> str:
    return "n/a (no labeled tokens)" if loss is None else f"{loss:.4f}"


def write_loss_curve(step_losses: Sequence[float], eval_history: Sequence[dict], path: Path) -> None:
    """A PNG of the train loss per optimizer step and the eval loss at each evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    axes.plot(range(1, len(step_losses) + 1), step_losses, label="train loss", linewidth=1)
    evaluated = [entry for entry in eval_history if entry["eval_loss"] is not None]
    if evaluated:
        axes.plot([e["step"] for e in evaluated], [e["eval_loss"] for e in evaluated], "o-", label="eval loss")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss per token")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


@dataclass
class _Progress:
    """Everything that changes during training and is checkpointed."""

    step: int = 0
    tokens_seen: int = 0  # real (non-pad) tokens fed to the model
    padded_tokens: int = 0  # every token position fed, pads included
    trained_tokens: int = 0  # tokens the loss was computed on
    samples_seen: int = 0
    train_seconds: float = 0.0
    train_cpu_seconds: float = 0.0  # CPU time of the process's threads, steadier than wall time on a shared machine
    step_losses: list[float] = field(default_factory=list)
    eval_history: list[dict] = field(default_factory=list)
    best_step: int | None = None
    best_eval_loss: float | None = None


def train_adapter(
    conversations: Sequence[Sequence[Turn]],
    adapter: AdapterConfig,
    base_model: str,
    out_dir: Path,
    log: Callable[[str], None] = print,
    data_version: str | None = None,
    eval_conversations: Sequence[Sequence[Turn]] | None = None,
    checkpoint_dir: Path | None = None,
    init_adapter: Path | None = None,
) -> dict:
    """Train ``adapter``'s LoRA on ``conversations`` over ``base_model`` and save it into ``out_dir``.

    ``base_model`` is a local directory or a hub id. ``out_dir`` receives the adapter,
    the tokenizer, the training config, the summary and a loss curve together, or
    nothing if training fails. ``training.max_steps`` caps the optimizer steps that
    ``training.epochs`` gives. With ``eval_conversations`` (a split made upstream, e.g.
    by the training-set asset) all of ``conversations`` are trained on; without,
    ``training.eval_size`` are held out. With ``checkpoint_dir`` the state is saved
    every ``training.checkpoint_steps`` steps and a rerun of the same training resumes
    from it; it is removed once the adapter is saved. With ``init_adapter`` (a saved
    adapter of the same base) training starts from its LoRA weights and settings, as
    self-distillation's v2 starts from v1. Returns the summary.
    """
    started = time.perf_counter()
    if not conversations:
        raise ValueError(f"no conversations to train adapter '{adapter.name}' on")
    training = adapter.training
    base_ref = resolve_base_model(base_model)
    # This process, or those of a torchrun / accelerate launch: each takes its GPU before any other CUDA call.
    processes = launch_processes(training)
    dtype = device_and_dtype(training.precision)[1]
    device = processes.device
    log = processes.main_only(log)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None

    tokenizer = AutoTokenizer.from_pretrained(base_ref)
    if not tokenizer.is_fast:
        raise ValueError(f"the tokenizer of {base_ref} is not a fast tokenizer; label masking needs its offsets")
    # Padded positions are masked out, so any id will do when the tokenizer has no pad token.
    pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
    if eval_conversations is None:
        train_turns, eval_turns, eval_note = held_out_split(conversations, training.eval_size)
    else:
        train_turns = _hash_ordered(conversations)
        eval_turns = _hash_ordered(eval_conversations)
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

    model = load_base_model(base_ref, training, device, dtype)
    targets, missing_targets = lora_targets(model, adapter.lora.target_modules, base_ref)
    if missing_targets:
        log(f"LoRA target modules not in {base_ref}, skipped: {', '.join(missing_targets)}")
    eval_loss_before = evaluate_shared(model, eval_samples, training.micro_batch_size, pad_id, processes)
    if training.gradient_checkpointing:
        # Before peft wraps the model; transformers also makes the embeddings' output require
        # grad, so recomputed blocks of the frozen base still carry gradients to the LoRA weights.
        model.activation_checkpointing_enable({"use_reentrant": False})
    if training.packing:
        layout = packing_layout(model, training.cutoff_len)
        rows = pack_rows([len(s.input_ids) for s in train_samples], training.cutoff_len)
        units = [[train_samples[i] for i in row] for row in rows]
        log(f"packing {len(train_samples)} samples into {len(units)} rows of <= {training.cutoff_len} tokens, {layout}")
    else:
        units = [[sample] for sample in train_samples]

    lora_config = PeftLoraConfig(
        r=adapter.lora.r,
        lora_alpha=adapter.lora.alpha,
        lora_dropout=adapter.lora.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(training.seed)  # LoRA init and dropout
    with quiet_peft_deprecation():
        if init_adapter is None:
            model = get_peft_model(model, lora_config)
        else:
            model = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
            log(f"starting from the LoRA weights of {init_adapter} (its r, alpha and targets)")
    trainable_parameters, total_parameters = model.get_nb_trainable_parameters()
    trainable = [p for p in model.parameters() if p.requires_grad]
    processes.copy_from_main(trainable)  # every process starts from the same LoRA weights
    if processes.rank:
        torch.manual_seed(training.seed + processes.rank)  # dropout masks of its own
    optimizer = make_optimizer(trainable, training)
    total_steps = optimizer_steps(len(units), training)
    warmup_steps = min(training.warmup_steps, math.ceil(MAX_WARMUP_FRACTION * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, warmup_steps, total_steps))
    # fp16 gradients underflow without loss scaling; with other dtypes the scaler is a no-op.
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=dtype == torch.float16)
    accumulation = accumulation_steps(training)

    start_ref = base_ref if init_adapter is None else f"{base_ref}+{adapter_weights_digest(Path(init_adapter))}"
    fingerprint = run_fingerprint(adapter, start_ref, train_samples + eval_samples)
    progress = _Progress()
    best_state: dict[str, torch.Tensor] | None = None
    checkpoint = processes.from_main(lambda: load_checkpoint(checkpoint_dir, fingerprint, log))
    if checkpoint is not None:
        load_trainable_state(model, checkpoint["adapter"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        restore_rng(checkpoint, processes, training.seed)
        progress = _Progress(**checkpoint["progress"])
        best_state = checkpoint["best_adapter"]
        log(f"resuming '{adapter.name}' from the checkpoint at step {progress.step}/{total_steps}")
    resumed_from_step = progress.step

    log(
        f"training '{adapter.name}' on {base_ref} ({device}, {str(dtype).removeprefix('torch.')}, "
        f"quantization {training.quantization}): {len(train_samples)} train / {len(eval_samples)} eval samples, "
        f"{total_steps} steps of {accumulation} x {training.micro_batch_size}, LoRA on {', '.join(targets)}"
    )
    if eval_note:
        log(eval_note)

    def save_state() -> None:
        rngs = processes.gather(torch.get_rng_state())  # every process's dropout stream
        if not processes.is_main:
            return
        save_checkpoint(
            checkpoint_dir,
            {
                "fingerprint": fingerprint,
                "adapter": trainable_state(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rngs[0],
                "process_rngs": rngs,
                "progress": progress.__dict__,
                "best_adapter": best_state,
            },
        )

    model.train()
    batches = micro_batches([sum(len(s.input_ids) for s in unit) for unit in units], training)
    width = training.cutoff_len if training.batching == "pad_to_cutoff" else None

    def collate_units(unit_samples: list[list[Sample]]) -> dict[str, torch.Tensor]:
        if training.packing:
            return collate_packed(unit_samples, pad_id, device, layout, dtype, width)
        return collate([unit[0] for unit in unit_samples], pad_id, device, width)

    for _ in range(progress.step * accumulation):  # the micro-batches a resumed run already trained on
        next(batches)
    log_every = max(1, total_steps // 50)
    for step in range(progress.step, total_steps):
        step_started, step_cpu_started = time.perf_counter(), time.process_time()
        # This process's share of the step's micro-batches (all of them when it is the only one).
        step_units = processes.share([[units[i] for i in next(batches)] for _ in range(accumulation)])
        step_batches = [collate_units(unit_samples) for unit_samples in step_units]
        (step_tokens,) = processes.sum([sum(predicted_tokens(batch) for batch in step_batches)])
        step_loss, tokens, padded, samples = 0.0, 0, 0, 0
        for unit_samples, batch in zip(step_units, step_batches):
            loss = summed_loss(model, batch) / max(1, step_tokens)
            scaler.scale(loss).backward()
            step_loss += loss.item()
            tokens += sum(len(s.input_ids) for unit in unit_samples for s in unit)
            padded += batch["input_ids"].numel()
            samples += sum(len(unit) for unit in unit_samples)
        processes.sum_gradients(trainable)
        step_loss, tokens, padded, samples = processes.sum([step_loss, tokens, padded, samples])
        progress.tokens_seen += int(tokens)
        progress.padded_tokens += int(padded)
        progress.samples_seen += int(samples)
        progress.trained_tokens += int(step_tokens)
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
        lr = scheduler.get_last_lr()[0]
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        progress.train_seconds += time.perf_counter() - step_started
        progress.train_cpu_seconds += time.process_time() - step_cpu_started
        progress.step_losses.append(step_loss)
        progress.step = done = step + 1
        if done % log_every == 0 or done in (1, total_steps):
            log(f"step {done}/{total_steps} loss {step_loss:.4f} lr {lr:.2e}")
        if eval_samples and (done % training.eval_steps == 0 or done == total_steps):
            eval_loss = evaluate_shared(model, eval_samples, training.micro_batch_size, pad_id, processes)
            progress.eval_history.append({"step": done, "eval_loss": eval_loss})
            log(f"step {done}/{total_steps} eval loss {format_loss(eval_loss)}")
            if eval_loss is not None and (progress.best_eval_loss is None or eval_loss < progress.best_eval_loss):
                progress.best_step, progress.best_eval_loss = done, eval_loss
                best_state = trainable_state(model)
        if checkpoint_dir is not None and done % training.checkpoint_steps == 0 and done < total_steps:
            save_state()

    final_eval_loss = progress.eval_history[-1]["eval_loss"] if progress.eval_history else None
    kept_best = training.keep_best and best_state is not None and progress.best_step != total_steps
    if kept_best:
        load_trainable_state(model, best_state)
        log(f"keeping the weights of step {progress.best_step} (best eval loss {progress.best_eval_loss:.4f})")
    summary = {
        "adapter": adapter.name,
        "base_model": base_ref,
        "data_version": data_version,
        "init_adapter": str(init_adapter) if init_adapter is not None else None,
        "lora": {**adapter.lora.model_dump(), "target_modules": targets, "missing_target_modules": missing_targets},
        "training": training.model_dump(),
        "n_conversations": train_fit.conversations + eval_fit.conversations,
        "n_train": train_fit.conversations,
        "n_eval": eval_fit.conversations,
        "train_samples": len(train_samples),
        "eval_samples": len(eval_samples),
        "conversations_split": train_fit.conversations_split + eval_fit.conversations_split,
        "conversations_dropped": train_fit.conversations_dropped + eval_fit.conversations_dropped,
        "exchanges_dropped": train_fit.exchanges_dropped + eval_fit.exchanges_dropped,
        "eval_note": eval_note,
        "steps": total_steps,
        "resumed_from_step": resumed_from_step,
        "gradient_accumulation_steps": accumulation,
        "processes": processes.world_size,
        "packed_rows": len(units) if training.packing else None,
        "optimizer": "adamw_fused" if optimizer.defaults.get("fused") else "adamw",
        "warmup_steps": warmup_steps,
        "epochs_seen": progress.samples_seen / len(train_samples),
        "tokens_seen": progress.tokens_seen,
        "padded_tokens": progress.padded_tokens,
        "real_token_ratio": progress.tokens_seen / max(1, progress.padded_tokens),
        "trained_tokens": progress.trained_tokens,
        "train_seconds": round(progress.train_seconds, 3),
        "train_cpu_seconds": round(progress.train_cpu_seconds, 3),
        "tokens_per_second": progress.tokens_seen / max(progress.train_seconds, 1e-9),
        "train_loss_first": progress.step_losses[0],
        "train_loss_final": progress.step_losses[-1],
        "eval_loss_before": eval_loss_before,
        "eval_loss_final": final_eval_loss,
        "best_step": progress.best_step,
        "eval_loss_after": progress.best_eval_loss if kept_best else final_eval_loss,
        "saved_step": progress.best_step if kept_best else total_steps,
        "eval_history": progress.eval_history,
        "trainable_parameters": trainable_parameters,
        "total_parameters": total_parameters,
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    }
    if not processes.is_main:  # process 0 writes the adapter directory; the others wait for it
        processes.barrier()
        return summary
    with staged_output_dir(out_dir) as staging:
        from ..model.chat_template import attach_chat_template
        from .model_card import write_model_card  # it reads this module's file names

        model.save_pretrained(staging)
        attach_chat_template(tokenizer)
        tokenizer.save_pretrained(staging)
        run_config = {"adapter": adapter.model_dump(mode="json"), "base_model": base_ref, "data_version": data_version}
        (staging / CONFIG_FILE).write_text(json.dumps(run_config, indent=2) + "\n", encoding="utf-8")
        write_loss_curve(progress.step_losses, progress.eval_history, staging / LOSS_CURVE_FILE)
        if training.export_merged:
            export_merged(base_ref, staging, tokenizer, staging / MERGED_DIR)
        summary["wall_time_s"] = round(time.perf_counter() - started, 3)
        (staging / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        write_model_card(staging)
    if checkpoint_dir is not None:
        (checkpoint_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
    log(f"saved adapter '{adapter.name}' to {out_dir} in {summary['wall_time_s']} s")
    processes.barrier()
    return summary


def read_summary(adapter_dir: Path) -> dict:
    return json.loads((Path(adapter_dir) / SUMMARY_FILE).read_text(encoding="utf-8"))


def train_from_training_set(
    adapter: AdapterConfig,
    base_model: str,
    training_set: Path,
    out_dir: Path,
    checkpoint_dir: Path | None,
    log: Callable[[str], None] = print,
    init_adapter: Path | None = None,
) -> dict:
    """Train ``adapter`` on a training-set Parquet file (its ``train`` and ``eval`` splits)."""
    from ..corpus import build as corpus
    from ..storage import read_parquet

    frame = read_parquet(Path(training_set))
    missing = {"turns", "split", "seed_id", "text"} - set(frame.columns)
    if missing:
        raise ValueError(f"training set {training_set} lacks the column(s) {', '.join(sorted(missing))}")
    unknown = sorted(set(frame["split"]) - {"train", "eval"})
    if unknown:
        raise ValueError(f"training set {training_set}: column 'split' holds unknown value(s) {unknown}")
    train, held_out = frame[frame["split"] == "train"], frame[frame["split"] == "eval"]
    data_version = corpus.data_version(frame)
    log(
        f"training {adapter.name} on {len(train)} conversations, {len(held_out)} held out "
        f"(data {data_version}), from {base_model}"
    )
    return train_adapter(
        corpus.turns_of(train),
        adapter,
        base_model,
        out_dir,
        log=log,
        data_version=data_version,
        eval_conversations=corpus.turns_of(held_out),
        checkpoint_dir=checkpoint_dir,
        init_adapter=init_adapter,
    )
