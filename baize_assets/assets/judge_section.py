"""The judge section of ``<adapter>/evaluation``: the judge compares the adapter's answers with a reference's.

The reference is the teacher's own answers (asked through the collector, cached, so a
re-evaluation asks only for the new judgments) or another adapter's. Both answers go into
one judge prompt, in both orders (``core.judge_eval``), asked with the ``judge`` settings.
"""

from dataclasses import dataclass

from dagster import AssetExecutionContext, Failure, MetadataValue
from dagster_openai import OpenAIResource

from ..core.collect.modes import REFERENCE_WRITER, Writer, judge_writer
from ..core.collect.parallel import merge_results
from ..core.collect.results import CollectionResult
from ..core.config.pipeline import TEACHER_REFERENCE, PipelineConfig, TeacherConfig
from ..core.costs.forecast import combined
from ..core.costs.stages import judgment_forecasts
from ..core.evaluate import judge as judge_eval
from ..core.feedback.judgments import unscored_problem
from ..core.prompts import COMPARE_ANSWERS_FORMAT, JUDGE_PROMPT_VERSION
from ..core.storage import Layout, local_copy, write_parquet_atomic
from .cost_assets import forecast_metadata, partition_forecast
from .shard_collection import all_failed, collect_shard, endpoint_for


@dataclass
class JudgeSection:
    report: dict  # the evaluation report's "judge" entry
    metadata: dict  # the materialization's judge_* entries


def _usage(merged: CollectionResult) -> dict:
    """What the section's requests used, for the report and (prefixed) the metadata."""
    usage = {
        "api_requests": merged.requests,
        "prompt_tokens": sum(merged.usage.prompt_tokens.values()),
        "completion_tokens": sum(merged.usage.completion_tokens.values()),
        "cached_answers": merged.cached,
    }
    if merged.spent_dollars is not None:
        usage["dollars"] = round(merged.spent_dollars, 6)
    return usage


def judge_adapter(
    context: AssetExecutionContext, layout: Layout, openai: OpenAIResource, adapter: str, config: PipelineConfig
) -> JudgeSection:
    judge = config.judge
    judge_settings = config.judge_teacher()
    questions = judge_eval.load_questions(judge.resolved_questions_path(), judge.questions)
    forecasts = partition_forecast(context, lambda: judgment_forecasts(config, layout, [adapter]))

    def ask(requests, step: str, settings: TeacherConfig, writer: Writer):
        collected = collect_shard(
            context, layout, endpoint_for(settings, openai), requests, settings,
            lease=layout.evaluation_judge_lease(adapter), cache=layout.judge_cache(), writer=writer, step=step,
            state=config.state_store,
        )
        failures = collected.result.failures
        if sum(failures.values()) == len(requests):
            raise Failure(description=all_failed(step, failures, "the judge cache"))
        return collected

    # Imported here so that only the evaluation step loads torch, not every step of a run.
    from ..core.evaluate.answers import adapter_answers

    with local_copy(layout.adapter(adapter)) as adapter_dir:
        candidate = adapter_answers(adapter_dir, questions, judge, log=context.log.info)
    spent = []
    if judge.reference == TEACHER_REFERENCE:
        answered = ask(judge_eval.reference_requests(questions), f"{adapter} judge reference answers",
                       config.teacher, REFERENCE_WRITER)
        spent.append(answered)
        reference = judge_eval.teacher_answers(answered.result.transcripts)
    else:
        with local_copy(layout.adapter(judge.reference)) as reference_dir:
            reference = adapter_answers(reference_dir, questions, judge, log=context.log.info)
    # A question the teacher could not answer has nothing to be compared with.
    kept = [i for i, answer in enumerate(reference) if answer is not None]
    without_reference = len(questions) - len(kept)
    questions, candidate, reference = ([values[i] for i in kept] for values in (questions, candidate, reference))
    step = f"{adapter} judgments"
    judged = ask(judge_eval.judge_requests(questions, candidate, reference), step, judge_settings,
                 judge_writer(COMPARE_ANSWERS_FORMAT, judge.structured_output))
    spent.append(judged)
    problem = unscored_problem(judge_eval.judgment_reasons(judged.result.transcripts), judge.max_unscored_fraction,
                               step, judge_settings.model)
    if problem and not judged.result.partial:
        raise Failure(description=problem)
    table, summary = judge_eval.judge_table(questions, candidate, reference, judged.result.transcripts)
    path = write_parquet_atomic(table, layout.evaluation_judge_table(adapter))
    # Both collections' counts as one, as the collector processes' are merged.
    merged = merge_results([c.result for c in spent], seconds=sum(c.result.seconds for c in spent))
    usage = _usage(merged)
    report = {
        **summary.as_dict(),
        "reference": judge.reference,
        "judge_model": judge_settings.model,
        "judge_prompt_version": JUDGE_PROMPT_VERSION,
        "questions": len(questions),
        "questions_without_reference": without_reference,
        "table_path": str(path),
        **usage,
    }
    metadata = {
        **merged.usage.as_metadata(),
        "judge_relative_score_pct": summary.relative_score_pct,
        "judge_wins": summary.wins,
        "judge_ties": summary.ties,
        "judge_losses": summary.losses,
        "judge_unreadable": summary.unreadable,
        "judge_reference": judge.reference,
        **{f"judge_{key}": value for key, value in usage.items()},
        "judge_table": MetadataValue.md(judge_eval.table_markdown(table)),
        **{f"judge_{key}": value for key, value in forecast_metadata(
            combined(f"{adapter} judged evaluation", forecasts) if forecasts else None,
            merged.spent_dollars).items()},
        "judge_table_path": MetadataValue.path(str(path)),
    }
    return JudgeSection(report, metadata)
