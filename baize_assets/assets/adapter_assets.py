"""``<name>/adapter``: the LoRA adapters, trained on a built-in base (:mod:`.base_model_assets`) or a named one.

``training.launcher`` says where: in the step's process, in a Pipes child of it, in a
``torchrun`` the step starts, or through any Pipes client resource (a pod on a GPU node).
Whichever it is, the training log lines stream into the run's logs and the summary comes
back as a Pipes message, from which the metadata is made.

Training must not outlive its run: the adapter step ties itself to the run's process
(see ``step_process``), and training it starts on its machine to the step's, so both die
with it and the rerun is the only process that writes the adapter and its checkpoints.
"""

from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ..core.config.feedback import PreferenceConfig
from ..core.config.pipeline import AdapterConfig, PipelineConfig
from ..core.config.training import LauncherConfig
from ..core.corpus import trainingset
from ..core.prompts import CHAT_FORMAT_VERSION
from ..resources import PIPES_SUBPROCESS_CLIENT, BaizeStorage
from .keys import GPU_POOL, adapter_key, base_model_key, training_set_key
from .metadata import config_hash, settings_hash
from .step_process import die_with_the_run_process


def _dpo_metadata(summary: dict) -> dict:
    dpo = summary["dpo"]
    return {
        "pairs": summary["pairs"],
        "beta": dpo["beta"],
        "dpo_loss_first": round(dpo["dpo_loss_first"], 4),
        "dpo_loss_final": round(dpo["dpo_loss_final"], 4),
        "reward_margin_final": round(dpo["reward_margin_final"], 4),
        "reward_accuracy_final": round(dpo["reward_accuracy_final"], 4),
        "trainable_parameters": summary["trainable_parameters"],
        "train_seconds": summary["train_seconds"],
        "summary": MetadataValue.json(summary),
    }


def adapter_metadata(report: dict, adapter_dir) -> dict:
    """What the Dagster UI shows of a trained adapter (from training's report): where it is, how it trained."""
    from ..core.train.summary import LOSS_CURVE_FILE

    summary = report["summary"]
    common = {
        "path": MetadataValue.path(str(adapter_dir)),
        "loss_curve": MetadataValue.path(str(adapter_dir / LOSS_CURVE_FILE)),
        "loss_curve_plot": MetadataValue.md(report["loss_curve_plot"]),
        "objective": summary.get("objective", "sft"),
        "conversations": summary["n_conversations"],
        "data_version": summary["data_version"],
        "steps": summary["steps"],
        "resumed_from_step": summary["resumed_from_step"],
        "saved_step": summary["saved_step"],
        "eval_loss": summary["eval_loss_after"],
        "base_eval_loss": summary["eval_loss_before"],
    }
    if summary.get("objective") == "dpo":
        return {**common, **_dpo_metadata(summary)}
    return {
        **common,
        "train_loss_final": summary["train_loss_final"],
        "tokens_seen": summary["tokens_seen"],
        "real_token_ratio": round(summary["real_token_ratio"], 4),
        "tokens_per_second": round(summary["tokens_per_second"], 1),
        "conversations_split": summary["conversations_split"],
        "conversations_dropped": summary["conversations_dropped"],
        "exchanges_dropped": summary["exchanges_dropped"],
        "trainable_parameters": summary["trainable_parameters"],
        "processes": summary["processes"],
        "train_seconds": summary["train_seconds"],
        "summary": MetadataValue.json(summary),
    }


def client_key(launcher: LauncherConfig) -> str | None:
    """The resource key of the Pipes client that runs training, None when the step trains itself."""
    return {"in_process": None, "pipes_client": launcher.resource}.get(launcher.kind, PIPES_SUBPROCESS_CLIENT)


def _train_through_pipes(context: AssetExecutionContext, client: Any, launcher: LauncherConfig, request: dict) -> dict:
    """Run the training ``request`` through the Pipes ``client``, its log lines streamed into the run's; its report."""
    import warnings

    from dagster import PreviewWarning

    from ..core.train.launch import child_command, torchrun_command
    from ..core.train.pipes import training_env

    if launcher.kind == "pipes_client":
        run_kwargs = {**launcher.run_kwargs, **({"command": launcher.command} if launcher.command else {})}
    else:
        command = torchrun_command(launcher.nproc_per_node) if launcher.kind == "torchrun" else child_command()
        run_kwargs = {"command": command, "env": training_env()}
    with warnings.catch_warnings():
        # Dagster 1.13's Pipes session reads a preview property of its own message reader.
        warnings.filterwarnings("ignore", message=".*expected_writer_count", category=PreviewWarning)
        invocation = client.run(context=context, extras=request, **run_kwargs)
    reports = [m for m in invocation.get_custom_messages() if isinstance(m, dict) and "summary" in m]
    if not reports:
        raise Failure(description=f"training through the {launcher.kind} launcher ended without reporting its summary "
                                  "over dagster-pipes: did the command run baize_assets.core.train.pipes?")
    return reports[-1]


def build_adapter_asset(
    adapter: AdapterConfig,
    config: PipelineConfig,
    init_from: str | None = None,
    preference: PreferenceConfig | None = None,
) -> AssetsDefinition:
    """The adapter's asset; with ``init_from`` (another adapter's name) training starts from that one's weights.

    With ``preference`` it trains by DPO on its training set's preference pairs, ``init_from``
    being the reference policy; the objective is part of the code version.
    """
    builtin = adapter.builtin_base
    deps = [training_set_key(adapter.name)] + ([base_model_key(builtin)] if builtin else [])
    deps += [adapter_key(init_from)] if init_from else []
    started_from = f", starting from the weights of '{init_from}'" if init_from else ""
    if preference is not None:
        started_from += f", by DPO (beta {preference.beta}) on its best-vs-worst answer pairs against '{init_from}'"
    objective_version = f"-dpo-{config_hash(preference)}" if preference is not None else ""
    launcher = adapter.training.launcher
    if preference is not None and launcher.kind == "torchrun":
        launcher = LauncherConfig()  # DPO trains in one process: a v2 inherits its v1's torchrun
    key = client_key(launcher)

    @asset(
        key=adapter_key(adapter.name),
        deps=deps,
        group_name=adapter.name,
        kinds={"pytorch"},
        pool=GPU_POOL,
        description=(
            f"LoRA adapter '{adapter.name}' trained on the corpus of {', '.join(adapter.sources)}{started_from}."
        ),
        # Where it trains changes nothing in the adapter: the launcher is left out.
        code_version=f"2-{CHAT_FORMAT_VERSION}-"
                     f"{settings_hash(adapter.model_dump(mode='json', exclude={'training': {'launcher'}}))}"
                     f"{objective_version}",
        required_resource_keys={"storage", *([key] if key else [])},
    )
    def lora_adapter(context: AssetExecutionContext) -> MaterializeResult:
        die_with_the_run_process(context)
        storage: BaizeStorage = context.resources.storage
        layout = storage.layout
        name = adapter.name
        # Before any model is loaded: a set too small to train on is the training set's problem.
        problem = trainingset.shortfall(
            training_set_key(name).to_user_string(), trainingset.split_counts(layout.training_set(name))
        )
        if problem:
            raise Failure(description=problem)

        from ..core.train.pipes import train_and_report, training_request

        if preference is not None:
            from ..core.train.preference import require_trl

            require_trl()
        base = str(layout.base_model(builtin)) if builtin else adapter.base_model
        paths = (layout.training_set(name), layout.adapter(name), layout.adapter_checkpoints(name))
        init_adapter = layout.adapter(init_from) if init_from else None
        request = training_request(adapter, base, *paths, init_adapter=init_adapter, preference=preference)
        if key is None:
            report = train_and_report(request, log=context.log.info)
        else:
            report = _train_through_pipes(context, getattr(context.resources, key), launcher, request)
        # The adapter's data is its weights: the same weights retrained are the same data downstream.
        return MaterializeResult(metadata=adapter_metadata(report, layout.adapter(name)),
                                 data_version=DataVersion(report["weights_digest"]))

    return lora_adapter
