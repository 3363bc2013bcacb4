"""The judge section of ``<adapter>/evaluation``: the teacher compares the adapter's answers with a reference's.

The reference is the teacher's own answers (asked through the collector, cached, so a
re-evaluation asks only for the new judgments) or another adapter's. Both answers go into
one judge prompt, in both orders (``core.judge_eval``).
"""

from dataclasses import dataclass

from dagster import AssetExecutionContext, Failure, MetadataValue
from dagster_openai import OpenAIResource

from ..core.collect.modes import REFERENCE_WRITER
from ..core.collect.parallel import merge_results
from ..core.config.pipeline import TEACHER_REFERENCE, PipelineConfig
from ..core.evaluate import judge as judge_eval
from ..core.prompts import JUDGE_PROMPT_VERSION
from ..core.storage import Layout, write_parquet_atomic
from .shard_collection import all_failed, collect_shard


@dataclass
class JudgeSection:
    report: dict  # the evaluation report's "judge" entry
    metadata: dict  # the materialization's judge_* entries


def judge_adapter(
    context: AssetExecutionContext, layout: Layout, openai: OpenAIResource, adapter: str, config: PipelineConfig
) -> JudgeSection:
    judge = config.judge
    teacher = config.teacher
    questions = judge_eval.load_questions(judge.resolved_questions_path(), judge.questions)

    def ask(requests, step: str):
        collected = collect_shard(
            context, layout, openai, requests, teacher, lease=layout.evaluation_judge_lease(adapter),
            cache=layout.judge_cache(), writer=REFERENCE_WRITER, step=step,
        )
        failures = collected.result.failures
        if sum(failures.values()) == len(requests):
            raise Failure(description=all_failed(step, failures, "the judge cache"))
        return collected

    # Imported here so that only the evaluation step loads torch, not every step of a run.
    from ..core.evaluate.answers import adapter_answers

    candidate = adapter_answers(layout.adapter(adapter), questions, judge, log=context.log.info)
    spent = []
    if judge.reference == TEACHER_REFERENCE:
        answered = ask(judge_eval.reference_requests(questions), f"{adapter} judge reference answers")
        spent.append(answered)
        reference = judge_eval.teacher_answers(answered.result.transcripts)
    else:
        reference = adapter_answers(layout.adapter(judge.reference), questions, judge, log=context.log.info)
    # A question the teacher could not answer has nothing to be compared with.
    kept = [i for i, answer in enumerate(reference) if answer is not None]
    without_reference = len(questions) - len(kept)
    questions, candidate, reference = ([values[i] for i in kept] for values in (questions, candidate, reference))
    judged = ask(judge_eval.judge_requests(questions, candidate, reference), f"{adapter} judgments")
    spent.append(judged)
    table, summary = judge_eval.judge_table(questions, candidate, reference, judged.result.transcripts)
    path = write_parquet_atomic(table, layout.evaluation_judge_table(adapter))
    # Both collections' counts as one, as the collector processes' are merged.
    merged = merge_results([c.result for c in spent], seconds=sum(c.result.seconds for c in spent))
    tokens = merged.usage
    usage = {
        "api_requests": merged.requests,
        "prompt_tokens": sum(tokens.prompt_tokens.values()),
        "completion_tokens": sum(tokens.completion_tokens.values()),
        "cached_answers": merged.cached,
    }
    if merged.spent_dollars is not None:
        usage["dollars"] = round(merged.spent_dollars, 6)
    report = {
        **summary.as_dict(),
        "reference": judge.reference,
        "judge_model": teacher.model,
        "judge_prompt_version": JUDGE_PROMPT_VERSION,
        "questions": len(questions),
        "questions_without_reference": without_reference,
        "table_path": str(path),
        **usage,
    }
    metadata = {
        **tokens.as_metadata(),
        "judge_relative_score_pct": summary.relative_score_pct,
        "judge_wins": summary.wins,
        "judge_ties": summary.ties,
        "judge_losses": summary.losses,
        "judge_unreadable": summary.unreadable,
        "judge_reference": judge.reference,
        **{f"judge_{key}": value for key, value in usage.items()},
        "judge_table": MetadataValue.md(judge_eval.table_markdown(table)),
        "judge_table_path": MetadataValue.path(str(path)),
    }
    return JudgeSection(report, metadata)
