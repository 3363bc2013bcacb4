"""``evaluations/<adapter>``: held-out loss of base versus adapter, sample answers, and a check.

The asset check ``beats_base_on_held_out_loss`` fails when the adapter's loss on the
held-out split of its training set is not lower than the base model's.
"""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ..core.config import AdapterConfig, PipelineConfig
from ..core.storage import read_parquet
from ..resources import BaizeStorage
from .keys import ADAPTERS_GROUP, adapter_key, evaluation_key, training_set_key
from .metadata import config_hash

BEATS_BASE_CHECK = "beats_base_on_held_out_loss"


def _answers_markdown(answers: list[dict]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ") or "_(empty)_"

    rows = [f"| {cell(a['prompt'])} | {cell(a['answer'])} |" for a in answers]
    return "\n".join(["| prompt | answer |", "| --- | --- |", *rows])


def build_evaluation_asset(adapter: AdapterConfig, group_name: str = ADAPTERS_GROUP) -> AssetsDefinition:
    key = evaluation_key(adapter.name)

    @asset(
        key=key,
        deps=[adapter_key(adapter.name), training_set_key(adapter.name)],
        # In its adapter's group so the job that trains it evaluates it.
        group_name=group_name,
        kinds={"pytorch"},
        description=(
            f"Evaluation of adapter '{adapter.name}': held-out loss and perplexity of the base model and of "
            "the adapter, and the adapter's answers to fixed prompts through the `baize chat` code."
        ),
        code_version=f"1-{config_hash(adapter.training)}",
        check_specs=[
            AssetCheckSpec(
                BEATS_BASE_CHECK,
                asset=key,
                description="The adapter's held-out loss is lower than the base model's.",
            )
        ],
    )
    def evaluation(context: AssetExecutionContext, storage: BaizeStorage) -> MaterializeResult:
        from ..core import corpus
        from ..core.evaluation import evaluate_adapter, write_report

        layout = storage.layout
        frame = read_parquet(layout.training_set(adapter.name))
        held_out = frame[frame["split"] == "eval"]
        report = evaluate_adapter(
            layout.adapter(adapter.name), corpus.turns_of(held_out), adapter.training, log=context.log.info
        )
        report["data_version"] = corpus.data_version(frame)
        path = layout.evaluation(adapter.name)
        write_report(report, path)
        compared = {
            "base_eval_loss": report["base_eval_loss"],
            "adapter_eval_loss": report["adapter_eval_loss"],
            "eval_tokens": report["eval_tokens"],
        }
        return MaterializeResult(
            metadata={
                "path": MetadataValue.path(str(path)),
                **compared,
                "base_perplexity": report["base_perplexity"],
                "adapter_perplexity": report["adapter_perplexity"],
                "eval_conversations": report["eval_conversations"],
                "data_version": report["data_version"],
                "answers": MetadataValue.md(_answers_markdown(report["answers"])),
            },
            check_results=[
                AssetCheckResult(
                    check_name=BEATS_BASE_CHECK,
                    passed=bool(report["adapter_beats_base"]),
                    severity=AssetCheckSeverity.ERROR,
                    metadata={**compared, "note": report["note"] or ""},
                    description=report["note"],
                )
            ],
        )

    return evaluation


def build_evaluation_assets(config: PipelineConfig) -> list[AssetsDefinition]:
    return [build_evaluation_asset(adapter) for adapter in config.adapters]
