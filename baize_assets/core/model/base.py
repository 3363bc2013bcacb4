"""The base model a LoRA trains on: where it is, on which device and in which dtype, how it loads.

A local directory or a hub id; bf16 (else fp16) on CUDA, fp32 on CPU unless the
training config says otherwise; loaded plainly or quantized by bitsandbytes (QLoRA),
with the attention kernel the config names. Also the LoRA target modules it has and
the export of a base with an adapter merged in.
"""

from __future__ import annotations

import importlib.util
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import peft
import torch
from transformers import AutoModelForCausalLM

from ..config.pipeline import TINY_BASE_MODEL, TrainingConfig


@contextmanager
def quiet_peft_deprecation() -> Iterator[None]:
    """Hide the warning peft 0.21 triggers by reading an attribute transformers 5 deprecated."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def resolve_base_model(base_model: str) -> str:
    """The absolute path of a local base model directory, or a hub id unchanged."""
    base_model = str(base_model)
    if base_model == TINY_BASE_MODEL:
        raise ValueError(
            f"'{TINY_BASE_MODEL}' names the pipeline's built tiny base; pass the directory it was built into"
        )
    path = Path(base_model).expanduser()
    if path.exists():
        return str(path.resolve())
    looks_like_path = path.is_absolute() or base_model.startswith((".", "~")) or base_model.count("/") > 1
    if looks_like_path:
        raise FileNotFoundError(f"base model directory not found: {base_model}")
    return base_model


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def device_and_dtype(precision: str = "auto") -> tuple[str, torch.dtype]:
    """The device and the base model's dtype for ``precision``.

    ``auto``: CUDA with bf16 (fp16 on GPUs without bf16), else CPU float32. fp16 needs
    CUDA (CPU kernels for half precision are slow or missing).
    """
    cuda = torch.cuda.is_available()
    if precision == "auto":
        if not cuda:
            return "cpu", torch.float32
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and not cuda:
        raise ValueError("training.precision 'fp16' needs a CUDA device; use 'fp32' or 'bf16' on CPU")
    return ("cuda" if cuda else "cpu"), _DTYPES[precision]


def load_base_model(base_ref: str, training: TrainingConfig, device: str, dtype: torch.dtype):
    """The base model on ``device``: in ``dtype``, or quantized by bitsandbytes (QLoRA)."""
    attention = {} if training.attn_implementation == "auto" else {"attn_implementation": training.attn_implementation}
    if training.quantization == "none":
        return AutoModelForCausalLM.from_pretrained(base_ref, dtype=dtype, **attention).to(device)
    if device != "cuda":
        raise ValueError(f"training.quantization '{training.quantization}' needs a CUDA device; this one has none")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(
            f"training.quantization '{training.quantization}' needs the bitsandbytes package: pip install bitsandbytes"
        )
    from transformers import BitsAndBytesConfig

    if training.quantization == "8bit":
        quantization = BitsAndBytesConfig(load_in_8bit=True)
    else:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True
        )
    model = AutoModelForCausalLM.from_pretrained(
        base_ref, dtype=dtype, quantization_config=quantization, device_map={"": 0}, **attention
    )
    return peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def lora_targets(model, requested: Sequence[str], base_model: str) -> tuple[list[str], list[str]]:
    """The requested LoRA target modules present in ``model``, and those missing."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    present = [name for name in requested if name in names]
    missing = [name for name in requested if name not in names]
    if not present:
        linear = sorted(
            {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
        )
        raise ValueError(
            f"none of the LoRA target modules {', '.join(missing)} exist in {base_model}; "
            f"its linear modules are: {', '.join(linear)}"
        )
    return present, missing


def export_merged(base_ref: str, adapter_dir: Path, tokenizer, out_dir: Path) -> None:
    """The base with the adapter merged in, saved as a plain transformers model directory.

    The base is reloaded unquantized on CPU so the merge is exact whatever it trained in.
    """
    base = AutoModelForCausalLM.from_pretrained(base_ref)
    with quiet_peft_deprecation():
        merged = peft.PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
