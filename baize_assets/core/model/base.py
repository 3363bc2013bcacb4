"""The base model a LoRA trains on: where it is, on which device and in which dtype, how it loads.

A local directory or a hub id; bf16 (else fp16) on CUDA, fp32 on CPU unless the
training config says otherwise; loaded plainly or quantized by bitsandbytes (QLoRA),
with the attention kernel the config names. Weights load straight onto the device in
that dtype (``device_map``), never first as fp32 in CPU memory, and without progress
bars: they would fill the step logs. A base too large to train on a CPU is refused
there before any weight loads. Also the LoRA target modules it has and the export of a
base with an adapter merged in.
"""

from __future__ import annotations

import importlib.util
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import peft
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.utils import logging as transformers_logging

from ..config.pipeline import BUILTIN_BASES, TrainingConfig
from ..storage import cached_copy, is_remote, output_location


@contextmanager
def quiet_peft_deprecation() -> Iterator[None]:
    """Hide the warning peft 0.21 triggers by reading an attribute transformers 5 deprecated."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


@contextmanager
def no_progress_bars() -> Iterator[None]:
    """No transformers or huggingface_hub progress bars ("Loading weights: 100% ...", "Writing model shards")."""
    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def resolve_base_model(base_model: str) -> str:
    """The absolute path of a local base model directory, or a hub id unchanged; a base on an object store (a
    built-in base under ``BAIZE_OUTPUT_DIR=s3://...``) is copied to this machine once and that copy's path given."""
    base_model = str(base_model)
    if base_model in BUILTIN_BASES:
        raise ValueError(f"'{base_model}' names a base the pipeline builds; pass the directory it was built into")
    if "://" in base_model and is_remote(output_location(base_model)):
        return str(cached_copy(output_location(base_model)))
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


def load_pretrained(base_ref: str, device: str, dtype: torch.dtype, **options):
    """``base_ref``'s weights loaded straight onto ``device`` in ``dtype``, quietly."""
    with no_progress_bars():
        return AutoModelForCausalLM.from_pretrained(base_ref, dtype=dtype, device_map={"": device}, **options)


def parameter_count(base_ref: str) -> int:
    """The parameters of ``base_ref``'s model, from its config alone (built on the meta device, no weights)."""
    config = AutoConfig.from_pretrained(base_ref)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(parameter.numel() for parameter in model.parameters())


def refuse_large_base_on_cpu(base_ref: str, training: TrainingConfig, device: str) -> None:
    """Raise ``ValueError`` when a base over ``training.max_cpu_base_parameters`` would train on the CPU."""
    if device != "cpu" or training.train_large_base_on_cpu:
        return
    count = parameter_count(base_ref)
    if count > training.max_cpu_base_parameters:
        raise ValueError(
            f"{base_ref} has {count / 1e9:.2f}B parameters, over training.max_cpu_base_parameters "
            f"({training.max_cpu_base_parameters / 1e9:.2f}B), and this machine has no CUDA device: it would train "
            "in fp32 on the CPU. Train on a GPU, or set training.train_large_base_on_cpu: true to train it here anyway"
        )


def load_base_model(base_ref: str, training: TrainingConfig, device: str, dtype: torch.dtype):
    """The base model on ``device``: in ``dtype``, or quantized by bitsandbytes (QLoRA)."""
    attention = {} if training.attn_implementation == "auto" else {"attn_implementation": training.attn_implementation}
    if training.quantization == "none":
        refuse_large_base_on_cpu(base_ref, training, device)
        return load_pretrained(base_ref, device, dtype, **attention)
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
    model = load_pretrained(base_ref, "cuda:0", dtype, quantization_config=quantization, **attention)
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

    The base is reloaded unquantized in fp32 on the CPU, whatever it trained in, so the
    merge itself rounds nothing; the merged weights are saved in the dtype the base's own
    checkpoint has (bf16 for most released bases), as servers expect.
    """
    saved_dtype = AutoConfig.from_pretrained(base_ref).dtype or torch.float32
    base = load_pretrained(base_ref, "cpu", torch.float32)
    with quiet_peft_deprecation():
        merged = peft.PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    with no_progress_bars():
        merged.to(saved_dtype).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
