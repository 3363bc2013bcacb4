"""Aggregate rate of 1, 2 and 4 collector processes sharing one rate limit, against the limit.

The simulated teacher runs in its own process and enforces ``--limit`` chat completions
per ``--window-s`` seconds for the key (a requests-per-minute limit over a shorter
window, so a run takes seconds, not minutes); every collector process is configured
with that same limit, as ``requests_per_minute``, and shares it through the store
(``--store sqlite``, a file in a temporary folder, or ``--store redis`` at
``BAIZE_REDIS_URL``). Printed per process count, from the server's own admission times:
the aggregate achieved rate against the limit, the busiest window against the limit, and
the 429s the server sent. With a shared limit the rate does not grow with the process
count; without one it would be the count times the limit, less what the 429s refuse.

``--headroom`` is how far under the limit the clients pace: at 2% the windows run close to
full, and the requests every process has in flight (counted in the store) decide when the
provider's ``x-ratelimit-remaining-requests`` is too low to go on.

    .venv/bin/python benchmarks/bench_shared_limit.py                 # sqlite, 120 per 10 s, 5% headroom
    .venv/bin/python benchmarks/bench_shared_limit.py --headroom 0.02
    BAIZE_REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python benchmarks/bench_shared_limit.py --store redis
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

from baize_assets.teacher.server import busiest_window

TEACHER = textwrap.dedent(
    """
    import sys
    from baize_assets.teacher.server import SimulatedTeacher

    limit, window_s, latency_s = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    with SimulatedTeacher(requests_per_window=limit, rate_window_s=window_s, latency_s=latency_s) as teacher:
        print(teacher.base_url, flush=True)
        sys.stdin.read()  # serve until the benchmark closes this pipe
    """
)

COLLECTOR = textwrap.dedent(
    """
    import json, sys, time
    import pandas as pd
    from pathlib import Path
    from baize_assets.core.config.pipeline import RateLimitConfig, RateLimitStoreConfig, TeacherConfig
    from baize_assets.core.collect.collector import collect_transcripts
    from baize_assets.core.collect.stores import open_limit_store
    from baize_assets.core.storage import seed_id

    start_at, base_url, store_kind, store_path, rpm, headroom, worker, seeds = sys.argv[1:]
    texts = [f"Worker {worker} question {n}: how does topic {n % 31} work?" for n in range(int(seeds))]
    frame = pd.DataFrame([{"seed_id": seed_id(t), "seed": t, "source": "bench", "shard": 0} for t in texts])
    teacher = TeacherConfig(max_concurrency=8, rate_limit=RateLimitConfig(requests_per_minute=float(rpm),
                                                                          headroom=float(headroom)))
    store = open_limit_store(RateLimitStoreConfig(kind=store_kind), Path(store_path))
    time.sleep(max(float(start_at) - time.time(), 0))
    result = collect_transcripts(frame, teacher, "bench-key", base_url, log=lambda _: None, limit_store=store)
    print(json.dumps({"failures": dict(result.failures), "retries": dict(result.retries)}))
    """
)


def measure(processes: int, args: argparse.Namespace, folder: Path) -> dict:
    teacher = subprocess.Popen([sys.executable, "-c", TEACHER, str(args.limit), str(args.window_s),
                                str(args.latency_ms / 1000)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        base_url = teacher.stdout.readline().strip()
        rpm = args.limit * 60 / args.window_s
        seeds = round(args.limit / args.window_s * args.seconds / processes)
        store_path = folder / f"limits-{processes}.sqlite"
        start_at = str(time.time() + 3.0)  # after every collector has imported
        collectors = [
            subprocess.Popen([sys.executable, "-c", COLLECTOR, start_at, base_url, args.store, str(store_path),
                              str(rpm), str(args.headroom), str(worker), str(seeds)], stdout=subprocess.PIPE, text=True)
            for worker in range(processes)
        ]
        outcomes = [json.loads(c.communicate(timeout=args.seconds * 10 + 60)[0]) for c in collectors]
        with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats", timeout=10) as response:
            stats = json.load(response)
    finally:
        teacher.stdin.close()
        teacher.wait(timeout=30)
    times = sorted(stats["admitted_at_s"])
    rate = (len(times) - 1) / (times[-1] - times[0])
    return {
        "processes": processes,
        "requests": len(times),
        "rate_per_s": rate,
        "rate_of_limit": rate / (args.limit / args.window_s),
        "busiest_window": busiest_window(times, args.window_s),
        "refused_429": stats["requests_by_outcome"].get("rate_limited_by_limit", 0),
        "failed_seeds": sum(sum(o["failures"].values()) for o in outcomes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=120, help="requests the teacher admits per window")
    parser.add_argument("--window-s", type=float, default=10.0, help="the teacher's rate window")
    parser.add_argument("--seconds", type=float, default=25.0, help="how long each measurement collects")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--headroom", type=float, default=0.05, help="the client's pace below the limit")
    parser.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    print(f"limit {args.limit} per {args.window_s:g} s ({args.limit / args.window_s:g}/s), store {args.store}, "
          f"headroom {args.headroom:g}, {args.latency_ms:g} ms per call")
    print(f"{'processes':>9} {'requests':>8} {'rate/s':>7} {'of limit':>8} {'busiest window':>15} {'429s':>5}")
    with tempfile.TemporaryDirectory() as folder:
        for processes in args.processes:
            row = measure(processes, args, Path(folder))
            print(f"{row['processes']:>9} {row['requests']:>8} {row['rate_per_s']:>7.2f} {row['rate_of_limit']:>8.1%} "
                  f"{row['busiest_window']:>7} / {args.limit:<5} {row['refused_429']:>5}"
                  + (f"  ({row['failed_seeds']} seeds failed)" if row["failed_seeds"] else ""))


if __name__ == "__main__":
    main()
