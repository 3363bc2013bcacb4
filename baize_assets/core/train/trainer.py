"""LoRA fine-tuning of a causal LM on Baize conversations, in a plain PyTorch loop.

The loop is small on purpose (``transformers.Trainer`` is slow to import and hides the
loss masking): AdamW (fused where torch can), linear warmup then linear decay, gradient
accumulation to the effective batch, length-grouped or packed micro-batches, the loss
computed at the labeled positions only (:mod:`..model.lm_loss`), a held-out eval split,
checkpoints that a rerun resumes from (:mod:`.checkpoints`), and a seeded order, so the
same configuration and data give the same adapter, on one process or data-parallel over
the processes of a ``torchrun`` / ``accelerate launch`` (:mod:`.distributed`).
Conversations become samples in :mod:`..model.samples`; what the run records is
:mod:`.summary`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..config.pipeline import AdapterConfig
from ..model.base import export_merged, resolve_base_model
from ..model.batching import Sample, collate
from ..model.lm_loss import predicted_tokens, summed_loss
from ..prompts import Turn
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
from .optimization import micro_batches
from .packing import collate_packed
from .preparation import TrainingData, TrainingRun, load_fast_tokenizer, prepare_samples, setup_run
from .summary import (
    TrainingProgress,
    fit_figures,
    format_loss,
    library_versions,
    progress_figures,
    save_weights_and_tokenizer,
    write_run_files,
)

__all__ = ["train_adapter", "train_from_training_set"]

MAX_GRAD_NORM = 1.0  # Hugging Face Trainer's default clipping
MERGED_DIR = "merged"


def _resume(run: TrainingRun, checkpoint_dir: Path | None, fingerprint: str, log: Callable[[str], None]):
    """The progress and best weights to go on from: a checkpoint of this very run's, or a fresh start."""
    checkpoint = run.processes.from_main(lambda: load_checkpoint(checkpoint_dir, fingerprint, log))
    if checkpoint is None:
        return TrainingProgress(), None
    load_trainable_state(run.model, checkpoint["adapter"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.scheduler.load_state_dict(checkpoint["scheduler"])
    run.scaler.load_state_dict(checkpoint["scaler"])
    restore_rng(checkpoint, run.processes, run.training.seed)
    progress = TrainingProgress(**checkpoint["progress"])
    log(f"resuming '{run.adapter.name}' from the checkpoint at step {progress.step}/{run.total_steps}")
    return progress, checkpoint["best_adapter"]


def _save_state(
    run: TrainingRun, checkpoint_dir: Path, fingerprint: str, progress: TrainingProgress, best_state
) -> None:
    rngs = run.processes.gather(torch.get_rng_state())  # every process's dropout stream
    if not run.processes.is_main:
        return
    save_checkpoint(
        checkpoint_dir,
        {
            "fingerprint": fingerprint,
            "adapter": trainable_state(run.model),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(),
            "rng": rngs[0],
            "process_rngs": rngs,
            "progress": progress.__dict__,
            "best_adapter": best_state,
        },
    )


def _collate_units(run: TrainingRun, unit_samples: list[list[Sample]]) -> dict[str, torch.Tensor]:
    width = run.training.cutoff_len if run.training.batching == "pad_to_cutoff" else None
    if run.training.packing:
        return collate_packed(unit_samples, run.pad_id, run.processes.device, run.layout, run.dtype, width)
    return collate([unit[0] for unit in unit_samples], run.pad_id, run.processes.device, width)


def _optimizer_step(
    run: TrainingRun, step_units: list[list[list[Sample]]], progress: TrainingProgress
) -> tuple[float, float]:
    """One optimizer step over this process's share of ``step_units`` (one list per micro-batch); its loss and lr."""
    step_started, step_cpu_started = time.perf_counter(), time.process_time()
    processes = run.processes
    step_units = processes.share(step_units)
    step_batches = [_collate_units(run, unit_samples) for unit_samples in step_units]
    (step_tokens,) = processes.sum([sum(predicted_tokens(batch) for batch in step_batches)])
    step_loss, tokens, padded, samples = 0.0, 0, 0, 0
    for unit_samples, batch in zip(step_units, step_batches):
        loss = summed_loss(run.model, batch) / max(1, step_tokens)
        run.scaler.scale(loss).backward()
        step_loss += loss.item()
        tokens += sum(len(s.input_ids) for unit in unit_samples for s in unit)
        padded += batch["input_ids"].numel()
        samples += sum(len(unit) for unit in unit_samples)
    processes.sum_gradients(run.trainable)
    step_loss, tokens, padded, samples = processes.sum([step_loss, tokens, padded, samples])
    progress.tokens_seen += int(tokens)
    progress.padded_tokens += int(padded)
    progress.samples_seen += int(samples)
    progress.trained_tokens += int(step_tokens)
    run.scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_(run.trainable, MAX_GRAD_NORM)
    lr = run.scheduler.get_last_lr()[0]
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    progress.train_seconds += time.perf_counter() - step_started
    progress.train_cpu_seconds += time.process_time() - step_cpu_started
    progress.step_losses.append(step_loss)
    return step_loss, lr


def _evaluate(
    run: TrainingRun, eval_samples: list[Sample], progress: TrainingProgress, log: Callable[[str], None]
) -> bool:
    """The eval loss at ``progress.step``, recorded; True when it is the best so far."""
    done = progress.step
    eval_loss = evaluate_shared(run.model, eval_samples, run.training.micro_batch_size, run.pad_id, run.processes)
    progress.eval_history.append({"step": done, "eval_loss": eval_loss})
    log(f"step {done}/{run.total_steps} eval loss {format_loss(eval_loss)}")
    if eval_loss is not None and (progress.best_eval_loss is None or eval_loss < progress.best_eval_loss):
        progress.best_step, progress.best_eval_loss = done, eval_loss
        return True
    return False


def _train_steps(
    run: TrainingRun,
    data: TrainingData,
    progress: TrainingProgress,
    best_state: dict | None,
    checkpoint_dir: Path | None,
    fingerprint: str,
    log: Callable[[str], None],
) -> dict | None:
    """The optimizer steps from ``progress.step`` on, evaluating and checkpointing on schedule; the best weights."""
    training = run.training
    run.model.train()
    batches = micro_batches([sum(len(s.input_ids) for s in unit) for unit in run.units], training)
    for _ in range(progress.step * run.accumulation):  # the micro-batches a resumed run already trained on
        next(batches)
    log_every = max(1, run.total_steps // 50)
    for step in range(progress.step, run.total_steps):
        # This process's share of these micro-batches is taken in the step (all when it is the only one).
        step_loss, lr = _optimizer_step(
            run, [[run.units[i] for i in next(batches)] for _ in range(run.accumulation)], progress
        )
        progress.step = done = step + 1
        if done % log_every == 0 or done in (1, run.total_steps):
            log(f"step {done}/{run.total_steps} loss {step_loss:.4f} lr {lr:.2e}")
        if data.eval_samples and (done % training.eval_steps == 0 or done == run.total_steps):
            if _evaluate(run, data.eval_samples, progress, log):
                best_state = trainable_state(run.model)
        if checkpoint_dir is not None and done % training.checkpoint_steps == 0 and done < run.total_steps:
            _save_state(run, checkpoint_dir, fingerprint, progress, best_state)
    return best_state


def _summary(run: TrainingRun, data: TrainingData, progress: TrainingProgress, kept_best: bool, **run_facts) -> dict:
    """The training summary; ``run_facts``: data_version, init_adapter and resumed_from_step."""
    adapter, training = run.adapter, run.training
    trainable_parameters, total_parameters = run.model.get_nb_trainable_parameters()
    return {
        "adapter": adapter.name,
        "objective": "sft",
        "base_model": run.base_ref,
        "data_version": run_facts["data_version"],
        "init_adapter": run_facts["init_adapter"],
        "lora": {
            **adapter.lora.model_dump(),
            "target_modules": run.targets,
            "missing_target_modules": run.missing_targets,
        },
        "training": training.model_dump(),
        **fit_figures(data.train_fit, data.eval_fit, len(data.train_samples), len(data.eval_samples)),
        "eval_note": data.eval_note,
        "steps": run.total_steps,
        "resumed_from_step": run_facts["resumed_from_step"],
        "gradient_accumulation_steps": run.accumulation,
        "processes": run.processes.world_size,
        "packed_rows": len(run.units) if training.packing else None,
        "optimizer": "adamw_fused" if run.optimizer.defaults.get("fused") else "adamw",
        "warmup_steps": run.warmup_steps,
        **progress_figures(progress, len(data.train_samples), run.eval_loss_before, kept_best, run.total_steps),
        "trainable_parameters": trainable_parameters,
        "total_parameters": total_parameters,
        "device": run.processes.device,
        "dtype": str(run.dtype).removeprefix("torch."),
        "versions": library_versions(),
    }


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
    log = processes.main_only(log)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None

    tokenizer = load_fast_tokenizer(base_ref)
    data = prepare_samples(conversations, eval_conversations, tokenizer, adapter, log)
    run = setup_run(adapter, base_ref, processes, tokenizer, data, init_adapter, log)
    start_ref = base_ref if init_adapter is None else f"{base_ref}+{adapter_weights_digest(Path(init_adapter))}"
    fingerprint = run_fingerprint(adapter, start_ref, data.train_samples + data.eval_samples)
    progress, best_state = _resume(run, checkpoint_dir, fingerprint, log)
    resumed_from_step = progress.step
    log(
        f"training '{adapter.name}' on {base_ref} ({processes.device}, {str(run.dtype).removeprefix('torch.')}, "
        f"quantization {training.quantization}): {len(data.train_samples)} train / {len(data.eval_samples)} eval "
        f"samples, {run.total_steps} steps of {run.accumulation} x {training.micro_batch_size}, "
        f"LoRA on {', '.join(run.targets)}"
    )
    if data.eval_note:
        log(data.eval_note)
    best_state = _train_steps(run, data, progress, best_state, checkpoint_dir, fingerprint, log)

    kept_best = training.keep_best and best_state is not None and progress.best_step != run.total_steps
    if kept_best:
        load_trainable_state(run.model, best_state)
        log(f"keeping the weights of step {progress.best_step} (best eval loss {progress.best_eval_loss:.4f})")
    summary = _summary(
        run,
        data,
        progress,
        kept_best,
        data_version=data_version,
        init_adapter=str(init_adapter) if init_adapter is not None else None,
        resumed_from_step=resumed_from_step,
    )
    if not processes.is_main:  # process 0 writes the adapter directory; the others wait for it
        processes.barrier()
        return summary
    with staged_output_dir(out_dir) as staging:
        save_weights_and_tokenizer(staging, run.model, run.tokenizer)
        if training.export_merged:
            export_merged(base_ref, staging, run.tokenizer, staging / MERGED_DIR)
        summary["wall_time_s"] = round(time.perf_counter() - started, 3)
        run_config = {"adapter": adapter.model_dump(mode="json"), "base_model": base_ref, "data_version": data_version}
        write_run_files(staging, run_config, summary, progress)
    if checkpoint_dir is not None:
        (checkpoint_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
    log(f"saved adapter '{adapter.name}' to {out_dir} in {summary['wall_time_s']} s")
    processes.barrier()
    return summary


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
    from ..corpus import schema as corpus
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
