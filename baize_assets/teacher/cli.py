"""The simulated teacher's command line: ``python -m baize_assets.teacher`` and ``baize teacher``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Sequence

from .batches import BatchLimits
from .faults import ALL_FAULT_KINDS, DEFAULT_FAULT_KINDS
from .protocol import DEFAULT_MODEL
from .server import API_KEY_ENV, SimulatedTeacher


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m baize_assets.teacher",
        description="Run the simulated (placeholder) OpenAI-compatible teacher in the foreground.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind; 0 picks a free one (default 8000)")
    parser.add_argument("--model", action="append", dest="models", metavar="NAME",
                        help=f"model name to serve; repeatable (default {DEFAULT_MODEL})")
    parser.add_argument("--reasoning-model", action="append", dest="reasoning_models", default=[], metavar="NAME",
                        help="model name to serve with OpenAI's reasoning-model rules; repeatable")
    parser.add_argument("--not-a-judge", action="store_true",
                        help="answer judge prompts as a chat model that is no judge does")
    parser.add_argument("--no-structured-output", action="store_true", help="refuse response_format")
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                        help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}, which keeps "
                             "the key out of the process list; unset = accept any key)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every API request")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of chat completions that fault (0..1)")
    parser.add_argument("--faults", default=",".join(DEFAULT_FAULT_KINDS),
                        help=f"comma-separated fault kinds (default {','.join(DEFAULT_FAULT_KINDS)}; "
                             f"all: {','.join(ALL_FAULT_KINDS)})")
    parser.add_argument("--fault-seed", type=int, default=0, help="seed of the deterministic fault schedule")
    parser.add_argument("--retry-after-s", type=float, default=1.0, help="Retry-After value on simulated 429s")
    parser.add_argument("--hang-s", type=float, default=30.0, help="how long a hanging request sleeps")
    parser.add_argument("--drip-interval-s", type=float, default=0.2,
                        help="pause between the few bytes a slow_drip answer sends at a time")
    parser.add_argument("--oversized-chars", type=int, default=5_000_000,
                        help="characters of text in an oversized answer")
    parser.add_argument("--rpm", type=int, default=None,
                        help="enforce at most this many chat completions per minute (429 beyond; default off)")
    parser.add_argument("--tpm", type=int, default=None,
                        help="enforce at most this many tokens per minute per API key (429 beyond; default off)")
    parser.add_argument("--batch-delay-s", type=float, default=0.5,
                        help="how long a batch takes from creation to completion (default 0.5)")
    parser.add_argument("--batch-failure-rate", type=float, default=0.0,
                        help="share of batch lines that fail with an error (0..1)")
    parser.add_argument("--batch-expire", type=int, default=0,
                        help="the first N batches expire with half of their lines done")
    parser.add_argument("--batch-max-requests", type=int, default=BatchLimits.max_requests,
                        help=f"requests one batch may hold (default {BatchLimits.max_requests:,}, OpenAI's)")
    parser.add_argument("--batch-max-bytes", type=int, default=BatchLimits.max_file_bytes,
                        help=f"bytes one batch input file may hold (default {BatchLimits.max_file_bytes:,}, OpenAI's)")
    parser.add_argument("--batch-enqueued-tokens", type=int, default=None,
                        help="prompt tokens a model may hold in unfinished batches (default: no limit)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; the first stdout line is the base URL."""
    args = _parse_args(argv)
    try:
        teacher = SimulatedTeacher(
            args.host, args.port,
            models=args.models,
            reasoning_models=args.reasoning_models,
            judge=not args.not_a_judge,
            structured_output="refused" if args.no_structured_output else "json_schema",
            api_key=args.api_key or None,
            latency_s=args.latency_ms / 1000,
            fault_rate=args.fault_rate,
            fault_kinds=[k.strip() for k in args.faults.split(",") if k.strip()],
            fault_seed=args.fault_seed,
            retry_after_s=args.retry_after_s,
            hang_s=args.hang_s,
            drip_interval_s=args.drip_interval_s,
            oversized_chars=args.oversized_chars,
            requests_per_window=args.rpm,
            tokens_per_window=args.tpm,
            batch_completion_delay_s=args.batch_delay_s,
            batch_failure_rate=args.batch_failure_rate,
            batch_expire=args.batch_expire,
            batch_limits=BatchLimits(args.batch_max_requests, args.batch_max_bytes, args.batch_enqueued_tokens),
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    stop_requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_requested.set())
    with teacher:
        print(teacher.base_url, flush=True)
        print(
            f"simulated teacher (placeholder answers) serving {', '.join(teacher.models)}; "
            f"auth {'required' if args.api_key else 'off'}; fault rate {teacher.fault_rate:g} "
            f"({', '.join(teacher.fault_kinds)}); stop with Ctrl-C or SIGTERM",
            file=sys.stderr, flush=True,
        )
        stop_requested.wait()
    return 0
