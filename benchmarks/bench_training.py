"""Training throughput: the toy comparison of batchings, and a real-shaped model against trl's SFTTrainer.

Toy: builds the tiny offline base, makes a few thousand synthetic multi-turn
conversations, and trains the same LoRA for the same optimizer steps three times, each in
its own child process (so each peak RSS is its own): ``batching: length_grouped`` (this
project), ``random_dynamic`` (samples in the seeded random order, each micro-batch padded
to its own longest sample, no length grouping or packing; not a project setting, the
child swaps the trainer's batch order for ``shuffled_batches``) and ``batching:
pad_to_cutoff`` with cutoff 512 (the original's approach). Besides the overall speed-up
it prints dynamic padding's alone (random_dynamic vs pad_to_cutoff) and length
grouping's alone (length_grouped vs random_dynamic).

Real shape: a randomly initialised Llama with a 32,000-token vocabulary (Llama-2's) and
a byte-level BPE tokenizer of 32,000 ids trained here on synthetic text, trained on the
same synthetic conversations by this project's trainer and by trl's ``SFTTrainer``, each
in its own child process, with the same LoRA, micro-batch, accumulation, steps, learning
rate, AdamW (fused where torch has it) and assistant-only labels: trl gets the project's
pre-tokenized ``input_ids`` and an ``assistant_masks`` column, ``group_by_length``
sampling and no evaluation during training. Both are then scored by one held-out loss
function on one shared evaluation set. Prints real tokens/s, peak RSS, held-out loss
and the ratios.

    .venv/bin/python benchmarks/bench_training.py [--only toy|real] [--conversations 3000] [--steps 12]
        [--real-conversations 600] [--real-steps 8] [--real-layers 4] [--real-hidden 512] [--trl-padding-free]
        [--project-option packing] [--project-option gradient_checkpointing]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "river mountain cloud apple orange table chair light dark water fire garden train music window paper "
    "stone bread coffee winter summer forest ocean city market doctor teacher python list error install "
    "health symptom treatment question answer history budget travel recipe exercise sleep"
).split()
REAL_VOCAB = 32_000  # Llama-2's vocabulary
REAL_EVAL_CONVERSATIONS = 48
REAL_MICRO_BATCH, REAL_ACCUMULATION, REAL_LEARNING_RATE, REAL_CUTOFF = 8, 2, 1e-3, 512
# Toy baseline with no project setting: micro-batches in random order, each padded to its longest sample.
RANDOM_DYNAMIC = "random_dynamic"
TOY_VARIANTS = ("length_grouped", RANDOM_DYNAMIC, "pad_to_cutoff")


def synthetic_conversations(count: int, seed: int = 0, words: list[str] = WORDS):
    """Conversations of 1-5 exchanges with answers of varied length, like a self-chat corpus."""
    from baize_assets.core.prompts import Turn

    rng = random.Random(seed)
    conversations = []
    for _ in range(count):
        turns = []
        for _ in range(rng.choice([1, 2, 3, 3, 4, 5])):
            question = f"What about the {rng.choice(words)} and the {rng.choice(words)}?"
            answer = " ".join(rng.choice(words) for _ in range(rng.randint(5, 40))) + "."
            turns += [Turn("human", question), Turn("ai", answer)]
        conversations.append(turns)
    return conversations


def pseudo_words(count: int, seed: int = 1) -> list[str]:
    """Distinct made-up words, so a 32,000-id BPE vocabulary fills up and the data uses much of it."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
    words: set[str] = set()
    while len(words) < count:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def real_conversations(count: int) -> tuple[list, list]:
    """The real-shape run's train and shared eval conversations."""
    words = pseudo_words(20_000)[:6_000]
    conversations = synthetic_conversations(count + REAL_EVAL_CONVERSATIONS, seed=7, words=words)
    return conversations[REAL_EVAL_CONVERSATIONS:], conversations[:REAL_EVAL_CONVERSATIONS]


def build_real_base(out: Path, layers: int, hidden: int) -> dict:
    """A seeded, randomly initialised Llama of Llama-2's vocabulary with a 32,000-id tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from baize_assets.core.model.tiny_base import train_tokenizer
    from baize_assets.core.prompts import render_conversation

    rng = random.Random(3)
    words = pseudo_words(20_000)
    texts = [render_conversation(turns) for turns in synthetic_conversations(2_000, seed=7, words=words[:6_000])]
    texts += [" ".join(rng.choice(words) for _ in range(200)) for _ in range(3_000)]
    tokenizer = train_tokenizer(texts, REAL_VOCAB)
    config = LlamaConfig(
        vocab_size=REAL_VOCAB,
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3 // 32 * 32 + 32,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"tokenizer_ids": len(tokenizer), "parameters": sum(p.numel() for p in model.parameters())}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_toy_variant(variant: str, base: Path, conversations: int, steps: int, out: Path) -> dict:
    from baize_assets.core.config.pipeline import AdapterConfig, TrainingConfig
    from baize_assets.core.model.batching import shuffled_batches
    from baize_assets.core.train import trainer as trainer

    if variant == RANDOM_DYNAMIC:
        # length_grouped's collation (pad to the micro-batch's longest sample) fed pad_to_cutoff's
        # seeded random order: dynamic padding without length grouping. Only this child is patched.
        trainer.micro_batches = lambda lengths, settings: shuffled_batches(
            len(lengths), settings.micro_batch_size, settings.seed
        )
    training = TrainingConfig(
        batching="length_grouped" if variant == RANDOM_DYNAMIC else variant,
        cutoff_len=512,
        max_steps=steps,
        micro_batch_size=8,
        effective_batch_size=32,
        learning_rate=2e-3,
        warmup_steps=2,
        eval_size=0.01,
        eval_steps=10_000,
        launcher={"kind": "in_process"},
    )
    adapter = AdapterConfig(name=f"bench_{variant}", sources=["synthetic"], training=training)
    summary = trainer.train_adapter(synthetic_conversations(conversations), adapter, str(base), out, log=lambda _: None)
    return {
        "tokens_per_second": summary["tokens_per_second"],
        "tokens_per_cpu_second": summary["tokens_seen"] / summary["train_cpu_seconds"],
        "real_token_ratio": summary["real_token_ratio"],
        "train_seconds": summary["train_seconds"],
        "tokens_seen": summary["tokens_seen"],
        "padded_tokens": summary["padded_tokens"],
        "train_loss_final": summary["train_loss_final"],
        "peak_rss_mib": peak_rss_mib(),
    }


def real_training_config(steps: int):
    from baize_assets.core.config.pipeline import TrainingConfig

    return TrainingConfig(
        cutoff_len=REAL_CUTOFF,
        max_steps=steps,
        micro_batch_size=REAL_MICRO_BATCH,
        effective_batch_size=REAL_MICRO_BATCH * REAL_ACCUMULATION,
        learning_rate=REAL_LEARNING_RATE,
        warmup_steps=1,
        eval_steps=10**6,
        checkpoint_steps=10**6,
        keep_best=False,
        launcher={"kind": "in_process"},
    )


def run_real_project(base: Path, conversations: int, steps: int, out: Path, option: str | None) -> dict:
    from baize_assets.core.config.pipeline import AdapterConfig
    from baize_assets.core.train.trainer import train_adapter

    train, held_out = real_conversations(conversations)
    training = real_training_config(steps).model_copy(update={option: True} if option else {})
    adapter = AdapterConfig(name="bench_real", sources=["synthetic"], training=training)
    summary = train_adapter(train, adapter, str(base), out, log=lambda _: None, eval_conversations=held_out)
    return {
        "tokens_per_second": summary["tokens_per_second"],
        "train_seconds": summary["train_seconds"],
        "tokens_per_cpu_second": summary["tokens_seen"] / summary["train_cpu_seconds"],
        "tokens_seen": summary["tokens_seen"],
        "held_out_loss": summary["eval_loss_final"],
        "held_out_loss_before": summary["eval_loss_before"],
        "peak_rss_mib": peak_rss_mib(),
    }


def run_real_trl(base: Path, conversations: int, steps: int, out: Path, padding_free: bool) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig as PeftLoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from baize_assets.core.config.pipeline import LoraConfig
    from baize_assets.core.model.batching import IGNORE_INDEX
    from baize_assets.core.model.lm_loss import evaluate
    from baize_assets.core.model.samples import fit_conversations

    training = real_training_config(steps)
    lora = LoraConfig()
    tokenizer = AutoTokenizer.from_pretrained(base)
    train, held_out = real_conversations(conversations)
    train_samples, _ = fit_conversations(train, tokenizer, training)
    eval_samples, _ = fit_conversations(held_out, tokenizer, training)
    dataset = Dataset.from_dict(
        {
            "input_ids": [s.input_ids for s in train_samples],
            "assistant_masks": [[int(label != IGNORE_INDEX) for label in s.labels] for s in train_samples],
        }
    )
    args = SFTConfig(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=training.micro_batch_size,
        gradient_accumulation_steps=REAL_ACCUMULATION,
        learning_rate=training.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=training.warmup_steps,
        weight_decay=0.01,  # torch's AdamW default, which the project's trainer uses
        max_grad_norm=1.0,
        optim="adamw_torch_fused",
        bf16=False,  # fp32 on CPU, as the project's trainer
        train_sampling_strategy="group_by_length",
        padding_free=padding_free,
        max_length=None if padding_free else training.cutoff_len,  # the samples already fit
        eval_strategy="no",
        save_strategy="no",
        logging_steps=10**6,
        report_to="none",
        disable_tqdm=True,
        seed=training.seed,
        dataloader_num_workers=0,
    )
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_config = PeftLoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    started, cpu_started = time.perf_counter(), time.process_time()
    metrics = trainer.train().metrics
    train_seconds, train_cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    tokens = int(trainer._total_train_tokens)
    pad_id = tokenizer.pad_token_id
    return {
        "tokens_per_second": tokens / train_seconds,
        "train_seconds": train_seconds,
        "tokens_per_cpu_second": tokens / train_cpu_seconds,
        "train_runtime": metrics["train_runtime"],
        "tokens_seen": tokens,
        "held_out_loss": evaluate(trainer.model, eval_samples, training.micro_batch_size, pad_id, "cpu"),
        "peak_rss_mib": peak_rss_mib(),
    }


def child(variant: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--variant", variant, "--base", str(args.base_dir)]
    for name in ("conversations", "steps", "real_conversations", "real_steps"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.trl_padding_free:
        command.append("--trl-padding-free")
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{variant} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - started
    return result


def toy(args: argparse.Namespace) -> None:
    from baize_assets.core.config.pipeline import TinyBaseConfig
    from baize_assets.core.model.tiny_base import build_tiny_base
    from baize_assets.core.prompts import render_conversation

    args.base_dir = Path(args.tmp) / "tiny_llama"
    texts = [render_conversation(turns) for turns in synthetic_conversations(args.conversations)]
    build_tiny_base(texts[:500], TinyBaseConfig(pretrain_steps=0), args.base_dir)
    results = {variant: child(variant, args) for variant in TOY_VARIANTS}
    print(f"tiny base, {args.conversations} synthetic conversations, {args.steps} optimizer steps of 4 x 8 samples")
    header = ("batching", "real tok/s", "tok/CPU-s", "real ratio", "loop s", "padded tok", "peak RSS")
    print("{:16s} {:>11s} {:>10s} {:>10s} {:>8s} {:>11s} {:>9s}".format(*header))
    for variant, r in results.items():
        print(
            f"{variant:16s} {r['tokens_per_second']:11.0f} {r['tokens_per_cpu_second']:10.0f} "
            f"{r['real_token_ratio']:10.3f} {r['train_seconds']:8.2f} "
            f"{r['padded_tokens']:11d} {r['peak_rss_mib']:7.0f} MiB"
        )
    def ratios(faster: str, slower: str) -> str:
        wall = results[faster]["tokens_per_second"] / results[slower]["tokens_per_second"]
        cpu = results[faster]["tokens_per_cpu_second"] / results[slower]["tokens_per_cpu_second"]
        return f"{wall:.2f}x ({cpu:.2f}x per CPU-second)"

    print(f"speed-up in real tokens/s, length_grouped vs pad_to_cutoff(512): "
          f"{ratios('length_grouped', 'pad_to_cutoff')} (target >= 2x)")  # fmt: skip
    print(f"  dynamic padding alone, {RANDOM_DYNAMIC} vs pad_to_cutoff(512): {ratios(RANDOM_DYNAMIC, 'pad_to_cutoff')}")
    print(f"  length grouping alone, length_grouped vs {RANDOM_DYNAMIC}: {ratios('length_grouped', RANDOM_DYNAMIC)}")


def real(args: argparse.Namespace) -> None:
    args.base_dir = Path(args.tmp) / "real_llama"
    shape = build_real_base(args.base_dir, args.real_layers, args.real_hidden)
    variants = ["project", *(f"project+{option}" for option in args.project_option), "trl"]
    results = {variant: child(variant, args) for variant in variants}
    print(
        f"\nreal shape: Llama, vocabulary {REAL_VOCAB} ({shape['tokenizer_ids']} tokenizer ids), {args.real_layers} "
        f"layers of {args.real_hidden}, {shape['parameters'] / 1e6:.1f}M parameters, random init; "
        f"{args.real_conversations} train / {REAL_EVAL_CONVERSATIONS} held-out conversations, {args.real_steps} steps "
        f"of {REAL_ACCUMULATION} x {REAL_MICRO_BATCH}, lr {REAL_LEARNING_RATE}, "
        f"trl padding_free={args.trl_padding_free}"
    )
    header = ("trainer", "real tok/s", "tok/CPU-s", "loop s", "child s", "peak RSS", "held-out loss")
    print("{:30s} {:>11s} {:>10s} {:>8s} {:>9s} {:>10s} {:>14s}".format(*header))
    for variant, r in results.items():
        print(
            f"{variant:30s} {r['tokens_per_second']:11.0f} {r['tokens_per_cpu_second']:10.0f} "
            f"{r['train_seconds']:8.1f} {r['wall_seconds']:9.1f} {r['peak_rss_mib']:6.0f} MiB "
            f"{r['held_out_loss']:14.4f}"
        )
    project, trl = results["project"], results["trl"]
    print(f"held-out loss before training: {project['held_out_loss_before']:.4f}")
    print(
        f"project / trl: {project['tokens_per_second'] / trl['tokens_per_second']:.2f}x real tokens/s (goal >= 1.2x), "
        f"{project['tokens_per_cpu_second'] / trl['tokens_per_cpu_second']:.2f}x per CPU-second, "
        f"{project['peak_rss_mib'] / trl['peak_rss_mib']:.2f}x peak RSS (goal <= 1), held-out loss "
        f"{project['held_out_loss']:.4f} vs {trl['held_out_loss']:.4f} (goal: equal or lower)"
    )
    for variant in variants[1:-1]:
        r = results[variant]
        print(
            f"{variant} / trl: {r['tokens_per_second'] / trl['tokens_per_second']:.2f}x real tokens/s, "
            f"{r['tokens_per_cpu_second'] / trl['tokens_per_cpu_second']:.2f}x per CPU-second, "
            f"{r['peak_rss_mib'] / trl['peak_rss_mib']:.2f}x peak RSS, held-out loss {r['held_out_loss']:.4f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("toy", "real"))
    parser.add_argument("--conversations", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--real-conversations", type=int, default=600)
    parser.add_argument("--real-steps", type=int, default=8)
    parser.add_argument("--real-layers", type=int, default=4)
    parser.add_argument("--real-hidden", type=int, default=512)
    parser.add_argument("--trl-padding-free", action="store_true", help="trl flattens each micro-batch into one row")
    parser.add_argument(
        "--project-option", action="append", default=[], choices=("packing", "gradient_checkpointing"),
        help="also train the project with this option on (repeatable)",
    )
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # set in the child processes
    parser.add_argument("--base", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "adapter"
            if args.variant.startswith("project"):
                option = args.variant.partition("+")[2] or None
                result = run_real_project(args.base, args.real_conversations, args.real_steps, out, option)
            elif args.variant == "trl":
                result = run_real_trl(args.base, args.real_conversations, args.real_steps, out, args.trl_padding_free)
            else:
                result = run_toy_variant(args.variant, args.base, args.conversations, args.steps, out)
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = tmp
        if args.only != "real":
            toy(args)
        if args.only != "toy":
            real(args)


if __name__ == "__main__":
    main()
