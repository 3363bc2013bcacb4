"""The ``baize`` command: ``demo``, ``estimate``, ``chat``, ``serve``, ``export`` and ``teacher``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from .core.costs.stages import STAGES
from .core.train.export import add_export_command, export_main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="baize", description="Baize self-chat pipeline on Dagster.")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser(
        "demo",
        help="run the whole graph end to end offline (simulated teacher, tiny base model)",
    )
    add_export_command(commands)

    estimate = commands.add_parser(
        "estimate", help="forecast what collecting, judging and evaluating will cost, before anything is sent")
    estimate.add_argument("--source", action="append", dest="sources", metavar="NAME",
                          help="only this source (repeatable; default: every source)")
    estimate.add_argument("--shards", help="only these shards, e.g. 0,1,2 (default: every shard)")
    estimate.add_argument("--stages", default=",".join(STAGES),
                          help=f"which paid stages, comma-separated (default: {','.join(STAGES)})")
    estimate.add_argument("--json", action="store_true", help="print the forecast as JSON")

    chat = commands.add_parser("chat", help="talk to a trained adapter with the Baize inference prompt")
    chat.add_argument("--adapter", type=Path, required=True, help="adapter directory (adapters/<name>)")
    chat.add_argument("--message", help="answer this one message and exit (for scripts)")
    chat.add_argument("--max-new-tokens", type=int, default=512)
    # A chat's usual sampling: full-vocabulary sampling at temperature 1 drifts off within a
    # few hundred tokens on a small real model (SmolLM2-135M), 0.7 / 0.9 keeps its answers on topic.
    chat.add_argument("--temperature", type=float, default=0.7, help="0 answers greedily (default 0.7)")
    chat.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass (default 0.9)")
    chat.add_argument("--seed", type=int, default=None, help="sampling seed, for repeatable answers")
    chat.add_argument(
        "--repetition-penalty", type=float, default=None, help="above 1 discourages repeating tokens (default 1.1)"
    )

    serve = commands.add_parser("serve", help="serve a trained adapter as an OpenAI-compatible chat server")
    serve.add_argument("--adapter", type=Path, required=True, help="adapter directory (adapters/<name>)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-batch", type=int, default=16, help="most answers generated in one batch")
    serve.add_argument(
        "--batch-wait-ms", type=float, default=5.0, help="how long a request waits for others to batch with"
    )

    commands.add_parser(
        "teacher",
        help="run the simulated OpenAI-compatible teacher (see `baize teacher --help`)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import os
    import sys

    # Loading a few megabytes of local weights needs no progress bar; set it to 0 to see them.
    # Read by huggingface_hub on import, and inherited by every process a command starts.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["teacher"]:
        from .teacher.cli import main as teacher_main

        return teacher_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "export":
        return export_main(args)
    if args.command == "estimate":
        from .core.costs.command import estimate_main

        return estimate_main(args.sources, args.shards, args.stages, args.json)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo()
    if args.command == "serve":
        from .core.chat.server import serve_main

        return serve_main(args.adapter, args.host, args.port, args.max_batch, args.batch_wait_ms)
    from .core.chat.chat_model import DEFAULT_REPETITION_PENALTY, chat_main

    penalty = DEFAULT_REPETITION_PENALTY if args.repetition_penalty is None else args.repetition_penalty
    if penalty <= 0:
        print("error: --repetition-penalty must be positive", file=sys.stderr)
        return 2
    if not 0 < args.top_p <= 1:
        print("error: --top-p must be in (0, 1]", file=sys.stderr)
        return 2
    return chat_main(args.adapter, args.message, args.max_new_tokens, args.temperature, args.seed, penalty,
                     top_p=args.top_p)


if __name__ == "__main__":
    raise SystemExit(main())
