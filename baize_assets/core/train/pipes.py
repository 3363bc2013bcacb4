"""Adapter training as a process of its own that reports to a Dagster step over dagster-pipes.

``python -m baize_assets.core.train.pipes`` is what every launcher of the adapter step
runs (``training.launcher``): a local child of the step, each process of a ``torchrun`` the
step starts (:mod:`.launch`), or the command a Pipes client runs elsewhere (a pod on a GPU
node). The request comes in the pipes ``extras``; every training log line (step losses,
eval losses) streams back into the run's logs, and at the end one message carries the
summary and the loss curve, which the step turns into the materialization's metadata, so
it never reads the adapter directory itself. An error is reported with its traceback.

Of a data-parallel launch, process 0 opens the pipes and reports; the others read the
request from the pipes context and stay silent, as they do in training
(:mod:`.distributed`). Training itself is :func:`run_training`, the same code the step
runs in its own process with ``launcher.kind: in_process``: the supervised trainer, or the
preference (DPO) trainer when the request carries one. Only the small ``dagster_pipes``
protocol package is needed here, not Dagster.

A child started by the step on its machine dies with it (see :mod:`parent_death`): a run
killed with SIGKILL leaves no orphan writing checkpoints or the adapter directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from dagster_pipes import PipesDefaultContextLoader, PipesEnvVarParamsLoader, open_dagster_pipes

from ..config.feedback import PreferenceConfig
from ..config.pipeline import AdapterConfig
from ..parent_death import die_with_parent

# The process id of the step that launched training on its own machine, as the step saw itself:
# the training process checks it is still an ancestor. Unset where a Pipes client runs it elsewhere.
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
    """Environment variables of training started by the step on its own machine."""
    return {PARENT_PID_ENV: str(os.getpid())}


def run_training(request: dict, log: Callable[[str], None]) -> dict:
    """Train as :func:`training_request` describes; the summary."""
    adapter = AdapterConfig.model_validate(request["adapter"])
    init_adapter = Path(request["init_adapter"]) if request.get("init_adapter") else None
    if request.get("preference"):
        from .preference import train_preference_adapter

        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError(f"DPO (objective: dpo) trains in one process, but {os.environ['WORLD_SIZE']} were "
                             "launched: give this adapter a launcher that starts one")
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


def complete_training(request: dict, summary: dict) -> dict:
    """Write the model card beside the trained adapter; the report that goes back to the step."""
    from ..plots_markdown import plots_markdown
    from .model_card import training_set_lineage, write_model_card
    from .summary import LOSS_CURVE_FILE

    out_dir = Path(request["out_dir"])
    write_model_card(out_dir, training_set_lineage(Path(request["training_set"])))
    return {"summary": summary, "loss_curve_plot": plots_markdown({"loss_curve": out_dir / LOSS_CURVE_FILE})}


def _extras() -> dict:
    """The request from the pipes context, without opening the message channel (process 0 reports)."""
    with PipesDefaultContextLoader().load_context(PipesEnvVarParamsLoader().load_context_params()) as context:
        return dict(context["extras"])


def main() -> None:
    # Before the heavy imports, so an early death of the step is not missed for seconds.
    if os.environ.get(PARENT_PID_ENV):
        die_with_parent(int(os.environ[PARENT_PID_ENV]))
    if int(os.environ.get("RANK", "0")) > 0:
        run_training(_extras(), log=lambda _line: None)
        return
    with open_dagster_pipes() as pipes:
        request = pipes.extras
        pipes.report_custom_message(complete_training(request, run_training(request, log=pipes.log.info)))


if __name__ == "__main__":
    main()
