"""Adapter training as a child process of a Dagster run, over dagster-pipes.

``python -m baize_assets.core.pipes_training`` is launched by the adapter asset with
``PipesSubprocessClient``: the request comes in the pipes ``extras``, every training
log line (step losses, eval losses) streams back into the run's logs, and an error
is reported with its traceback. Training itself is :func:`train_from_training_set`,
the same code the asset runs in-process when ``training.run_in_subprocess`` is off.
Only the small ``dagster_pipes`` protocol package is needed here, not Dagster.
"""

from __future__ import annotations

from pathlib import Path

from dagster_pipes import open_dagster_pipes

from .config import AdapterConfig
from .training import train_from_training_set


def training_request(
    adapter: AdapterConfig, base_model: str, training_set: Path, out_dir: Path, checkpoint_dir: Path
) -> dict:
    """The pipes extras that describe one training run (plain JSON)."""
    return {
        "adapter": adapter.model_dump(mode="json"),
        "base_model": str(base_model),
        "training_set": str(training_set),
        "out_dir": str(out_dir),
        "checkpoint_dir": str(checkpoint_dir),
    }


def main() -> None:
    with open_dagster_pipes() as pipes:
        request = pipes.extras
        summary = train_from_training_set(
            AdapterConfig.model_validate(request["adapter"]),
            request["base_model"],
            Path(request["training_set"]),
            Path(request["out_dir"]),
            Path(request["checkpoint_dir"]),
            log=pipes.log.info,
        )
        pipes.report_custom_message(
            {"steps": summary["steps"], "resumed_from_step": summary["resumed_from_step"]}
        )


if __name__ == "__main__":
    main()
