"""Training throughput: length-grouped dynamic padding versus padding every sample to 512.

Builds the tiny offline base, makes a few thousand synthetic multi-turn conversations,
and trains the same LoRA for the same number of optimizer steps twice, each variant in
its own child process (so each peak RSS is its own): ``batching: length_grouped`` (this
project) and ``batching: pad_to_cutoff`` with cutoff 512 (the original's approach).
Prints real (non-pad) tokens per second, the real-token ratio, the loop time and the
peak memory of each, and the speed-up.

    .venv/bin/python benchmarks/bench_training.py [--conversations 3000] [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

WORDS = (
    "river mountain cloud apple orange table chair light dark water fire garden train music window paper "
    "stone bread coffee winter summer forest ocean city market doctor teacher python list error install "
    "health symptom treatment question answer history budget travel recipe exercise sleep"
).split()


def synthetic_conversations(count: int, seed: int = 0):
    """Conversations of 1-5 exchanges with answers of varied length, like a self-chat corpus."""
    from baize_assets.core.prompts import Turn

    rng = random.Random(seed)
    conversations = []
    for _ in range(count):
        turns = []
        for _ in range(rng.choice([1, 2, 3, 3, 4, 5])):
            question = f"What about the {rng.choice(WORDS)} and the {rng.choice(WORDS)}?"
            answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))) + "."
            turns += [Turn("human", question), Turn("ai", answer)]
        conversations.append(turns)
    return conversations


def run_variant(batching: str, base: Path, conversations: int, steps: int, out: Path) -> dict:
    from baize_assets.core.config import AdapterConfig, TrainingConfig
    from baize_assets.core.training import train_adapter

    training = TrainingConfig(
        batching=batching,
        cutoff_len=512,
        max_steps=steps,
        micro_batch_size=8,
        effective_batch_size=32,
        learning_rate=2e-3,
        warmup_steps=2,
        eval_size=0.01,
        eval_steps=10_000,
        run_in_subprocess=False,
    )
    adapter = AdapterConfig(name=f"bench_{batching}", sources=["synthetic"], training=training)
    summary = train_adapter(synthetic_conversations(conversations), adapter, str(base), out, log=lambda _: None)
    return {
        "tokens_per_second": summary["tokens_per_second"],
        "real_token_ratio": summary["real_token_ratio"],
        "train_seconds": summary["train_seconds"],
        "tokens_seen": summary["tokens_seen"],
        "padded_tokens": summary["padded_tokens"],
        "train_loss_final": summary["train_loss_final"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # set in the child processes
    parser.add_argument("--base", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        with tempfile.TemporaryDirectory() as tmp:
            result = run_variant(args.variant, args.base, args.conversations, args.steps, Path(tmp) / "adapter")
        print(json.dumps(result))
        return

    from baize_assets.core.config import TinyBaseConfig
    from baize_assets.core.prompts import render_conversation
    from baize_assets.core.tiny_base import build_tiny_base

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "tiny_llama"
        texts = [render_conversation(turns) for turns in synthetic_conversations(args.conversations)]
        build_tiny_base(texts[:500], TinyBaseConfig(pretrain_steps=0), base)
        results = {}
        for variant in ("length_grouped", "pad_to_cutoff"):
            child = subprocess.run(
                [sys.executable, __file__, "--variant", variant, "--base", str(base),
                 "--conversations", str(args.conversations), "--steps", str(args.steps)],
                capture_output=True, text=True, check=True,
            )
            results[variant] = json.loads(child.stdout.strip().splitlines()[-1])

    print(f"tiny base, {args.conversations} synthetic conversations, {args.steps} optimizer steps of 4 x 8 samples")
    header = ("batching", "real tok/s", "real ratio", "loop s", "padded tok", "peak RSS")
    print("{:16s} {:>11s} {:>10s} {:>8s} {:>11s} {:>9s}".format(*header))
    for variant, r in results.items():
        print(
            f"{variant:16s} {r['tokens_per_second']:11.0f} {r['real_token_ratio']:10.3f} {r['train_seconds']:8.2f} "
            f"{r['padded_tokens']:11d} {r['peak_rss_mib']:7.0f} MiB"
        )
    speedup = results["length_grouped"]["tokens_per_second"] / results["pad_to_cutoff"]["tokens_per_second"]
    print(f"speed-up in real tokens/s, length_grouped vs pad_to_cutoff(512): {speedup:.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
