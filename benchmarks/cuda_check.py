"""The trainer's CUDA path at the real shape, in one short run: bf16, packing, and 4-bit if bitsandbytes imports.

Builds the real-shaped base of ``bench_training.py`` (Llama, 32,000-token vocabulary,
random init), then trains the same LoRA on the same synthetic conversations a few
optimizer steps per variant: bf16 with length-grouped batches, bf16 with packing (SDPA
block mask, and flash-attention's variable-length kernels when flash_attn imports),
and QLoRA (4-bit NF4 base) when bitsandbytes imports. Prints real tokens/s, peak GPU
memory and held-out loss per variant. Exits with a message on a machine without CUDA.

    .venv/bin/python benchmarks/cuda_check.py [--steps 20] [--layers 8] [--hidden 1024]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_training  # noqa: E402  (the real-shape base and data live there)


def variants() -> list[tuple[str, dict]]:
    found = [("bf16", {}), ("bf16 packed sdpa", {"packing": True, "attn_implementation": "sdpa"})]
    if importlib.util.find_spec("flash_attn") is not None:
        found.append(("bf16 packed flash-attn 2", {"packing": True, "attn_implementation": "flash_attention_2"}))
    if importlib.util.find_spec("bitsandbytes") is not None:
        found.append(("4-bit (QLoRA)", {"quantization": "4bit"}))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--conversations", type=int, default=2000)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=1024)
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        sys.exit(
            f"cuda_check: no CUDA device here (torch {torch.__version__}, CUDA build {torch.version.cuda}); "
            "run it on a machine with an NVIDIA GPU and a CUDA build of torch"
        )
    from baize_assets.core.config.pipeline import AdapterConfig
    from baize_assets.core.train.trainer import train_adapter

    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    train, held_out = bench_training.real_conversations(args.conversations)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "real_llama"
        shape = bench_training.build_real_base(base, args.layers, args.hidden)
        print(f"Llama, vocabulary {bench_training.REAL_VOCAB}, {args.layers} layers of {args.hidden}, "
              f"{shape['parameters'] / 1e6:.1f}M parameters; {args.steps} steps of "
              f"{bench_training.REAL_ACCUMULATION} x {bench_training.REAL_MICRO_BATCH}")
        print("{:26s} {:>11s} {:>8s} {:>12s} {:>14s} {:>10s}".format(
            "variant", "real tok/s", "loop s", "peak GPU", "held-out loss", "optimizer"))
        for name, settings in variants():
            training = bench_training.real_training_config(args.steps).model_copy(
                update={"precision": "bf16", **settings}
            )
            adapter = AdapterConfig(name="cuda_check", sources=["synthetic"], training=training)
            torch.cuda.reset_peak_memory_stats()
            summary = train_adapter(train, adapter, str(base), Path(tmp) / name.replace(" ", "_"),
                                    log=lambda _: None, eval_conversations=held_out)
            peak = torch.cuda.max_memory_allocated() / 2**20
            print(f"{name:26s} {summary['tokens_per_second']:11.0f} {summary['train_seconds']:8.1f} "
                  f"{peak:8.0f} MiB {summary['eval_loss_final']:14.4f} {summary['optimizer']:>10s}")


if __name__ == "__main__":
    main()
