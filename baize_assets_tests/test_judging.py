"""Reading judgments: every hostile shape of a judge's answer becomes a score or a reason."""

import pandas as pd
import pytest

from baize_assets.core.feedback.judgments import (
    EMPTY_JUDGMENT,
    JUDGE_REFUSED,
    NO_SCORE,
    OUT_OF_RANGE,
    SEVERAL_SCORES,
    best_of,
    pair_verdict,
    read_pair_scores,
    read_single_score,
    summarize,
)


@pytest.mark.parametrize(
    "text, score",
    [
        ("85", 85),
        ("Score: 72\nThe answer is relevant but short.", 72),
        ("**Score:** 90/100\nDetailed.", 90),
        ("I would rate it 64 out of 100.", 64),
        ("\n\n  100\n", 100),
        ("Rating = 7.5", 7.5),
    ],
)
def test_a_single_score_is_read_from_common_shapes(text, score):
    judgment = read_single_score(text)
    assert judgment.ok, judgment
    assert judgment.scores == (score,)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", EMPTY_JUDGMENT),
        (None, EMPTY_JUDGMENT),
        ("A thorough, well organised answer.", NO_SCORE),
        ("I'm sorry, but I cannot rate this answer.", JUDGE_REFUSED),
        ("Score: 150", OUT_OF_RANGE),
        ("Score: 0", OUT_OF_RANGE),
        ("Score: -5", OUT_OF_RANGE),
        ("Either 60 or 70, hard to say.", SEVERAL_SCORES),
    ],
)
def test_an_unreadable_single_judgment_is_a_reason_not_a_zero(text, reason):
    judgment = read_single_score(text)
    assert not judgment.ok
    assert judgment.reason == reason
    assert judgment.scores == ()
    assert judgment.detail


def test_pair_scores_come_from_the_first_line_with_numbers():
    assert read_pair_scores("8 6\nAssistant 1 is more detailed.").scores == (8, 6)
    assert read_pair_scores("Scores: 7/10 9/10").scores == (7, 9)
    assert read_pair_scores("Both answers are fine.\n5 5").scores == (5, 5)
    assert read_pair_scores("8").reason == NO_SCORE
    assert read_pair_scores("8 6 4").reason == SEVERAL_SCORES
    assert read_pair_scores("8 60").reason == OUT_OF_RANGE


def test_both_orders_cancel_a_judge_that_prefers_the_first_position():
    # The judge adds 2 to whichever answer comes first; the answers are equally good (6).
    verdict = pair_verdict("q1", read_pair_scores("8 6"), read_pair_scores("8 6"))
    assert verdict.candidate_scores == (8, 6) and verdict.reference_scores == (6, 8)
    assert verdict.outcome == "tie"


def test_summary_gives_the_relative_score_and_win_tie_loss():
    verdicts = [
        pair_verdict("better", read_pair_scores("9 5"), read_pair_scores("5 9")),
        pair_verdict("worse", read_pair_scores("4 8"), read_pair_scores("8 4")),
        pair_verdict("same", read_pair_scores("6 6"), read_pair_scores("6 6")),
        pair_verdict("unreadable", read_pair_scores("no idea"), read_pair_scores("6 6")),
    ]
    summary = summarize(verdicts)
    assert (summary.wins, summary.ties, summary.losses, summary.unreadable) == (1, 1, 1, 1)
    assert summary.relative_score_pct == pytest.approx(100 * (18 + 8 + 12) / (10 + 16 + 12), abs=0.01)
    assert summarize([]).relative_score_pct is None


def test_best_of_prefers_the_highest_score_then_the_first():
    assert best_of([40, 90, None, 90]) == 1
    assert best_of([None, None]) is None
    assert best_of([55]) == 0


def test_a_line_that_starts_with_its_score_may_hold_other_numbers():
    assert read_single_score("85. It covers 3 points and 2 caveats.").scores == (85,)
    assert read_pair_scores("7 9 - assistant 2 lists 4 steps").scores == (7, 9)


def test_the_simulated_teacher_judges_over_http_by_the_answers(teacher):
    """Offline scores are simulated, but they depend on the answers: a test can tell better from worse."""
    from openai import OpenAI

    from baize_assets.core.prompts import Turn, compare_answers_prompt, score_answer_prompt
    from baize_assets.teacher.judge import reference_answer

    client = OpenAI(base_url=teacher.base_url, api_key="sk-test-not-a-real-key", max_retries=0)
    question = "How do volcanoes form on the ocean floor?"
    good = reference_answer(question, teacher.models[0])
    bad = "Bananas are a yellow fruit, rich in potassium."

    def ask(prompt: str) -> str:
        reply = client.chat.completions.create(model=teacher.models[0], messages=[{"role": "user", "content": prompt}])
        return reply.choices[0].message.content

    good_score = read_single_score(ask(score_answer_prompt([Turn("human", question)], good))).scores[0]
    bad_score = read_single_score(ask(score_answer_prompt([Turn("human", question)], bad))).scores[0]
    assert good_score > bad_score
    first, second = read_pair_scores(ask(compare_answers_prompt(question, bad, good))).scores
    assert second > first
    swapped = read_pair_scores(ask(compare_answers_prompt(question, good, bad))).scores
    assert swapped == (second, first)


def test_judge_evaluation_reads_both_orders_from_the_teacher(teacher, tmp_path):
    """The paper's protocol end to end over HTTP: questions file, both orders, relative score and outcomes."""
    import pandas as pd
    from openai import OpenAI

    from baize_assets.core.evaluate.judge import judge_requests, judge_table, load_questions
    from baize_assets.teacher.judge import reference_answer

    questions_file = tmp_path / "questions.jsonl"
    questions_file.write_text('# a comment\n{"question": "How do volcanoes form?"}\nWhy is the sky blue?\n\n')
    questions = load_questions(questions_file)
    assert questions == ["How do volcanoes form?", "Why is the sky blue?"]
    model = teacher.models[0]
    reference = [reference_answer(q, model) for q in questions]
    candidate = [reference[0], "Bananas are yellow."]  # as good as the reference, then worse
    client = OpenAI(base_url=teacher.base_url, api_key="sk-test-not-a-real-key", max_retries=0)
    requests = judge_requests(questions, candidate, reference)
    replies = [
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}])
        .choices[0].message.content
        for prompt in requests["seed"]
    ]
    judged = pd.DataFrame({"seed_id": requests["seed_id"], "transcript": replies, "failure_kind": None})
    table, summary = judge_table(questions, candidate, reference, judged)
    assert list(table["outcome"]) == ["tie", "loss"]
    assert (summary.wins, summary.ties, summary.losses, summary.unreadable) == (0, 1, 1, 0)
    assert summary.relative_score_pct < 100


def test_a_judge_question_file_with_a_bad_line_is_named(tmp_path):
    from baize_assets.core.evaluate.judge import load_questions

    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "ok?"}\n{"q": 1}\n')
    with pytest.raises(ValueError, match=r"q.jsonl:2: .*'question'"):
        load_questions(bad)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_questions(tmp_path / "missing.txt")


def _judge_table(margins: list[float]) -> pd.DataFrame:
    """A judge table whose question i has the adapter ``margins[i]`` points over a reference scored 5 + 5."""
    return pd.DataFrame({"question": [f"q{i}" for i in range(len(margins))],
                         "candidate_scores": [(5 + m / 2, 5 + m / 2) for m in margins],
                         "reference_scores": [(5.0, 5.0)] * len(margins)})


@pytest.mark.parametrize(
    "v1_margins, v2_margins, judge_check, passed, severity",
    [
        ([0, 1, -1, 2] * 10, [0, 2, 0, 2] * 10, "warn", True, "WARN"),  # better
        ([0, 1, -1, 2] * 10, [-2, 2, -1, 2] * 10, "warn", True, "WARN"),  # lower, within the judge's noise
        ([0, 1, -1, 2] * 10, [-4, -3, -5, -2] * 10, "warn", False, "WARN"),  # worse on every question
        ([0, 1, -1, 2] * 10, [-4, -3, -5, -2] * 10, "block", False, "ERROR"),
    ],
)
def test_the_v2_check_fails_only_when_v2_is_worse_beyond_the_judge_s_noise(tmp_path, v1_margins, v2_margins,
                                                                          judge_check, passed, severity):
    import json

    from baize_assets.assets.checks import _judged_not_worse_check
    from baize_assets.core.config.pipeline import SelfDistillationConfig
    from baize_assets.core.storage import Layout
    from baize_assets.resources import BaizeStorage

    layout = Layout(tmp_path)
    layout.evaluation("a").parent.mkdir(parents=True)
    for name, margins in (("a", v1_margins), ("a_v2", v2_margins)):
        table = _judge_table(margins)
        score = 100 * sum(sum(c) for c in table["candidate_scores"]) / sum(sum(r) for r in table["reference_scores"])
        layout.evaluation(name).write_text(json.dumps({"judge": {"relative_score_pct": round(score, 2)}}))
        table.to_parquet(layout.evaluation_judge_table(name))
    check = _judged_not_worse_check(SelfDistillationConfig(adapter="a", judge_check=judge_check))
    assert next(iter(check.check_specs)).blocking == (judge_check == "block")
    result = check(storage=BaizeStorage(output_dir=str(tmp_path)))
    assert (result.passed, result.severity.value) == (passed, severity)
    differences = [b - a for a, b in zip(v1_margins, v2_margins)]
    assert result.metadata["paired_wins"].value == sum(d > 0 for d in differences)
    assert result.metadata["paired_losses"].value == sum(d < 0 for d in differences)
    assert result.metadata["paired_ci_low"].value <= sum(differences) / len(differences) <= \
        result.metadata["paired_ci_high"].value
    assert ("worse: the whole 95% interval is below zero" in result.description) == (not passed)


def test_the_questions_a_judged_comparison_needs():
    from baize_assets.core.evaluate.judged_comparison import compare_judged, questions_needed

    assert questions_needed(spread=4.0, drop=1.0) == 62  # 1.96**2 * 16
    assert questions_needed(spread=4.0, drop=2.0) == 16
    few = compare_judged(_judge_table([0, 0, 0]), _judge_table([-2, 1, -2]))  # lower on 3 questions: noise
    assert (few.wins, few.ties, few.losses, few.questions) == (1, 0, 2, 3) and not few.worse
    unreadable = _judge_table([0, 0]).assign(candidate_scores=[(None, 5.0), (5.0, 5.0)])
    assert compare_judged(unreadable, _judge_table([1, 1])).questions == 1


def test_the_v2_check_fails_naming_an_evaluation_without_a_judge_section(tmp_path):
    import json

    from baize_assets.assets.checks import _judged_not_worse_check
    from baize_assets.core.config.pipeline import SelfDistillationConfig
    from baize_assets.core.storage import Layout
    from baize_assets.resources import BaizeStorage

    layout = Layout(tmp_path)
    layout.evaluation("a").parent.mkdir(parents=True)
    layout.evaluation("a").write_text(json.dumps({"adapter_eval_loss": 1.0}))
    check = _judged_not_worse_check(SelfDistillationConfig(adapter="a"))
    result = check(storage=BaizeStorage(output_dir=str(tmp_path)))
    assert not result.passed
    assert f"{layout.evaluation('a')} has no judge score" in result.description
    assert f"{layout.evaluation('a_v2')} does not exist" in result.description


def test_a_judge_reference_that_is_no_adapter_is_named():
    from baize_assets.core.config.pipeline import AdapterConfig, JudgeConfig, PipelineConfig, SourceConfig

    with pytest.raises(ValueError, match="judge.reference is 'gpt5': neither 'teacher' nor a declared adapter"):
        PipelineConfig(sources=[SourceConfig(name="s", format="text", paths=["x"])],
                       adapters=[AdapterConfig(name="a", sources=["s"])], judge=JudgeConfig(reference="gpt5"))


def test_a_step_fails_only_when_most_judgments_hold_no_score():
    import pandas as pd

    from baize_assets.core.feedback.judgments import unscored_problem

    # Read back from a table, a scored row's reason may be NaN rather than None: it is still scored.
    assert unscored_problem(pd.Series([None, float("nan"), "no_score"]), 0.5, "s", "m") is None
    problem = unscored_problem(["out_of_range", "out_of_range", "no_score", None], 0.5, "v2/faq/0 scores", "tiny")
    assert problem.startswith("3 of the 4 judgments of v2/faq/0 scores hold no score (2 out_of_range, 1 no_score)")
    assert "Is judge.model ('tiny') a judge?" in problem
    assert unscored_problem([], 0.5, "s", "m") is None and unscored_problem(["x"], 1.0, "s", "m") is None
