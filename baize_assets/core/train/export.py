"""``baize export``: a trained adapter as a merged model that other tools load unchanged.

The merged directory is a plain transformers model (the base with the LoRA weights
folded in) with the adapter's tokenizer and its chat template, which vLLM, TGI and
llama.cpp's converter read as they are. No maintained HF-to-GGUF converter installs
from the package index (the ``gguf`` package reads and writes GGUF files but does not
ship llama.cpp's ``convert_hf_to_gguf.py``), so ``--gguf`` names the llama.cpp command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

# How to turn the merged directory into a GGUF file with llama.cpp's own converter.
GGUF_COMMAND = (
    "git clone https://github.com/ggml-org/llama.cpp && pip install -r llama.cpp/requirements.txt && "
    "python llama.cpp/convert_hf_to_gguf.py {merged} --outfile {merged}/model.gguf --outtype f16"
)


class ExportError(ValueError):
    """An export that cannot be done as asked; the message says why and what to do."""


def check_target_dir(out_dir: Path, adapter_dir: Path) -> None:
    """Refuse a target that export would destroy: the adapter itself, or a non-empty folder of other files."""
    if out_dir.resolve() == adapter_dir.resolve() or adapter_dir.resolve() in out_dir.resolve().parents:
        raise ExportError(f"--to {out_dir} is inside the adapter directory {adapter_dir}; choose another folder")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "config.json").is_file():
        raise ExportError(f"--to {out_dir} is a non-empty folder that holds no exported model; choose an empty one")


def gguf_instructions(merged_dir: Path) -> str:
    return (
        "no maintained HF-to-GGUF converter installs from the package index; export without --gguf, then run "
        f"llama.cpp's converter on the merged model:\n  {GGUF_COMMAND.format(merged=merged_dir)}"
    )


def export_adapter(adapter_dir: Path, out_dir: Path, gguf: bool = False, log: Callable[[str], None] = print) -> Path:
    """Write the base model with ``adapter_dir``'s adapter merged in, its tokenizer and chat template, to ``out_dir``.

    ``out_dir`` is replaced whole, or left as it was if the export fails. Returns it.
    """
    from ..chat.chat_model import adapter_base_model

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    try:
        base_ref = adapter_base_model(adapter_dir)
    except (FileNotFoundError, ValueError) as error:
        raise ExportError(str(error)) from None
    check_target_dir(out_dir, adapter_dir)
    if gguf:
        raise ExportError(gguf_instructions(out_dir))

    from transformers import AutoTokenizer

    from ..model.base import export_merged
    from ..model.chat_template import attach_chat_template
    from ..storage import staged_output_dir

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    if not tokenizer.chat_template:
        log(f"{adapter_dir} has no chat template (trained before it was saved); adding the Baize one")
        attach_chat_template(tokenizer)
    log(f"merging {adapter_dir} into {base_ref}")
    with staged_output_dir(out_dir) as staging:
        export_merged(base_ref, adapter_dir, tokenizer, staging)
    log(f"wrote the merged model to {out_dir}")
    return out_dir


def add_export_command(commands: argparse._SubParsersAction) -> None:
    """The ``baize export`` subcommand."""
    export = commands.add_parser("export", help="write a trained adapter merged into its base, for other tools")
    export.add_argument("--adapter", type=Path, required=True, help="adapter directory (adapters/<name>)")
    export.add_argument("--to", type=Path, required=True, help="folder to write the merged model into")
    export.add_argument("--gguf", action="store_true",
                        help="also a GGUF file for llama.cpp / Ollama (see docs/training.md)")


def export_main(args: argparse.Namespace) -> int:
    """``baize export``; returns the exit code."""
    try:
        export_adapter(args.adapter, args.to, gguf=args.gguf)
    except (ExportError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
