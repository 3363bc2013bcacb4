"""``<name>/adapter``: the LoRA adapters, trained on a built-in base (:mod:`.base_model_assets`) or a named one.

Training must not outlive its run: the adapter step ties itself to the run's process
(see ``step_process``), and the training child to the step's, so both die with it and
the rerun is the only process that writes the adapter and its checkpoints.
"""

import sys

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    PipesSubprocessClient,
    asset,
)

from ..core.config.feedback import PreferenceConfig
from ..core.config.pipeline import AdapterConfig, PipelineConfig
from ..core.corpus import trainingset
from ..core.prompts import CHAT_FORMAT_VERSION
from ..resources import BaizeStorage
from .keys import GPU_POOL, adapter_key, base_model_key, training_set_key
from .metadata import config_hash
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


def adapter_metadata(summary: dict, adapter_dir) -> dict:
    """What the Dagster UI shows of a trained adapter: where it is, how it trained, the loss curve."""
    from ..core.plots_markdown import plots_markdown
    from ..core.train.summary import LOSS_CURVE_FILE

    common = {
        "path": MetadataValue.path(str(adapter_dir)),
        "loss_curve": MetadataValue.path(str(adapter_dir / LOSS_CURVE_FILE)),
        "loss_curve_plot": MetadataValue.md(plots_markdown({"loss_curve": adapter_dir / LOSS_CURVE_FILE})),
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
        "train_seconds": summary["train_seconds"],
        "summary": MetadataValue.json(summary),
    }


def _train_in_a_child(context: AssetExecutionContext, pipes: PipesSubprocessClient, request: dict) -> None:
    """Run the training ``request`` in a dagster-pipes child that streams its log lines into the run's."""
    import warnings

    from dagster import PreviewWarning

    from ..core.train.pipes import training_env

    with warnings.catch_warnings():
        # Dagster 1.13's Pipes session reads a preview property of its own message reader.
        warnings.filterwarnings("ignore", message=".*expected_writer_count", category=PreviewWarning)
        pipes.run(
            command=[sys.executable, "-m", "baize_assets.core.train.pipes"],
            context=context,
            extras=request,
            env=training_env(),
        )


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

    def train(context: AssetExecutionContext, storage: BaizeStorage, pipes: PipesSubprocessClient | None):
        die_with_the_run_process(context)
        layout = storage.layout
        name = adapter.name
        # Before any model is loaded: a set too small to train on is the training set's problem.
        problem = trainingset.shortfall(
            training_set_key(name).to_user_string(), trainingset.split_counts(layout.training_set(name))
        )
        if problem:
            raise Failure(description=problem)

        from ..core.train.pipes import run_training, training_request
        from ..core.train.summary import read_summary

        if preference is not None:
            from ..core.train.preference import require_trl

            require_trl()
        base = str(layout.base_model(builtin)) if builtin else adapter.base_model
        paths = (layout.training_set(name), layout.adapter(name), layout.adapter_checkpoints(name))
        init_adapter = layout.adapter(init_from) if init_from else None
        request = training_request(adapter, base, *paths, init_adapter=init_adapter, preference=preference)
        if pipes is not None:
            _train_in_a_child(context, pipes, request)
            summary = read_summary(layout.adapter(adapter.name))
        else:
            summary = run_training(request, log=context.log.info)
        from ..core.train.model_card import training_set_lineage, write_model_card

        write_model_card(layout.adapter(name), training_set_lineage(layout.training_set(name)))
        return MaterializeResult(metadata=adapter_metadata(summary, layout.adapter(adapter.name)))

    decorate = asset(
        key=adapter_key(adapter.name),
        deps=deps,
        group_name=adapter.name,
        kinds={"pytorch"},
        pool=GPU_POOL,
        description=(
            f"LoRA adapter '{adapter.name}' trained on the corpus of {', '.join(adapter.sources)}{started_from}."
        ),
        code_version=f"2-{CHAT_FORMAT_VERSION}-{config_hash(adapter)}{objective_version}",
    )
    # Dagster reads the resources an asset needs from its signature: the Pipes client only for a child.
    if adapter.training.run_in_subprocess:
        @decorate
        def lora_adapter_in_a_child(
            context: AssetExecutionContext, storage: BaizeStorage, pipes_subprocess_client: PipesSubprocessClient
        ) -> MaterializeResult:
            return train(context, storage, pipes_subprocess_client)

        return lora_adapter_in_a_child

    @decorate
    def lora_adapter(context: AssetExecutionContext, storage: BaizeStorage) -> MaterializeResult:
        return train(context, storage, None)

    return lora_adapter
