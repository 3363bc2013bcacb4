"""Adapter training as a child process of a Dagster run, over dagster-pipes.

``python -m baize_assets.core.train.pipes`` is launched by the adapter asset with
``PipesSubprocessClient``: the request comes in the pipes ``extras``, every training
log line (step losses, eval losses) streams back into the run's logs, and an error
is reported with its traceback. Training itself is :func:`run_training`, the same
code the asset runs in-process when ``training.run_in_subprocess`` is off: the
supervised trainer, or the preference (DPO) trainer when the request carries one.
Only the small ``dagster_pipes`` protocol package is needed here, not Dagster.

The child dies with the process that launched it (see :mod:`parent_death`): a run
killed with SIGKILL leaves no orphan writing checkpoints or the adapter directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from dagster_pipes import open_dagster_pipes

from ..config.feedback import PreferenceConfig
from ..config.pipeline import AdapterConfig
from ..parent_death import die_with_parent

# The launching process's id, as it saw itself: the child checks it is still its parent.
PARENT_PID_ENV = "BAIZE_TRAINING_PARENT_PID"


def training_request(
    adapter: AdapterConfig,
    base_model: str,
    training_set: Path,
    out_dir: Path,
    checkpoint_dir: Path,
    init_adapter: Path | None = None,
    preference: PreferenceConfig | None = None,
) -> dict:
    """The pipes extras that describe one training run (plain JSON); ``preference``: train by DPO."""
    return {
        "init_adapter": str(init_adapter) if init_adapter else None,
        "preference": preference.model_dump(mode="json") if preference else None,
        "adapter": adapter.model_dump(mode="json"),
        "base_model": str(base_model),
        "training_set": str(training_set),
        "out_dir": str(out_dir),
        "checkpoint_dir": str(checkpoint_dir),
    }


def training_env() -> dict[str, str]:
    """Environment variables of the training child, set by the process that launches it."""
    return {PARENT_PID_ENV: str(os.getpid())}


def run_training(request: dict, log: Callable[[str], None]) -> dict:
    """Train as :func:`training_request` describes; the summary."""
    adapter = AdapterConfig.model_validate(request["adapter"])
    init_adapter = Path(request["init_adapter"]) if request.get("init_adapter") else None
    if request.get("preference"):
        from .preference import train_preference_adapter

        return train_preference_adapter(
            adapter,
            PreferenceConfig.model_validate(request["preference"]),
            request["base_model"],
            Path(request["training_set"]),
            Path(request["out_dir"]),
            init_adapter,
            log=log,
        )
    from .trainer import train_from_training_set

    return train_from_training_set(
        adapter,
        request["base_model"],
        Path(request["training_set"]),
        Path(request["out_dir"]),
        Path(request["checkpoint_dir"]),
        log=log,
        init_adapter=init_adapter,
    )


def main() -> None:
    # Before the heavy imports, so an early death of the parent is not missed for seconds.
    die_with_parent(int(os.environ.get(PARENT_PID_ENV) or os.getppid()))
    with open_dagster_pipes() as pipes:
        summary = run_training(pipes.extras, log=pipes.log.info)
        pipes.report_custom_message(
            {"steps": summary["steps"], "resumed_from_step": summary["resumed_from_step"]}
        )


if __name__ == "__main__":
    main()
