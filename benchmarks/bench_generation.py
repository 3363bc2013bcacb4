"""Sampling k answers per seed from a trained adapter: batched generation against one answer at a time.

Builds the tiny offline base and trains a small adapter on synthetic conversations
(seconds), then samples ``--k`` answers for each of ``--seeds`` seed questions twice
with the same sampling parameters and a seed per answer: once submitted together to
:class:`~baize_assets.core.chat.batched.BatchedGenerator` (up to ``--max-batch``
rows per forward pass), once one request at a time (a batch of one each) — the baseline.
Each answer has its own seed, so both runs draw the same answers and do the same work;
the figures count how many came out identical.

    .venv/bin/python benchmarks/bench_generation.py [--seeds 200] [--k 4] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from baize_assets.core.chat.batched import BatchedGenerator, Completion, SamplingParams
from baize_assets.core.chat.chat_model import load_chat_model
from baize_assets.core.config.pipeline import AdapterConfig, TinyBaseConfig, TrainingConfig
from baize_assets.core.model.tiny_base import build_tiny_base
from baize_assets.core.prompts import Turn, render_conversation
from baize_assets.core.train.trainer import train_adapter

WORDS = (
    "river mountain cloud apple orange table chair light dark water fire garden train music "
    "window paper stone bread coffee winter summer forest ocean city market doctor teacher"
).split()


def conversations(count: int, rng: random.Random) -> list[list[Turn]]:
    data = []
    for _ in range(count):
        topic = rng.choice(WORDS)
        answer = f"The {topic} is " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + "."
        data.append([Turn("human", f"What do you know about the {topic} and the {rng.choice(WORDS)}?"),
                     Turn("ai", answer)])
    return data


def build_adapter(root: Path) -> Path:
    data = conversations(120, random.Random(0))
    build_tiny_base([render_conversation(turns) for turns in data], TinyBaseConfig(pretrain_steps=60), root / "base")
    adapter = AdapterConfig(
        name="bench",
        sources=["synthetic"],
        training=TrainingConfig(learning_rate=5e-3, max_steps=10, micro_batch_size=8, effective_batch_size=8,
                                warmup_steps=1, eval_size=0.1),
    )
    train_adapter(data, adapter, str(root / "base"), root / "adapter", log=lambda _: None)
    return root / "adapter"


def timed(run) -> tuple[list[Completion], float]:
    started = time.perf_counter()
    completions = run()
    return completions, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--k", type=int, default=4, help="answers per seed")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--max-batch", type=int, default=64)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        chat = load_chat_model(build_adapter(Path(tmp)))
        print(f"tiny base + adapter built and loaded in {time.perf_counter() - started:.1f} s")
        seeds = [[turns[0]] for turns in conversations(args.seeds, random.Random(1))]
        jobs = [(seed, SamplingParams(max_new_tokens=args.max_tokens, temperature=args.temperature,
                                      top_p=args.top_p, seed=index * args.k + j))
                for index, seed in enumerate(seeds) for j in range(args.k)]

        with BatchedGenerator(chat, max_batch=args.max_batch, batch_wait_ms=5) as generator:
            batched, batched_s = timed(lambda: [f.result() for f in [generator.submit(h, p) for h, p in jobs]])
            stats = generator.stats
        with BatchedGenerator(chat, max_batch=1, batch_wait_ms=0) as generator:
            one_by_one, one_by_one_s = timed(lambda: [generator.submit(h, p).result() for h, p in jobs])

    answers = len(jobs)
    tokens = sum(c.completion_tokens for c in batched)
    same = sum(a.text == b.text for a, b in zip(batched, one_by_one))
    print(f"{args.seeds} seeds x k={args.k} = {answers} answers, max_tokens={args.max_tokens}, "
          f"temperature={args.temperature}, top_p={args.top_p}, {tokens} tokens generated (batched), "
          f"{sum(c.completion_tokens for c in one_by_one)} (one at a time)")
    print(f"{'mode':<24}{'seconds':>10}{'answers/s':>12}{'tokens/s':>12}")
    for name, seconds, completions in (
        ("one request at a time", one_by_one_s, one_by_one),
        (f"batched (max {args.max_batch})", batched_s, batched),
    ):
        print(f"{name:<24}{seconds:>10.1f}{answers / seconds:>12.1f}"
              f"{sum(c.completion_tokens for c in completions) / seconds:>12.0f}")
    ratio = one_by_one_s / batched_s
    print(f"batched / one at a time: {ratio:.1f}x answers/s (target >= 3x); {stats.steps} forward passes, "
          f"at most {stats.largest_batch} rows in one, {stats.batches} groups of requests started; "
          f"{same}/{answers} answers identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
