"""Baize v2 by a preference objective: DPO on best-versus-worst answer pairs, v1 as the reference policy.

The pairs come from self-distillation's scores (:func:`..feedback.self_distill.preference_pairs`).
v2 starts from v1's LoRA weights; trl's ``DPOTrainer``, given that peft model and no
reference model, copies the adapter into a frozen ``ref`` adapter and computes the
reference log-probabilities with it, so v1 is the reference without a second base in
memory. The texts are the training format: the prompt is the seed's context up to
``[|AI|]``, each answer the AI piece SFT labels (the words and the ``[|Human|]`` marker
that ends them), so v2 answers ``baize chat`` and ``baize serve`` prompts as v1 does.
trl also ends each answer with the tokenizer's EOS, which inference stops before anyway.

The adapter directory gets the files of a supervised run (weights, tokenizer with chat
template, run config, loss curve, summary, model card), and v1's held-out loss before
and after, so evaluation, the judge and serving read it unchanged. trl is an optional
extra (``pip install 'baize_assets[dpo]'``). A run that dies restarts from v1's weights.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from ..config.feedback import PreferenceConfig
from ..config.pipeline import AdapterConfig
from ..feedback.self_distill import PAIR_SCHEMA, pairs_path
from ..model.base import device_and_dtype, load_base_model, quiet_peft_deprecation, resolve_base_model
from ..model.batching import padding_id
from ..model.lm_loss import evaluate
from ..model.samples import fit_conversations
from ..prompts import Turn, conversation_segments
from ..storage import read_parquet, staged_output_dir
from .optimization import accumulation_steps, capped_warmup_steps, optimizer_steps
from .preparation import attach_lora, load_fast_tokenizer
from .summary import TrainingProgress, library_versions, save_weights_and_tokenizer, write_run_files
from .trainer import MAX_GRAD_NORM

DPO_EXTRA = "dpo"
REFERENCE_ADAPTER = "ref"  # the name trl gives the frozen copy of the starting adapter


def require_trl() -> None:
    """Fail, naming the extra to install, when trl or datasets is missing (without importing them: trl is slow to)."""
    missing = [name for name in ("trl", "datasets") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"self_distillation objective 'dpo' needs {' and '.join(missing)} (not installed here): "
            f"pip install 'baize_assets[{DPO_EXTRA}]'"
        )


def pair_texts(pairs: pd.DataFrame, tokenizer) -> dict[str, list[str]]:
    """trl's ``prompt`` / ``chosen`` / ``rejected`` columns, in the text SFT trains on.

    The prompt starts with BOS as training's ids do (:func:`..model.samples.encode`), written
    as text when the tokenizer does not add it itself.
    """
    adds_bos = tokenizer.bos_token_id is None or tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
    bos = "" if adds_bos else tokenizer.bos_token
    columns: dict[str, list[str]] = {"prompt": [], "chosen": [], "rejected": []}
    for context, chosen, rejected in zip(pairs["context"], pairs["chosen"], pairs["rejected"]):
        turns = [Turn(t["role"], t["text"]) for t in context]
        pieces = [conversation_segments([*turns, Turn("ai", answer)]) for answer in (chosen, rejected)]
        # The last two pieces are the answer's labeled piece and the trailing text after it.
        columns["prompt"].append(bos + "".join(text for text, _ in pieces[0][:-2]))
        columns["chosen"].append(pieces[0][-2][0])
        columns["rejected"].append(pieces[1][-2][0])
    return columns


def _log_lines(log: Callable[[str], None]):
    from transformers import TrainerCallback

    class LogLines(TrainerCallback):
        """trl's step metrics as the run's log lines (the progress bars stay off)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                log(
                    f"dpo step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} "
                    f"reward margin {logs.get('rewards/margins', float('nan')):.4f} "
                    f"accuracy {logs.get('rewards/accuracies', float('nan')):.2f}"
                )

    return LogLines()


def dpo_figures(log_history: list[dict]) -> dict:
    """The DPO loss, reward margin and accuracy per logged step, and first and final of each."""
    steps = [entry for entry in log_history if "loss" in entry and "rewards/margins" in entry]
    if not steps:
        raise RuntimeError("DPO training logged no step: nothing was trained")
    series = {
        "dpo_loss": [e["loss"] for e in steps],
        "reward_margin": [e["rewards/margins"] for e in steps],
        "reward_accuracy": [e["rewards/accuracies"] for e in steps],
    }
    ends = (("first", 0), ("final", -1))
    figures = {f"{name}_{end}": values[i] for name, values in series.items() for end, i in ends}
    history = [{"step": e["step"], "loss": e["loss"], **{k: v for k, v in e.items() if "/" in k}} for e in steps]
    return {**figures, "history": history}


def _dpo_args(training, preference: PreferenceConfig, steps: int, dtype, device: str, output_dir: str):
    """trl's settings from v1's training (batches, cutoff, warmup, seed, precision) and the DPO ones."""
    from trl import DPOConfig

    return DPOConfig(
        output_dir=output_dir,
        beta=preference.beta,
        loss_type=[preference.loss_type],
        learning_rate=preference.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=capped_warmup_steps(training, steps),
        max_steps=steps,
        per_device_train_batch_size=training.micro_batch_size,
        gradient_accumulation_steps=accumulation_steps(training),
        # transformers 5 names it activation checkpointing; trl's default (on) is the old name's.
        gradient_checkpointing=None,
        activation_checkpointing=training.gradient_checkpointing,
        max_length=training.cutoff_len,
        max_grad_norm=MAX_GRAD_NORM,
        seed=training.seed,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=device == "cpu",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def read_pairs(training_set: Path, adapter_name: str) -> pd.DataFrame:
    """The pairs beside ``training_set``; a clear error when there are none to train on."""
    path = pairs_path(training_set)
    pairs = read_parquet(path)
    missing = set(PAIR_SCHEMA.names) - set(pairs.columns)
    if missing:
        raise ValueError(f"preference pairs {path} lack the column(s) {', '.join(sorted(missing))}")
    if pairs.empty:
        raise ValueError(
            f"no preference pairs for adapter '{adapter_name}' in {path}: every seed's answers tied or had fewer "
            "than two scores"
        )
    return pairs


def _run_dpo(model, tokenizer, pairs: pd.DataFrame, args, log: Callable[[str], None]):
    """DPO over ``pairs`` with the adapter of ``model`` as its own frozen reference; the trained model and trl's log."""
    import datasets
    from transformers import PrinterCallback
    from trl import DPOTrainer

    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # trl's dataset preparation: the run's log has its own lines
    try:
        with quiet_peft_deprecation():
            trainer = DPOTrainer(
                model=model,
                args=args,
                train_dataset=datasets.Dataset.from_dict(pair_texts(pairs, tokenizer)),
                processing_class=tokenizer,
                callbacks=[_log_lines(log)],
            )
            trainer.remove_callback(PrinterCallback)  # its raw dicts duplicate the log lines
            result = trainer.train()
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    model = trainer.model
    if REFERENCE_ADAPTER in model.peft_config:  # only v2's own weights are saved
        model.delete_adapter(REFERENCE_ADAPTER)
    model.eval()
    return model, trainer.state.log_history, result.metrics["train_runtime"]


def _summary(adapter: AdapterConfig, preference: PreferenceConfig, run: dict, dpo: dict, model) -> dict:
    """The training summary: the keys a supervised run's has (for the asset and the card) and the DPO figures."""
    import trl

    trainable_parameters, total_parameters = model.get_nb_trainable_parameters()
    eval_samples = run["eval_samples"]
    return {
        "adapter": adapter.name,
        "objective": "dpo",
        "base_model": run["base_ref"],
        "data_version": run["data_version"],
        "init_adapter": run["init_adapter"],
        "lora": {**adapter.lora.model_dump(), "target_modules": run["targets"]},
        "training": adapter.training.model_dump(),
        "dpo": {**preference.model_dump(), **{k: v for k, v in dpo.items() if k != "history"}},
        "pairs": run["pairs"],
        "n_conversations": run["pairs"] + run["n_eval"],
        "n_train": run["pairs"],
        "n_eval": run["n_eval"],
        "eval_samples": eval_samples,
        "eval_note": None if eval_samples else "no eval set: the training set's eval split is empty",
        "steps": run["steps"],
        "resumed_from_step": 0,
        "saved_step": run["steps"],
        "warmup_steps": run["warmup_steps"],
        "train_seconds": round(run["train_seconds"], 3),
        "train_loss_first": dpo["dpo_loss_first"],
        "train_loss_final": dpo["dpo_loss_final"],
        "eval_loss_before": run["eval_loss_before"],
        "eval_loss_after": run["eval_loss_after"],
        "dpo_history": dpo["history"],
        "trainable_parameters": trainable_parameters,
        "total_parameters": total_parameters,
        "device": run["device"],
        "dtype": str(run["dtype"]).removeprefix("torch."),
        "versions": {**library_versions(), "trl": trl.__version__},
    }


def train_preference_adapter(
    adapter: AdapterConfig,
    preference: PreferenceConfig,
    base_model: str,
    training_set: Path,
    out_dir: Path,
    init_adapter: Path,
    log: Callable[[str], None] = print,
) -> dict:
    """Train ``adapter`` by DPO on the pairs beside ``training_set``, from ``init_adapter`` (v1); the summary.

    The training set's eval split (v1's held-out conversations) gives the held-out loss of
    the starting weights and of the result, as for a supervised run.
    """
    started = time.perf_counter()
    require_trl()
    from ..corpus.schema import data_version, turns_of

    training = adapter.training
    base_ref = resolve_base_model(base_model)
    pairs = read_pairs(training_set, adapter.name)
    frame = read_parquet(Path(training_set))
    tokenizer = load_fast_tokenizer(base_ref)
    pad_id = padding_id(tokenizer)
    eval_samples, eval_fit = fit_conversations(turns_of(frame[frame["split"] == "eval"]), tokenizer, training)
    device, dtype = device_and_dtype(training.precision)
    model = load_base_model(base_ref, training, device, dtype)
    model = attach_lora(model, adapter, list(adapter.lora.target_modules), Path(init_adapter), log)
    targets = sorted(model.peft_config["default"].target_modules)  # v1's, which v2 keeps
    eval_loss_before = evaluate(model, eval_samples, training.micro_batch_size, pad_id, device)
    steps = optimizer_steps(
        len(pairs), training.model_copy(update={"epochs": preference.epochs, "max_steps": preference.max_steps})
    )
    log(
        f"training '{adapter.name}' by DPO (beta {preference.beta}, {preference.loss_type}) on {len(pairs)} pairs, "
        f"{steps} steps of {accumulation_steps(training)} x {training.micro_batch_size}, reference: {init_adapter}"
    )
    with tempfile.TemporaryDirectory(prefix="baize-dpo-") as scratch:
        args = _dpo_args(training, preference, steps, dtype, device, scratch)
        model, log_history, train_seconds = _run_dpo(model, tokenizer, pairs, args, log)
    dpo = dpo_figures(log_history)
    run = {
        "base_ref": base_ref,
        "data_version": data_version(frame),
        "init_adapter": str(init_adapter),
        "targets": targets,
        "pairs": len(pairs),
        "n_eval": eval_fit.conversations,
        "eval_samples": len(eval_samples),
        "steps": steps,
        "warmup_steps": args.warmup_steps,
        "train_seconds": train_seconds,
        "eval_loss_before": eval_loss_before,
        "eval_loss_after": evaluate(model, eval_samples, training.micro_batch_size, pad_id, device),
        "device": device,
        "dtype": dtype,
    }
    summary = _summary(adapter, preference, run, dpo, model)
    with staged_output_dir(out_dir) as staging:
        save_weights_and_tokenizer(staging, model, tokenizer)
        summary["wall_time_s"] = round(time.perf_counter() - started, 3)
        run_config = {
            "adapter": adapter.model_dump(mode="json"),
            "base_model": base_ref,
            "data_version": run["data_version"],
            "objective": "dpo",
            "dpo": preference.model_dump(),
        }
        progress = TrainingProgress(step=steps, step_losses=[entry["loss"] for entry in dpo["history"]])
        write_run_files(staging, run_config, summary, progress, loss_label="DPO loss")
    log(
        f"saved adapter '{adapter.name}' to {out_dir} in {summary['wall_time_s']} s: DPO loss "
        f"{dpo['dpo_loss_first']:.4f} -> {dpo['dpo_loss_final']:.4f}, reward margin {dpo['reward_margin_final']:.4f}"
    )
    return summary
