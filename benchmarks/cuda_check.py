"""The trainer's CUDA path at the real shape, checked: bf16, packing, and 4-bit if bitsandbytes imports.

Builds the real-shaped base of ``bench_training.py`` (Llama, 32,000-token vocabulary,
random init), then asserts what it measures:

* bf16 training (length-grouped, then packed with SDPA's block mask, then packed with
  flash-attention's variable-length kernels when flash_attn imports): every step's loss
  finite, the last steps' mean below the first steps', the held-out loss below the base's;
* packing equals padding: on one set of samples, the loss and the LoRA gradients of packed
  rows are those of padded micro-batches (bf16, so within bf16's rounding), per kernel;
* QLoRA when bitsandbytes imports: the base loads with 4-bit linear layers and trains as above;
* the peak GPU memory of each run, reported and above zero.

Prints a table, then each failed check; exits 1 when any check fails, 2 (with the reason)
on a machine without CUDA, where nothing can be checked.

    .venv/bin/python benchmarks/cuda_check.py [--steps 20] [--layers 8] [--hidden 1024]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_training  # noqa: E402  (the real-shape base and data live there)

NO_CUDA_EXIT = 2
# bf16 keeps 8 bits of mantissa: packed and padded sums differ by rounding, not by more.
BF16_RELATIVE_TOLERANCE = 2e-2


def training_variants() -> list[tuple[str, dict]]:
    found = [("bf16", {}), ("bf16 packed sdpa", {"packing": True, "attn_implementation": "sdpa"})]
    if importlib.util.find_spec("flash_attn") is not None:
        found.append(("bf16 packed flash-attn 2", {"packing": True, "attn_implementation": "flash_attention_2"}))
    if importlib.util.find_spec("bitsandbytes") is not None:
        found.append(("4-bit (QLoRA)", {"quantization": "4bit"}))
    return found


def learning_failures(name: str, summary: dict) -> list[str]:
    """What is wrong with a run's losses: not finite, not falling, no better than the base on held-out data."""
    losses = summary["step_losses"]
    if not all(math.isfinite(loss) for loss in losses):
        return [f"{name}: a step loss is not finite: {losses}"]
    quarter = max(1, len(losses) // 4)
    first, last = sum(losses[:quarter]) / quarter, sum(losses[-quarter:]) / quarter
    failures = [] if last < first else [f"{name}: the loss did not fall ({first:.4f} -> {last:.4f})"]
    before, after = summary["eval_loss_before"], summary["eval_loss_final"]
    if not (math.isfinite(after) and after < before):
        failures.append(f"{name}: held-out loss {after:.4f} is not below the base's {before:.4f}")
    return failures


def quantized_failures(name: str, base: Path) -> list[str]:
    """A 4-bit run must have trained on a base whose linear layers were bitsandbytes' 4-bit ones."""
    import bitsandbytes
    import torch

    from baize_assets.core.config.pipeline import TrainingConfig
    from baize_assets.core.model.base import load_base_model

    model = load_base_model(str(base), TrainingConfig(quantization="4bit"), "cuda", torch.bfloat16)
    layers = [m for m in model.modules() if isinstance(m, bitsandbytes.nn.Linear4bit)]
    return [] if layers else [f"{name}: the base loaded without any 4-bit linear layer"]


def relative_difference(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def packing_failures(base: Path, conversations, implementation: str) -> list[str]:
    """Packed rows against padded micro-batches on the same samples: the same loss and LoRA gradients."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    from baize_assets.core.config.pipeline import TrainingConfig
    from baize_assets.core.model.base import load_base_model
    from baize_assets.core.model.batching import collate, padding_id
    from baize_assets.core.model.lm_loss import predicted_tokens, summed_loss
    from baize_assets.core.model.samples import build_sample
    from baize_assets.core.train.packing import collate_packed, pack_rows, packing_layout

    tokenizer = AutoTokenizer.from_pretrained(base)
    samples = [build_sample(turns, tokenizer, "ai") for turns in conversations[:16]]
    training = TrainingConfig(attn_implementation=implementation, precision="bf16")
    torch.manual_seed(0)
    model = get_peft_model(load_base_model(str(base), training, "cuda", torch.bfloat16),
                           LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # LoRA B starts at zero; make the adapter change the output
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    pad_id = padding_id(tokenizer)
    rows = pack_rows([len(s.input_ids) for s in samples], bench_training.REAL_CUTOFF)
    batches = {
        "padded": collate(samples, pad_id, "cuda"),
        "packed": collate_packed([[samples[i] for i in row] for row in rows], pad_id, "cuda",
                                 packing_layout(model, bench_training.REAL_CUTOFF), torch.bfloat16),
    }
    results = {}
    for kind, batch in batches.items():
        model.zero_grad(set_to_none=True)
        loss = summed_loss(model, batch) / predicted_tokens(batch)
        loss.backward()
        results[kind] = loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    (packed_loss, packed_grads), (padded_loss, padded_grads) = results["packed"], results["padded"]
    failures = []
    if relative_difference(packed_loss, padded_loss) > BF16_RELATIVE_TOLERANCE:
        failures.append(f"packing ({implementation}): loss {float(packed_loss):.5f} != padded {float(padded_loss):.5f}")
    worst = max(relative_difference(packed_grads[n], padded_grads[n]) for n in padded_grads)
    if worst > BF16_RELATIVE_TOLERANCE:
        failures.append(f"packing ({implementation}): LoRA gradients differ from padded ones by {worst:.3%}")
    print(f"packing ({implementation}) vs padded: loss {float(packed_loss):.5f} / {float(padded_loss):.5f}, "
          f"largest gradient difference {worst:.3%} on {len(rows)} rows of {len(samples)} samples")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--conversations", type=int, default=2000)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=1024)
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print(f"cuda_check: no CUDA device here (torch {torch.__version__}, CUDA build {torch.version.cuda}), so "
              "nothing was checked; run it on a machine with an NVIDIA GPU and a CUDA build of torch", file=sys.stderr)
        return NO_CUDA_EXIT
    from baize_assets.core.config.pipeline import AdapterConfig
    from baize_assets.core.train.trainer import train_adapter

    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    train, held_out = bench_training.real_conversations(args.conversations)
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "real_llama"
        shape = bench_training.build_real_base(base, args.layers, args.hidden)
        print(f"Llama, vocabulary {bench_training.REAL_VOCAB}, {args.layers} layers of {args.hidden}, "
              f"{shape['parameters'] / 1e6:.1f}M parameters; {args.steps} steps of "
              f"{bench_training.REAL_ACCUMULATION} x {bench_training.REAL_MICRO_BATCH}")
        print("{:26s} {:>11s} {:>8s} {:>12s} {:>10s} {:>10s} {:>10s}".format(
            "variant", "real tok/s", "loop s", "peak GPU", "loss 1st", "loss last", "held-out"))
        for name, settings in training_variants():
            training = bench_training.real_training_config(args.steps).model_copy(
                update={"precision": "bf16", **settings}
            )
            adapter = AdapterConfig(name="cuda_check", sources=["synthetic"], training=training)
            torch.cuda.reset_peak_memory_stats()
            out = Path(tmp) / name.replace(" ", "_")
            summary = train_adapter(train, adapter, str(base), out, log=lambda _: None, eval_conversations=held_out)
            peak = torch.cuda.max_memory_allocated() / 2**20
            losses = summary["step_losses"]
            print(f"{name:26s} {summary['tokens_per_second']:11.0f} {summary['train_seconds']:8.1f} "
                  f"{peak:8.0f} MiB {losses[0]:10.4f} {losses[-1]:10.4f} {summary['eval_loss_final']:10.4f}")
            failures += learning_failures(name, summary)
            failures += [] if summary["dtype"] == "bfloat16" else [f"{name}: trained in {summary['dtype']}"]
            failures += [] if peak > 0 else [f"{name}: no GPU memory was used"]
            if settings.get("quantization") == "4bit":
                failures += quantized_failures(name, base)
        implementations = ["sdpa"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") else [])
        for implementation in implementations:
            failures += packing_failures(base, train, implementation)
    if importlib.util.find_spec("bitsandbytes") is None:
        print("4-bit (QLoRA): not checked, bitsandbytes is not installed (pip install bitsandbytes)")
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    print(f"cuda_check: {'all checks passed' if not failures else f'{len(failures)} check(s) failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
