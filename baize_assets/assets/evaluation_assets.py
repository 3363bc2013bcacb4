"""``<adapter>/evaluation``: held-out loss of base versus adapter, sample answers, the judge, and a check.

The asset check ``beats_base_on_held_out_loss`` fails when the adapter's loss on the
held-out split of its training set is not lower than the base model's. With ``judge``
enabled the teacher also compares the adapter's answers with a reference's
(``judge_section``); only then does the asset need the teacher resource.
"""

import json

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
from dagster_openai import OpenAIResource

from ..core.config.pipeline import TEACHER_REFERENCE, AdapterConfig, PipelineConfig
from ..core.corpus.schema import data_version, turns_of
from ..core.prompts import JUDGE_PROMPT_VERSION
from ..core.storage import local_copy, read_parquet
from ..resources import BaizeStorage
from .judge_section import judge_adapter
from .keys import GPU_POOL, adapter_key, evaluation_key, training_set_key
from .metadata import config_hash, settings_hash, text_version

BEATS_BASE_CHECK = "beats_base_on_held_out_loss"


def _answers_markdown(answers: list[dict]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ") or "_(empty)_"

    rows = [f"| {cell(a['prompt'])} | {cell(a['answer'])} |" for a in answers]
    return "\n".join(["| prompt | answer |", "| --- | --- |", *rows])


def _evaluate(
    context: AssetExecutionContext,
    storage: BaizeStorage,
    openai: OpenAIResource | None,
    adapter: AdapterConfig,
    config: PipelineConfig,
) -> MaterializeResult:
    """Evaluate the adapter on its held-out split, judge it when ``openai`` is given, write the report."""
    # Torch and the model code load only when an evaluation runs, not when the definitions do.
    from ..core.evaluate.held_out import evaluate_adapter, write_report

    layout = storage.layout
    frame = read_parquet(layout.training_set(adapter.name))
    held_out = frame[frame["split"] == "eval"]
    training = config.evaluation_training(adapter)
    with local_copy(layout.adapter(adapter.name)) as adapter_dir:
        report = evaluate_adapter(adapter_dir, turns_of(held_out), training, log=context.log.info)
    report["adapter_dir"] = str(layout.adapter(adapter.name))
    report["loss_on"] = training.loss_on
    report["data_version"] = data_version(frame)
    judge = judge_adapter(context, layout, openai, adapter.name, config) if openai is not None else None
    if judge is not None:
        report["judge"] = judge.report
    path = layout.evaluation(adapter.name)
    write_report(report, path)
    # What the report says of the adapter, not how long it took, where it lies or what the judge's cache held.
    judged = {k: (report.get("judge") or {}).get(k) for k in ("relative_score_pct", "wins", "ties", "losses")}
    version = text_version(json.dumps([report["base_eval_loss"], report["adapter_eval_loss"], report["answers"],
                                       judged], sort_keys=True, default=str))
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
            **(judge.metadata if judge is not None else {}),
        },
        data_version=version,
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


def build_evaluation_asset(adapter: AdapterConfig, config: PipelineConfig) -> AssetsDefinition:
    key = evaluation_key(adapter.name)
    judged = config.is_judged(adapter.name)
    reference = config.judge.reference
    deps = [adapter_key(adapter.name), training_set_key(adapter.name)]
    if judged and reference != TEACHER_REFERENCE:
        deps.append(adapter_key(reference))
    # The judge's model is the teacher's unless it names its own.
    judge_settings = settings_hash(config.judge.model_dump(mode="json"), config.judge_teacher().model)
    judge_version = f"-judge-{JUDGE_PROMPT_VERSION}-{judge_settings[:8]}" if judged else ""

    decorate = asset(
        key=key,
        deps=deps,
        # In its adapter's group so the job that trains it evaluates it.
        group_name=adapter.name,
        kinds={"pytorch", "openai"} if judged else {"pytorch"},
        pool=GPU_POOL,
        description=(
            f"Evaluation of adapter '{adapter.name}': held-out loss and perplexity of the base model and of "
            "the adapter, and the adapter's answers to fixed prompts through the `baize chat` code"
            + (f"; the judge compares its answers with the {reference}'s, in both orders." if judged else ".")
        ),
        code_version=f"2-{config_hash(config.evaluation_training(adapter))}{judge_version}",
        check_specs=[
            AssetCheckSpec(
                BEATS_BASE_CHECK,
                asset=key,
                description="The adapter's held-out loss is lower than the base model's.",
            )
        ],
    )
    # Dagster reads the resources an asset needs from its signature: the teacher only with a judge.
    if judged:
        @decorate
        def judged_evaluation(
            context: AssetExecutionContext, storage: BaizeStorage, openai: OpenAIResource
        ) -> MaterializeResult:
            return _evaluate(context, storage, openai, adapter, config)

        return judged_evaluation

    @decorate
    def evaluation(context: AssetExecutionContext, storage: BaizeStorage) -> MaterializeResult:
        return _evaluate(context, storage, None, adapter, config)

    return evaluation


def build_evaluation_assets(config: PipelineConfig) -> list[AssetsDefinition]:
    return [build_evaluation_asset(adapter, config) for adapter in config.adapters]
