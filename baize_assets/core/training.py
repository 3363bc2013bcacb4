"""LoRA fine-tuning of a causal LM on Baize conversations, in a plain PyTorch loop.

The loop is small on purpose (``transformers.Trainer`` is slow to import and hides the
loss masking): AdamW, linear warmup then linear decay, gradient accumulation to the
effective batch, length-grouped micro-batches, a held-out eval split, checkpoints that
a rerun resumes from, and a seeded order, so the same configuration and data give the
same adapter. Conversations longer than the cutoff are split at turn boundaries or
dropped, and counted, never silently truncated.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import peft
import torch
import torch.nn.functional as F
import transformers
from peft import LoraConfig as PeftLoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from .batching import IGNORE_INDEX, Sample, collate, length_grouped_batches, shuffled_batches
from .config import TINY_BASE_MODEL, AdapterConfig, TrainingConfig
from .prompts import Turn, conversation_segments, render_conversation
from .storage import staged_output_dir

__all__ = ["IGNORE_INDEX", "Sample", "train_adapter", "train_from_training_set"]

MIN_CONVERSATIONS_FOR_EVAL = 5
MAX_EVAL_FRACTION = 0.2  # a larger requested eval set is shrunk to DEFAULT_EVAL_FRACTION
DEFAULT_EVAL_FRACTION = 0.1
MAX_WARMUP_FRACTION = 0.1  # tiny runs would otherwise spend every step warming up
MAX_GRAD_NORM = 1.0  # Hugging Face Trainer's default clipping
SUMMARY_FILE = "training_summary.json"
CONFIG_FILE = "training_config.json"
LOSS_CURVE_FILE = "loss_curve.png"
MERGED_DIR = "merged"
CHECKPOINT_FILE = "checkpoint.pt"
# Settings that do not change the trained weights: a checkpoint stays valid across them.
_NOT_AFFECTING_WEIGHTS = {"checkpoint_steps", "run_in_subprocess", "export_merged", "eval_prompts", "keep_best"}


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


def accumulation_steps(training: TrainingConfig) -> int:
    return math.ceil(training.effective_batch_size / training.micro_batch_size)


def optimizer_steps(n_train: int, training: TrainingConfig) -> int:
    """Optimizer steps of the run: ``epochs`` over the data, capped by ``max_steps``."""
    steps_per_epoch = math.ceil(math.ceil(n_train / training.micro_batch_size) / accumulation_steps(training))
    steps = max(1, math.ceil(training.epochs * steps_per_epoch))
    return min(steps, training.max_steps) if training.max_steps else steps


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier of optimizer step ``step`` (0-based): linear warmup, then linear decay."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def micro_batches(samples: Sequence[Sample], training: TrainingConfig) -> Iterator[list[int]]:
    """The run's endless, seeded stream of micro-batches (sample indices)."""
    if training.batching == "length_grouped":
        return length_grouped_batches([len(s.input_ids) for s in samples], training.micro_batch_size, training.seed)
    return shuffled_batches(len(samples), training.micro_batch_size, training.seed)


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


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def device_and_dtype(precision: str = "auto") -> tuple[str, torch.dtype]:
    """The device and the base model's dtype for ``precision``.

    ``auto``: CUDA with bf16 (fp16 on GPUs without bf16), else CPU float32. fp16 needs
    CUDA (CPU kernels for half precision are slow or missing).
    """
    cuda = torch.cuda.is_available()
    if precision == "auto":
        if not cuda:
            return "cpu", torch.float32
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and not cuda:
        raise ValueError("training.precision 'fp16' needs a CUDA device; use 'fp32' or 'bf16' on CPU")
    return ("cuda" if cuda else "cpu"), _DTYPES[precision]


def load_base_model(base_ref: str, training: TrainingConfig, device: str, dtype: torch.dtype):
    """The base model on ``device``: in ``dtype``, or quantized by bitsandbytes (QLoRA)."""
    if training.quantization == "none":
        return AutoModelForCausalLM.from_pretrained(base_ref, dtype=dtype).to(device)
    if device != "cuda":
        raise ValueError(f"training.quantization '{training.quantization}' needs a CUDA device; this one has none")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(
            f"training.quantization '{training.quantization}' needs the bitsandbytes package: pip install bitsandbytes"
        )
    from transformers import BitsAndBytesConfig

    if training.quantization == "8bit":
        quantization = BitsAndBytesConfig(load_in_8bit=True)
    else:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True
        )
    model = AutoModelForCausalLM.from_pretrained(
        base_ref, dtype=dtype, quantization_config=quantization, device_map={"": 0}
    )
    return peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


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


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


def _load_trainable_state(model, state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.copy_(state[name])


def run_fingerprint(adapter: AdapterConfig, base_ref: str, samples: Sequence[Sample]) -> str:
    """What a checkpoint is valid for: the settings that shape the weights, the base and the samples."""
    digest = hashlib.sha256()
    settings = adapter.model_dump(mode="json", exclude={"training": _NOT_AFFECTING_WEIGHTS})
    digest.update(json.dumps([settings, base_ref], sort_keys=True).encode())
    for sample in samples:
        digest.update(json.dumps([sample.input_ids, sample.labels]).encode())
    return digest.hexdigest()


def save_checkpoint(checkpoint_dir: Path, state: dict) -> None:
    """Write the training state to a temporary file, then rename it over the last checkpoint."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_dir / CHECKPOINT_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(checkpoint_dir: Path | None, fingerprint: str, log: Callable[[str], None]) -> dict | None:
    """The last checkpoint of this very run (same settings, base and data), or None."""
    if checkpoint_dir is None or not (checkpoint_dir / CHECKPOINT_FILE).is_file():
        return None
    path = checkpoint_dir / CHECKPOINT_FILE
    try:
        state = torch.load(path, weights_only=True)
    except Exception as exc:  # a checkpoint that cannot be read is only a lost head start
        log(f"ignoring unreadable checkpoint {path}: {exc}")
        return None
    if state.get("fingerprint") != fingerprint:
        log(f"ignoring checkpoint {path}: it was made with other settings, base model or data")
        return None
    return state


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


def export_merged(base_ref: str, adapter_dir: Path, tokenizer, out_dir: Path) -> None:
    """The base with the adapter merged in, saved as a plain transformers model directory.

    The base is reloaded unquantized on CPU so the merge is exact whatever it trained in.
    """
    base = AutoModelForCausalLM.from_pretrained(base_ref)
    with quiet_peft_deprecation():
        merged = peft.PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


@dataclass
class _Progress:
    """Everything that changes during training and is checkpointed."""

    step: int = 0
    tokens_seen: int = 0  # real (non-pad) tokens fed to the model
    padded_tokens: int = 0  # every token position fed, pads included
    trained_tokens: int = 0  # tokens the loss was computed on
    samples_seen: int = 0
    train_seconds: float = 0.0
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
) -> dict:
    """Train ``adapter``'s LoRA on ``conversations`` over ``base_model`` and save it into ``out_dir``.

    ``base_model`` is a local directory or a hub id. ``out_dir`` receives the adapter,
    the tokenizer, the training config, the summary and a loss curve together, or
    nothing if training fails. ``training.max_steps`` caps the optimizer steps that
    ``training.epochs`` gives. With ``eval_conversations`` (a split made upstream, e.g.
    by the training-set asset) all of ``conversations`` are trained on; without,
    ``training.eval_size`` are held out. With ``checkpoint_dir`` the state is saved
    every ``training.checkpoint_steps`` steps and a rerun of the same training resumes
    from it; it is removed once the adapter is saved. Returns the summary.
    """
    started = time.perf_counter()
    if not conversations:
        raise ValueError(f"no conversations to train adapter '{adapter.name}' on")
    training = adapter.training
    base_ref = resolve_base_model(base_model)
    device, dtype = device_and_dtype(training.precision)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None

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
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=training.learning_rate)
    total_steps = optimizer_steps(len(train_samples), training)
    warmup_steps = min(training.warmup_steps, math.ceil(MAX_WARMUP_FRACTION * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, warmup_steps, total_steps))
    # fp16 gradients underflow without loss scaling; with other dtypes the scaler is a no-op.
    scaler = torch.amp.GradScaler(device, enabled=dtype == torch.float16)
    accumulation = accumulation_steps(training)

    fingerprint = run_fingerprint(adapter, base_ref, train_samples + eval_samples)
    progress = _Progress()
    best_state: dict[str, torch.Tensor] | None = None
    checkpoint = load_checkpoint(checkpoint_dir, fingerprint, log)
    if checkpoint is not None:
        _load_trainable_state(model, checkpoint["adapter"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        torch.set_rng_state(checkpoint["rng"])
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
        save_checkpoint(
            checkpoint_dir,
            {
                "fingerprint": fingerprint,
                "adapter": _trainable_state(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": torch.get_rng_state(),
                "progress": progress.__dict__,
                "best_adapter": best_state,
            },
        )

    model.train()
    batches = micro_batches(train_samples, training)
    for _ in range(progress.step * accumulation):  # the micro-batches a resumed run already trained on
        next(batches)
    log_every = max(1, total_steps // 50)
    for step in range(progress.step, total_steps):
        step_started = time.perf_counter()
        width = training.cutoff_len if training.batching == "pad_to_cutoff" else None
        step_batches = [
            collate([train_samples[i] for i in next(batches)], pad_id, device, width) for _ in range(accumulation)
        ]
        step_tokens = sum(predicted_tokens(batch) for batch in step_batches)
        step_loss = 0.0
        for batch in step_batches:
            loss = summed_loss(model, batch) / max(1, step_tokens)
            scaler.scale(loss).backward()
            step_loss += loss.item()
            progress.tokens_seen += int(batch["attention_mask"].sum())
            progress.padded_tokens += batch["attention_mask"].numel()
            progress.samples_seen += len(batch["input_ids"])
        progress.trained_tokens += step_tokens
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
        lr = scheduler.get_last_lr()[0]
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        progress.train_seconds += time.perf_counter() - step_started
        progress.step_losses.append(step_loss)
        progress.step = done = step + 1
        if done % log_every == 0 or done in (1, total_steps):
            log(f"step {done}/{total_steps} loss {step_loss:.4f} lr {lr:.2e}")
        if eval_samples and (done % training.eval_steps == 0 or done == total_steps):
            eval_loss = evaluate(model, eval_samples, training.micro_batch_size, pad_id, device)
            progress.eval_history.append({"step": done, "eval_loss": eval_loss})
            log(f"step {done}/{total_steps} eval loss {format_loss(eval_loss)}")
            if eval_loss is not None and (progress.best_eval_loss is None or eval_loss < progress.best_eval_loss):
                progress.best_step, progress.best_eval_loss = done, eval_loss
                best_state = _trainable_state(model)
        if checkpoint_dir is not None and done % training.checkpoint_steps == 0 and done < total_steps:
            save_state()

    final_eval_loss = progress.eval_history[-1]["eval_loss"] if progress.eval_history else None
    kept_best = training.keep_best and best_state is not None and progress.best_step != total_steps
    if kept_best:
        _load_trainable_state(model, best_state)
        log(f"keeping the weights of step {progress.best_step} (best eval loss {progress.best_eval_loss:.4f})")
    summary = {
        "adapter": adapter.name,
        "base_model": base_ref,
        "data_version": data_version,
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
        "warmup_steps": warmup_steps,
        "epochs_seen": progress.samples_seen / len(train_samples),
        "tokens_seen": progress.tokens_seen,
        "padded_tokens": progress.padded_tokens,
        "real_token_ratio": progress.tokens_seen / max(1, progress.padded_tokens),
        "trained_tokens": progress.trained_tokens,
        "train_seconds": round(progress.train_seconds, 3),
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
    with staged_output_dir(out_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        run_config = {"adapter": adapter.model_dump(mode="json"), "base_model": base_ref, "data_version": data_version}
        (staging / CONFIG_FILE).write_text(json.dumps(run_config, indent=2) + "\n", encoding="utf-8")
        write_loss_curve(progress.step_losses, progress.eval_history, staging / LOSS_CURVE_FILE)
        if training.export_merged:
            export_merged(base_ref, staging, tokenizer, staging / MERGED_DIR)
        summary["wall_time_s"] = round(time.perf_counter() - started, 3)
        (staging / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if checkpoint_dir is not None:
        (checkpoint_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
    log(f"saved adapter '{adapter.name}' to {out_dir} in {summary['wall_time_s']} s")
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
) -> dict:
    """Train ``adapter`` on a training-set Parquet file (its ``train`` and ``eval`` splits)."""
    from . import corpus
    from .storage import read_parquet

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
    )
