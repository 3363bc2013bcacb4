"""LoRA fine-tuning of a causal LM on Baize conversations, in a plain PyTorch loop.

The loop is small on purpose (``transformers.Trainer`` is slow to import and hides the
loss masking): AdamW, linear warmup then linear decay, gradient accumulation, a
held-out eval split chosen by content hash, and a seeded order, so the same
configuration and data give the same adapter.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import peft
import torch
import torch.nn.functional as F
import transformers
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from .config import TINY_BASE_MODEL, AdapterConfig, TrainingConfig
from .prompts import Turn, conversation_segments, render_conversation
from .storage import staged_output_dir

IGNORE_INDEX = -100  # label of tokens that carry no loss (PyTorch's cross-entropy default)
MIN_CONVERSATIONS_FOR_EVAL = 5
MAX_EVAL_FRACTION = 0.2  # a larger requested eval set is shrunk to DEFAULT_EVAL_FRACTION
DEFAULT_EVAL_FRACTION = 0.1
MAX_WARMUP_FRACTION = 0.1  # tiny runs would otherwise spend every step warming up
MAX_GRAD_NORM = 1.0  # Hugging Face Trainer's default clipping
SUMMARY_FILE = "training_summary.json"


@dataclass(frozen=True)
class Sample:
    """One tokenized conversation: ids (BOS first when the tokenizer has one) and labels."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool


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


def build_sample(turns: Sequence[Turn], tokenizer, loss_on: str, cutoff_len: int) -> Sample:
    """Tokenize one conversation and label the tokens the loss is computed on.

    With ``loss_on="ai"`` a token is labeled when its last character lies in an AI
    piece of :func:`conversation_segments`: a token such as ``" I"`` whose leading
    space belongs to the ``[|AI|] `` marker is still the first word of the answer.
    """
    segments = conversation_segments(turns)
    text = "".join(piece for piece, _ in segments)
    in_ai_piece = []
    for piece, is_ai in segments:
        in_ai_piece.extend([is_ai] * len(piece))
    ids, offsets = encode_with_offsets(tokenizer, text)
    labels = []
    for token_id, (start, end) in zip(ids, offsets):
        last_char = end - 1 if end > start else start
        labeled = loss_on == "all" or (end > start and in_ai_piece[last_char])
        labels.append(token_id if labeled else IGNORE_INDEX)
    truncated = len(ids) > cutoff_len
    return Sample(ids[:cutoff_len], labels[:cutoff_len], truncated)


def eval_count(n_conversations: int, eval_size: int | float) -> int:
    """How many conversations to hold out: ``eval_size`` (a count or a fraction), shrunk for small data."""
    if n_conversations < MIN_CONVERSATIONS_FOR_EVAL:
        return 0
    if isinstance(eval_size, float):
        requested = max(1, round(eval_size * n_conversations))
    else:
        requested = eval_size
    if requested > MAX_EVAL_FRACTION * n_conversations:
        return min(requested, max(1, round(DEFAULT_EVAL_FRACTION * n_conversations)))
    return requested


def split_by_hash(texts: Sequence[str], n_eval: int) -> tuple[list[int], list[int]]:
    """Indices of the train and eval conversations, both ordered by content hash.

    Ordering by the hash of the text makes the split, and the training order built on
    it, independent of the order the conversations arrive in.
    """
    order = sorted(range(len(texts)), key=lambda i: (hashlib.sha256(texts[i].encode()).hexdigest(), i))
    return order[n_eval:], order[:n_eval]


def _hash_ordered(conversations: Sequence[Sequence[Turn]]) -> list[Sequence[Turn]]:
    """Conversations in content-hash order, as split_by_hash orders a split."""
    order = split_by_hash([render_conversation(turns) for turns in conversations], 0)[0]
    return [conversations[i] for i in order]


def optimizer_steps(n_train: int, training: TrainingConfig) -> int:
    """Optimizer steps of the run: ``epochs`` over the data, capped by ``max_steps``."""
    accumulation = math.ceil(training.effective_batch_size / training.micro_batch_size)
    steps_per_epoch = math.ceil(math.ceil(n_train / training.micro_batch_size) / accumulation)
    steps = max(1, math.ceil(training.epochs * steps_per_epoch))
    return min(steps, training.max_steps) if training.max_steps else steps


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier of optimizer step ``step`` (0-based): linear warmup, then linear decay."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def micro_batch_indices(n_samples: int, micro_batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless micro-batches of sample indices, a fresh seeded permutation per epoch."""
    epoch = 0
    while True:
        generator = torch.Generator().manual_seed(seed + epoch)
        permutation = torch.randperm(n_samples, generator=generator).tolist()
        for start in range(0, n_samples, micro_batch_size):
            yield permutation[start : start + micro_batch_size]
        epoch += 1


def collate(samples: Sequence[Sample], pad_id: int, device: str) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch to its longest sample (labels -100, attention mask 0)."""
    width = max(len(sample.input_ids) for sample in samples)
    input_ids, labels, attention_mask = [], [], []
    for sample in samples:
        padding = width - len(sample.input_ids)
        input_ids.append(sample.input_ids + [pad_id] * padding)
        labels.append(sample.labels + [IGNORE_INDEX] * padding)
        attention_mask.append([1] * len(sample.input_ids) + [0] * padding)
    return {
        "input_ids": torch.tensor(input_ids, device=device),
        "labels": torch.tensor(labels, device=device),
        "attention_mask": torch.tensor(attention_mask, device=device),
    }


def predicted_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Labeled tokens that are a prediction target (the first token never is)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def summed_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of the next-token cross-entropy over the labeled tokens of a micro-batch.

    A sum, not a mean, so a step's loss can be divided by the labeled tokens of all
    its micro-batches: every token weighs the same however the batch is split.
    """
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.size(-1)),
        batch["labels"][:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


@torch.no_grad()
def evaluate(model, samples: Sequence[Sample], micro_batch_size: int, pad_id: int, device: str) -> float | None:
    """Mean per-token loss on ``samples``; None when there is nothing to evaluate."""
    if not samples:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(samples), micro_batch_size):
        batch = collate(samples[start : start + micro_batch_size], pad_id, device)
        total += float(summed_loss(model, batch))
        count += predicted_tokens(batch)
    model.train(was_training)
    return total / count if count else None


@contextmanager
def quiet_peft_deprecation() -> Iterator[None]:
    """Hide the warning peft 0.21 triggers by reading an attribute transformers 5 deprecated."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def format_loss(loss: float | None) -> str:
    return "n/a (no labeled tokens)" if loss is None else f"{loss:.4f}"


def resolve_base_model(base_model: str) -> str:
    """The absolute path of a local base model directory, or a hub id unchanged."""
    base_model = str(base_model)
    if base_model == TINY_BASE_MODEL:
        raise ValueError(
            f"'{TINY_BASE_MODEL}' names the pipeline's built tiny base; pass the directory it was built into"
        )
    path = Path(base_model).expanduser()
    if path.exists():
        return str(path.resolve())
    looks_like_path = path.is_absolute() or base_model.startswith((".", "~")) or base_model.count("/") > 1
    if looks_like_path:
        raise FileNotFoundError(f"base model directory not found: {base_model}")
    return base_model


def device_and_dtype() -> tuple[str, torch.dtype]:
    """CUDA with bf16 when available (float32 on GPUs without bf16), else CPU float32."""
    if torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return "cpu", torch.float32


def lora_targets(model, requested: Sequence[str], base_model: str) -> tuple[list[str], list[str]]:
    """The requested LoRA target modules present in ``model``, and those missing."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    present = [name for name in requested if name in names]
    missing = [name for name in requested if name not in names]
    if not present:
        linear = sorted(
            {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
        )
        raise ValueError(
            f"none of the LoRA target modules {', '.join(missing)} exist in {base_model}; "
            f"its linear modules are: {', '.join(linear)}"
        )
    return present, missing


def train_adapter(
    conversations: Sequence[Sequence[Turn]],
    adapter: AdapterConfig,
    base_model: str,
    out_dir: Path,
    log: Callable[[str], None] = print,
    data_version: str | None = None,
    eval_conversations: Sequence[Sequence[Turn]] | None = None,
) -> dict:
    """Train ``adapter``'s LoRA on ``conversations`` over ``base_model`` and save it into ``out_dir``.

    ``base_model`` is a local directory or a hub id. ``out_dir`` receives the adapter,
    the tokenizer and ``training_summary.json`` together, or nothing if training fails.
    ``training.max_steps`` caps the optimizer steps that ``training.epochs`` gives.
    With ``eval_conversations`` (a split made upstream, e.g. by the training-set asset)
    all of ``conversations`` are trained on; without, ``training.eval_size`` are held out.
    Returns the summary.
    """
    started = time.perf_counter()
    if not conversations:
        raise ValueError(f"no conversations to train adapter '{adapter.name}' on")
    training = adapter.training
    base_ref = resolve_base_model(base_model)
    device, dtype = device_and_dtype()

    tokenizer = AutoTokenizer.from_pretrained(base_ref)
    if not tokenizer.is_fast:
        raise ValueError(f"the tokenizer of {base_ref} is not a fast tokenizer; label masking needs its offsets")
    # Padded positions are masked out, so any id will do when the tokenizer has no pad token.
    pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
    if eval_conversations is None:
        texts = [render_conversation(turns) for turns in conversations]
        n_eval = eval_count(len(conversations), training.eval_size)
        train_ids, eval_ids = split_by_hash(texts, n_eval)
        train_turns = [conversations[i] for i in train_ids]
        eval_turns = [conversations[i] for i in eval_ids]
        eval_note = (
            None
            if n_eval
            else f"no eval set: {len(conversations)} conversations, fewer than {MIN_CONVERSATIONS_FOR_EVAL}"
        )
    else:
        train_turns = _hash_ordered(conversations)
        eval_turns = _hash_ordered(eval_conversations)
        eval_note = None if eval_turns else "no eval set: the given eval split is empty"
    train_samples = [build_sample(turns, tokenizer, training.loss_on, training.cutoff_len) for turns in train_turns]
    eval_samples = [build_sample(turns, tokenizer, training.loss_on, training.cutoff_len) for turns in eval_turns]

    model = AutoModelForCausalLM.from_pretrained(base_ref, dtype=dtype).to(device)
    targets, missing_targets = lora_targets(model, adapter.lora.target_modules, base_ref)
    if missing_targets:
        log(f"LoRA target modules not in {base_ref}, skipped: {', '.join(missing_targets)}")
    eval_loss_before = evaluate(model, eval_samples, training.micro_batch_size, pad_id, device)

    lora_config = PeftLoraConfig(
        r=adapter.lora.r,
        lora_alpha=adapter.lora.alpha,
        lora_dropout=adapter.lora.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(training.seed)  # LoRA init and dropout
    with quiet_peft_deprecation():
        model = get_peft_model(model, lora_config)
    trainable_parameters, total_parameters = model.get_nb_trainable_parameters()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=training.learning_rate
    )
    total_steps = optimizer_steps(len(train_samples), training)
    warmup_steps = min(training.warmup_steps, math.ceil(MAX_WARMUP_FRACTION * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, total_steps)
    )
    accumulation = math.ceil(training.effective_batch_size / training.micro_batch_size)
    log(
        f"training '{adapter.name}' on {base_ref} ({device}, {dtype}): {len(train_samples)} train / "
        f"{len(eval_samples)} eval conversations, {total_steps} steps of {accumulation} x "
        f"{training.micro_batch_size}, LoRA on {', '.join(targets)}"
    )
    if eval_note:
        log(eval_note)

    model.train()
    batches = micro_batch_indices(len(train_samples), training.micro_batch_size, training.seed)
    log_every = max(1, total_steps // 50)
    tokens_seen = trained_tokens = samples_seen = 0
    step_losses: list[float] = []
    eval_history: list[dict] = []
    for step in range(total_steps):
        micro_batches = [
            collate([train_samples[i] for i in next(batches)], pad_id, device) for _ in range(accumulation)
        ]
        step_tokens = sum(predicted_tokens(batch) for batch in micro_batches)
        step_loss = 0.0
        for batch in micro_batches:
            loss = summed_loss(model, batch) / max(1, step_tokens)
            loss.backward()
            step_loss += loss.item()
            tokens_seen += int(batch["attention_mask"].sum())
            samples_seen += len(batch["input_ids"])
        trained_tokens += step_tokens
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step_losses.append(step_loss)
        done = step + 1
        if done % log_every == 0 or done in (1, total_steps):
            log(f"step {done}/{total_steps} loss {step_loss:.4f} lr {lr:.2e}")
        if eval_samples and (done % training.eval_steps == 0 or done == total_steps):
            eval_loss = evaluate(model, eval_samples, training.micro_batch_size, pad_id, device)
            eval_history.append({"step": done, "eval_loss": eval_loss})
            log(f"step {done}/{total_steps} eval loss {format_loss(eval_loss)}")

    summary = {
        "adapter": adapter.name,
        "base_model": base_ref,
        "data_version": data_version,
        "lora": {**adapter.lora.model_dump(), "target_modules": targets, "missing_target_modules": missing_targets},
        "training": training.model_dump(),
        "n_conversations": len(train_samples) + len(eval_samples),
        "n_train": len(train_samples),
        "n_eval": len(eval_samples),
        "eval_note": eval_note,
        "steps": total_steps,
        "gradient_accumulation_steps": accumulation,
        "warmup_steps": warmup_steps,
        "epochs_seen": samples_seen / len(train_samples),
        "tokens_seen": tokens_seen,
        "trained_tokens": trained_tokens,
        "truncated_samples": sum(sample.truncated for sample in train_samples + eval_samples),
        "train_loss_first": step_losses[0],
        "train_loss_final": step_losses[-1],
        "eval_loss_before": eval_loss_before,
        "eval_loss_after": eval_history[-1]["eval_loss"] if eval_history else None,
        "eval_history": eval_history,
        "trainable_parameters": trainable_parameters,
        "total_parameters": total_parameters,
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    }
    with staged_output_dir(out_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        summary["wall_time_s"] = round(time.perf_counter() - started, 3)
        (staging / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log(f"saved adapter '{adapter.name}' to {out_dir} in {summary['wall_time_s']} s")
    return summary
