"""What a training run records: its progress, the summary and run config beside the weights, the loss curve.

The file names here are the adapter directory's contract with the model card, the
adapter asset and the tests; both objectives (the supervised loop of :mod:`.trainer`
and the preference loop of :mod:`.preference`) write them the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import peft
import torch
import transformers

from ..model.samples import FitStats
from .model_card import CONFIG_FILE, SUMMARY_FILE, write_model_card

LOSS_CURVE_FILE = "loss_curve.png"


@dataclass
class TrainingProgress:
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


def format_loss(loss: float | None) -> str:
    return "n/a (no labeled tokens)" if loss is None else f"{loss:.4f}"


def fit_figures(train_fit: FitStats, eval_fit: FitStats, train_samples: int, eval_samples: int) -> dict:
    """The summary's counts of conversations and samples, and of what the cutoff split or dropped."""
    return {
        "n_conversations": train_fit.conversations + eval_fit.conversations,
        "n_train": train_fit.conversations,
        "n_eval": eval_fit.conversations,
        "train_samples": train_samples,
        "eval_samples": eval_samples,
        "conversations_split": train_fit.conversations_split + eval_fit.conversations_split,
        "conversations_dropped": train_fit.conversations_dropped + eval_fit.conversations_dropped,
        "exchanges_dropped": train_fit.exchanges_dropped + eval_fit.exchanges_dropped,
    }


def progress_figures(
    progress: TrainingProgress, train_samples: int, eval_loss_before: float | None, kept_best: bool, total_steps: int
) -> dict:
    """The summary's throughput and loss figures of a finished run (``kept_best``: the best eval step's weights)."""
    final_eval_loss = progress.eval_history[-1]["eval_loss"] if progress.eval_history else None
    return {
        "epochs_seen": progress.samples_seen / train_samples,
        "tokens_seen": progress.tokens_seen,
        "padded_tokens": progress.padded_tokens,
        "real_token_ratio": progress.tokens_seen / max(1, progress.padded_tokens),
        "trained_tokens": progress.trained_tokens,
        "train_seconds": round(progress.train_seconds, 3),
        "train_cpu_seconds": round(progress.train_cpu_seconds, 3),
        "tokens_per_second": progress.tokens_seen / max(progress.train_seconds, 1e-9),
        "train_loss_first": progress.step_losses[0],
        "train_loss_final": progress.step_losses[-1],
        "step_losses": progress.step_losses,
        "eval_loss_before": eval_loss_before,
        "eval_loss_final": final_eval_loss,
        "best_step": progress.best_step,
        "eval_loss_after": progress.best_eval_loss if kept_best else final_eval_loss,
        "saved_step": progress.best_step if kept_best else total_steps,
        "eval_history": progress.eval_history,
    }


def library_versions() -> dict:
    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def write_loss_curve(
    step_losses: Sequence[float], eval_history: Sequence[dict], path: Path, loss_label: str = "loss per token"
) -> None:
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
    axes.set_ylabel(loss_label)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def save_weights_and_tokenizer(staging: Path, model, tokenizer) -> None:
    """The LoRA weights and the tokenizer, with the chat template that ``baize serve`` and vLLM read."""
    from ..model.chat_template import attach_chat_template

    model.save_pretrained(staging)
    attach_chat_template(tokenizer)
    tokenizer.save_pretrained(staging)


def write_run_files(
    staging: Path, run_config: dict, summary: dict, progress: TrainingProgress, loss_label: str = "loss per token"
) -> None:
    """The run config, the loss curve, the summary and, rendered from those, the model card."""
    (staging / CONFIG_FILE).write_text(json.dumps(run_config, indent=2) + "\n", encoding="utf-8")
    write_loss_curve(progress.step_losses, progress.eval_history, staging / LOSS_CURVE_FILE, loss_label)
    (staging / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_model_card(staging)


def read_summary(adapter_dir: Path) -> dict:
    return json.loads((Path(adapter_dir) / SUMMARY_FILE).read_text(encoding="utf-8"))
