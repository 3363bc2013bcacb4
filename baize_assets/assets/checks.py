"""Asset checks of the corpus shards, the training sets, and of v2 against v1.

The schema/non-empty-turns check of every corpus partition is blocking: a run that
materializes a broken shard stops before the training set and the adapter. The judge's
check of a self-distilled adapter warns, or blocks when its ``judge_check`` says so.
"""

import json
import warnings

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    MetadataValue,
    PreviewWarning,
    asset_check,
)

from ..core.config.pipeline import PipelineConfig, SelfDistillationConfig, SourceConfig
from ..core.corpus.schema import schema_problems
from ..core.evaluate.judged_comparison import CONFIDENCE, compare_judged
from ..core.storage import read_parquet, read_table
from ..resources import BaizeStorage
from .keys import conversations_key, evaluation_key, shard_partitions, training_set_key


def _corpus_checks(source: SourceConfig, min_kept_ratio: float) -> list[AssetChecksDefinition]:
    with warnings.catch_warnings():
        # A partitioned check is a preview in Dagster 1.13, and the right tool here: the schema check
        # runs on the shard a run made and blocks that shard's dependents only, as a backfill needs.
        warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec", category=PreviewWarning)
        return _partitioned_corpus_checks(source, min_kept_ratio)


def _partitioned_corpus_checks(source: SourceConfig, min_kept_ratio: float) -> list[AssetChecksDefinition]:
    @asset_check(
        asset=conversations_key(source.name),
        name="schema_and_nonempty_turns",
        partitions_def=shard_partitions(source),
        blocking=True,
        description="The shard's Parquet has the conversation schema and only complete, non-empty exchanges.",
    )
    def schema_and_nonempty_turns(context: AssetCheckExecutionContext, storage: BaizeStorage) -> AssetCheckResult:
        path = storage.layout.conversations(source.name, context.partition_key)
        if not path.exists():
            return AssetCheckResult(passed=False, description=f"{path} does not exist")
        problems = schema_problems(read_table(path))
        return AssetCheckResult(
            passed=not problems,
            metadata={"path": MetadataValue.path(str(path)), "problems": MetadataValue.json(problems)},
            description="; ".join(problems[:3]) or None,
        )

    @asset_check(
        asset=conversations_key(source.name),
        name="kept_ratio",
        partitions_def=shard_partitions(source),
        description=f"At least {min_kept_ratio:.0%} of the shard's transcripts are kept (corpus.min_kept_ratio).",
    )
    def kept_ratio(context: AssetCheckExecutionContext, storage: BaizeStorage) -> AssetCheckResult:
        layout = storage.layout
        kept = len(read_parquet(layout.conversations(source.name, context.partition_key)))
        rejects = read_parquet(layout.rejects(source.name, context.partition_key))
        total = kept + len(rejects)
        ratio = kept / total if total else 0.0
        return AssetCheckResult(
            passed=ratio >= min_kept_ratio,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "kept_ratio": round(ratio, 4),
                "floor": min_kept_ratio,
                "top_reasons": MetadataValue.json(rejects["reason"].value_counts().head(5).astype(int).to_dict()),
            },
        )

    return [schema_and_nonempty_turns, kept_ratio]


def _duplicates_check(adapter: str, max_rate: float) -> AssetChecksDefinition:
    @asset_check(
        asset=training_set_key(adapter),
        name="duplicates_rate",
        description=f"Share of the adapter's corpus dropped as exact or near duplicates; warns above {max_rate:.0%}.",
    )
    def duplicates_rate(storage: BaizeStorage) -> AssetCheckResult:
        layout = storage.layout
        kept = len(read_parquet(layout.training_set(adapter)))
        duplicates = read_parquet(layout.training_set_duplicates(adapter))
        total = kept + len(duplicates)
        rate = len(duplicates) / total if total else 0.0
        return AssetCheckResult(
            passed=rate <= max_rate,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "duplicates_rate": round(rate, 4),
                "by_reason": MetadataValue.json(duplicates["reason"].value_counts().astype(int).to_dict()),
            },
        )

    return duplicates_rate


def judge_check_name(v1: str) -> str:
    return f"judged_not_worse_than_{v1}"


def _judged_not_worse_check(plan: SelfDistillationConfig) -> AssetChecksDefinition:
    v1, v2 = plan.adapter, plan.adapter_name
    blocking = plan.judge_check == "block"

    @asset_check(
        asset=evaluation_key(v2),
        name=judge_check_name(v1),
        additional_deps=[evaluation_key(v1)],
        blocking=blocking,
        description=(
            f"The judge does not rate '{v2}' worse than '{v1}' beyond its noise: per question, against the same "
            "reference, the 95% interval of the mean difference is not wholly below zero"
            + (" (blocking: judge_check is 'block')." if blocking else ".")
        ),
    )
    def judged_not_worse(storage: BaizeStorage) -> AssetCheckResult:
        layout = storage.layout
        scores, missing = {}, []
        for name in (v1, v2):
            path = layout.evaluation(name)
            judge = json.loads(path.read_text(encoding="utf-8")).get("judge") if path.exists() else None
            if judge is None or judge.get("relative_score_pct") is None:
                missing.append(f"{path} has no judge score" if path.exists() else f"{path} does not exist")
            else:
                scores[name] = judge["relative_score_pct"]
        severity = AssetCheckSeverity.ERROR if blocking else AssetCheckSeverity.WARN
        if missing:
            return AssetCheckResult(passed=False, severity=severity, description="; ".join(missing))
        compared = compare_judged(read_parquet(layout.evaluation_judge_table(v1)),
                                  read_parquet(layout.evaluation_judge_table(v2)))
        verdict = (f"worse: the whole {CONFIDENCE:.0%} interval is below zero" if compared.worse
                   else "not worse beyond the judge's noise")
        return AssetCheckResult(
            passed=not compared.worse,
            severity=severity,
            metadata={f"{v1}_relative_score_pct": scores[v1], f"{v2}_relative_score_pct": scores[v2],
                      "difference_pct_points": round(scores[v2] - scores[v1], 2),
                      **{f"paired_{key}": value for key, value in compared.as_dict().items() if value is not None}},
            description=(f"judge: {v2} {scores[v2]}% vs {v1} {scores[v1]}% of the reference; per question {v2} "
                         f"wins {compared.wins}, ties {compared.ties}, loses {compared.losses} of "
                         f"{compared.questions}, mean difference {compared.mean_difference} points "
                         f"({CONFIDENCE:.0%} interval {compared.ci_low} to {compared.ci_high}): {verdict}"),
        )

    return judged_not_worse


def build_asset_checks(config: PipelineConfig) -> list[AssetChecksDefinition]:
    floor = config.corpus.min_kept_ratio
    checks = [check for source in config.sources for check in _corpus_checks(source, floor)]
    checks += [_duplicates_check(adapter.name, 1.0 - floor) for adapter in config.adapters]
    checks += [
        _judged_not_worse_check(plan)
        for plan in config.self_distillation
        if config.is_judged(plan.adapter) and config.is_judged(plan.adapter_name)
    ]
    return checks
