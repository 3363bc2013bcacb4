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
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator

from dagster_pipes import PipesDefaultContextLoader, PipesEnvVarParamsLoader, open_dagster_pipes

from ..config.feedback import PreferenceConfig
from ..config.pipeline import AdapterConfig
from ..parent_death import die_with_parent
from ..storage import cached_copy, is_remote, local_copy, output_location, upload_dir

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
    from .checkpoints import adapter_weights_digest
    from .model_card import training_set_lineage, write_model_card
    from .summary import LOSS_CURVE_FILE

    out_dir = Path(request["out_dir"])
    lineage = training_set_lineage(Path(request["training_set"]))
    lineage["training_set"] = request.get("training_set_location", lineage["training_set"])
    write_model_card(out_dir, lineage)
    return {"summary": summary, "loss_curve_plot": plots_markdown({"loss_curve": out_dir / LOSS_CURVE_FILE}),
            "weights_digest": adapter_weights_digest(out_dir)}


@contextmanager
def localized(request: dict, upload: bool = True) -> Iterator[dict]:
    """The request with every location on an object store (``BAIZE_OUTPUT_DIR=s3://...``) made a local one:
    the training set, the base and the starting adapter copied down, the adapter trained into local scratch and,
    with ``upload``, put in the store when the block succeeds. Local locations are left as they are."""
    with ExitStack() as stack:
        local = {**request, "training_set_location": request["training_set"]}
        for name in ("training_set", "init_adapter"):
            value = request.get(name)
            if value and _on_a_store(value):
                local[name] = str(stack.enter_context(local_copy(output_location(value))))
        base = request["base_model"]
        if _on_a_store(base):  # kept on this machine for the next run: a base is large
            local["base_model"] = str(cached_copy(output_location(base)))
        out_dir = output_location(request["out_dir"])
        if is_remote(out_dir):
            local["out_dir"] = str(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="baize-train-")))
                                   / out_dir.name)
        yield local
        if is_remote(out_dir) and upload:
            if _on_a_store(base):  # the adapter names its base where the store keeps it, not this machine's copy
                _rename_base(Path(local["out_dir"]), local["base_model"], base)
            upload_dir(Path(local["out_dir"]), out_dir)


def _on_a_store(location: str | None) -> bool:
    return bool(location) and "://" in location and is_remote(output_location(location))


def _rename_base(adapter_dir: Path, local_base: str, stored_base: str) -> None:
    """Name the base by its store location in the files of a trained adapter that name it."""
    for name in ("adapter_config.json", "training_config.json", "training_summary.json", "README.md"):
        path = adapter_dir / name
        if path.is_file():
            path.write_text(path.read_text(encoding="utf-8").replace(local_base, stored_base), encoding="utf-8")


def train_and_report(request: dict, log: Callable[[str], None], upload: bool = True) -> dict:
    """Train, write the model card and put the adapter where the request says; the report for the step."""
    with localized(request, upload) as local:
        return complete_training(local, run_training(local, log=log))


def _extras() -> dict:
    """The request from the pipes context, without opening the message channel (process 0 reports)."""
    with PipesDefaultContextLoader().load_context(PipesEnvVarParamsLoader().load_context_params()) as context:
        return dict(context["extras"])


def main() -> None:
    # Before the heavy imports, so an early death of the step is not missed for seconds.
    if os.environ.get(PARENT_PID_ENV):
        die_with_parent(int(os.environ[PARENT_PID_ENV]))
    if int(os.environ.get("RANK", "0")) > 0:
        with localized(_extras(), upload=False) as local:
            run_training(local, log=lambda _line: None)
        return
    with open_dagster_pipes() as pipes:
        pipes.report_custom_message(train_and_report(pipes.extras, log=pipes.log.info))


if __name__ == "__main__":
    main()
