"""Self-chat collection throughput, rate-limit accuracy and memory against the simulated teacher.

The teacher runs in its own process (so its threads do not share this process's GIL)
with a fixed latency per call. Figures printed:

1. a sequential loop, one call at a time with the synchronous client, as the original
   Baize collector did (without its extra one-second sleep), on a sample of the seeds;
2. a plain asyncio loop, the leanest use of the same client library: one ``AsyncOpenAI``,
   an ``asyncio.Semaphore(in_flight)`` and ``asyncio.gather``, on the same event loop the
   collector uses (uvloop where installed), no retries, cache, limiter or budget;
3. the collector with ``--in-flight`` requests in flight on every seed, without and with
   the durable SQLite cache; the speedup over (1), its ratio to (2) and the share of the
   ideal bound ``in_flight / latency`` it reaches; then the same seeds collected by
   ``--processes`` processes (``teacher.processes``), each with ``--in-flight`` in flight,
   and its ratio to the one-process run with the cache; with the collectors' CPU time
   per conversation in each, the rate each would reach with a core per process to itself
   (on a machine with few cores the teacher's process takes one of them);
4. the collector under a requests-per-minute limit: the achieved rate over the run and the
   busiest window seen by the server, against the limit;
5. the peak resident memory of this process.

    .venv/bin/python benchmarks/bench_selfchat.py            # 2,000 seeds, 200 ms, 64 in flight
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import openai

from baize_assets.core.collect.collector import collect_transcripts
from baize_assets.core.collect.parallel import SharedStores, collect_transcripts_in_processes
from baize_assets.core.collect.state import CacheSpec
from baize_assets.core.config.pipeline import RateLimitConfig, RateLimitStoreConfig, TeacherConfig
from baize_assets.core.prompts import self_chat_prompt
from baize_assets.core.storage import seed_id

MODEL = "baize-simulated-teacher"


def seeds_frame(count: int):
    import pandas as pd

    texts = [f"Benchmark question {n}: how does topic {n % 97} relate to case {n}?" for n in range(count)]
    return pd.DataFrame([{"seed_id": seed_id(t), "seed": t, "source": "bench", "shard": 0} for t in texts])


class TeacherProcess:
    """``python -m baize_assets.teacher`` on a free port, in its own process."""

    def __init__(self, latency_ms: float, rpm: int | None = None) -> None:
        command = [sys.executable, "-m", "baize_assets.teacher", "--port", "0", "--latency-ms", str(latency_ms)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.base_url = self.process.stdout.readline().strip()
        if not self.base_url.startswith("http"):
            self.stop()
            raise RuntimeError("the simulated teacher did not start")

    def chat_requests(self) -> int:
        with urllib.request.urlopen(self.base_url.removesuffix("/v1") + "/stats", timeout=5) as response:
            return json.load(response)["requests_by_path"].get("/v1/chat/completions", 0)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class ServerRateProbe:
    """Samples the server's request counter every ``interval_s`` while a run goes on."""

    def __init__(self, teacher: TeacherProcess, interval_s: float = 0.1) -> None:
        self.teacher, self.interval_s = teacher, interval_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        # The counter is read somewhere between these two instants; the midpoint halves the error.
        before = time.monotonic()
        count = self.teacher.chat_requests()
        self.samples.append(((before + time.monotonic()) / 2, count))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "ServerRateProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def busiest_window_per_minute(self, window_s: float) -> float:
        """The highest request rate over any sampled window of about ``window_s`` seconds."""
        best = 0.0
        for i, (t0, n0) in enumerate(self.samples):
            for t1, n1 in self.samples[i + 1 :]:
                if t1 - t0 >= window_s:
                    best = max(best, (n1 - n0) / (t1 - t0) * 60)
                    break
        return best


def sequential_baseline(base_url: str, seeds, count: int) -> float:
    """Calls per second of a one-call-at-a-time loop with the synchronous client."""
    client = openai.OpenAI(api_key="bench", base_url=base_url, max_retries=0)
    started = time.monotonic()
    for seed in seeds["seed"].head(count):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": self_chat_prompt(seed)}], max_tokens=1024
        )
    client.close()
    return count / (time.monotonic() - started)


def plain_async_loop(base_url: str, seeds, in_flight: int) -> float:
    """Calls per second of the plainest concurrent loop on the same client and event loop."""

    async def run() -> None:
        async with openai.AsyncOpenAI(api_key="bench", base_url=base_url, max_retries=0) as client:
            slots = asyncio.Semaphore(in_flight)

            async def one(seed: str) -> None:
                async with slots:
                    await client.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": self_chat_prompt(seed)}], max_tokens=1024
                    )

            await asyncio.gather(*(one(seed) for seed in seeds["seed"]))

    try:
        import uvloop  # the collector's event loop where installed, so both loops run on the same one

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    started = time.monotonic()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(run())
    return len(seeds) / (time.monotonic() - started)


def collector_cpu_s() -> float:
    """CPU seconds of this process and of its collector processes that have ended (the teacher ends last)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_collection(seeds, teacher: TeacherConfig, base_url: str, cache_dir: Path | None) -> tuple[float, int]:
    """Conversations per second of one collection run, and how many failed.

    With a ``cache_dir`` the run is the transcripts step's: the SQLite cache and limit store
    there, in ``teacher.processes`` processes.
    """
    started = time.monotonic()
    if cache_dir is None:
        result = collect_transcripts(seeds, teacher, "bench", base_url, log=lambda _: None)
    else:
        stores = SharedStores(RateLimitStoreConfig(), cache_dir / "limits.sqlite",
                              CacheSpec(cache_dir / "cache.sqlite", "cache"))
        result = collect_transcripts_in_processes(seeds, teacher, "bench", stores, base_url, log=lambda _: None)
    return len(seeds) / (time.monotonic() - started), int(result.transcripts["failure_kind"].notna().sum())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--sequential-sample", type=int, default=50,
                        help="calls of the sequential baseline (its rate does not depend on the count)")
    parser.add_argument("--processes", type=int, default=2, help="collecting processes of the multi-process run")
    parser.add_argument("--rpm", type=float, default=6000.0, help="limit of the rate-limited run")
    parser.add_argument("--rpm-seeds", type=int, default=2000)
    args = parser.parse_args()

    seeds = seeds_frame(args.seeds)
    latency_s = args.latency_ms / 1000
    bound = args.in_flight / latency_s
    teacher = TeacherProcess(args.latency_ms)
    try:
        print(f"simulated teacher: {args.latency_ms:g} ms per call, own process; {args.seeds} seeds")
        sequential = sequential_baseline(teacher.base_url, seeds, args.sequential_sample)
        print(f"sequential loop (1 in flight, {args.sequential_sample} calls): {sequential:.2f} calls/s")

        plain = plain_async_loop(teacher.base_url, seeds, args.in_flight)
        print(f"plain asyncio loop, {args.in_flight} in flight: {plain:.1f} calls/s; {plain / bound:.1%} of the bound "
              f"{bound:.0f}/s")

        concurrent = TeacherConfig(max_concurrency=args.in_flight)
        rate, failed = timed_collection(seeds, concurrent, teacher.base_url, None)
        print(f"collector, {args.in_flight} in flight, no cache: {rate:.1f} conversations/s, failed {failed}; "
              f"{rate / sequential:.1f}x sequential; {rate / plain:.2f}x the plain loop; "
              f"{rate / bound:.1%} of the bound")
        with tempfile.TemporaryDirectory() as cache_dir:
            cpu_before = collector_cpu_s()
            rate, failed = timed_collection(seeds, concurrent, teacher.base_url, Path(cache_dir))
            one_cpu_ms = (collector_cpu_s() - cpu_before) / len(seeds) * 1000
            print(f"collector, {args.in_flight} in flight, SQLite cache: {rate:.1f} conversations/s, failed {failed}; "
                  f"{rate / sequential:.1f}x sequential; {rate / plain:.2f}x the plain loop; "
                  f"{rate / bound:.1%} of the bound")
            started = time.monotonic()
            timed_collection(seeds, concurrent, teacher.base_url, Path(cache_dir))
            print(f"rerun of the finished seeds from the cache: {time.monotonic() - started:.2f} s, 0 calls")
        with tempfile.TemporaryDirectory() as cache_dir:
            several = concurrent.model_copy(update={"processes": args.processes})
            cpu_before = collector_cpu_s()
            spread, failed = timed_collection(seeds, several, teacher.base_url, Path(cache_dir))
            several_cpu_ms = (collector_cpu_s() - cpu_before) / len(seeds) * 1000
            print(f"collector, {args.processes} processes x {args.in_flight} in flight, SQLite cache: {spread:.1f} "
                  f"conversations/s, failed {failed}; {spread / rate:.2f}x the 1-process run; "
                  f"{spread / plain:.2f}x the plain loop; {spread / (bound * args.processes):.1%} of the bound "
                  f"{bound * args.processes:.0f}/s")
            # What the rate would be with a core per process free for the collectors alone.
            one_core, on_cores = 1000 / one_cpu_ms, 1000 / several_cpu_ms * args.processes
            print(f"collector CPU per conversation: {one_cpu_ms:.2f} ms in 1 process ({one_core:.0f}/s a core), "
                  f"{several_cpu_ms:.2f} ms in {args.processes} ({on_cores:.0f}/s on {args.processes} cores, "
                  f"{on_cores / one_core:.2f}x the 1-process run); {os.cpu_count()} cores here, teacher included")

        limited = concurrent.model_copy(update={"rate_limit": RateLimitConfig(requests_per_minute=args.rpm)})
        rpm_seeds = seeds.head(args.rpm_seeds)
        before = teacher.chat_requests()
        with ServerRateProbe(teacher) as probe:
            started = time.monotonic()
            timed_collection(rpm_seeds, limited, teacher.base_url, None)
            elapsed = time.monotonic() - started
        calls = teacher.chat_requests() - before
        # The first request starts at once and the last one ends a latency later.
        achieved = (calls - 1) / (elapsed - latency_s) * 60
        busiest = probe.busiest_window_per_minute(5.0)
        print(f"limit {args.rpm:g} requests/min, {calls} calls: achieved {achieved:.0f}/min "
              f"({achieved / args.rpm:.1%} of the limit); busiest 5 s window at the server {busiest:.0f}/min "
              f"({busiest / args.rpm:.1%})")
    finally:
        teacher.stop()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of the collecting process: {peak_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
