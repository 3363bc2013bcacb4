"""The adapter (trained in a dagster-pipes child), its evaluation asset, judge section and check, in an instance."""

from __future__ import annotations

import json

import pandas as pd
from dagster import AssetSelection, DagsterEventType, instance_for_test, materialize
from dagster_openai import OpenAIResource

from baize_assets.assets.adapter_assets import build_adapter_asset
from baize_assets.assets.evaluation_assets import BEATS_BASE_CHECK, build_evaluation_asset
from baize_assets.core.config.pipeline import (
    AdapterConfig,
    JudgeConfig,
    PipelineConfig,
    SourceConfig,
    TrainingConfig,
)
from baize_assets.core.corpus.trainingset import TRAINING_SET_SCHEMA
from baize_assets.core.evaluate.judge import load_questions
from baize_assets.core.model.tiny_base import build_tiny_base
from baize_assets.core.prompts import render_conversation
from baize_assets.core.storage import Layout, write_parquet_atomic
from baize_assets.pipes_messages import subprocess_client
from baize_assets.resources import BaizeStorage
from baize_assets.teacher.server import SimulatedTeacher

from .test_training import TINY, synthetic_conversations


def training_set_frame(conversations) -> pd.DataFrame:
    rows = []
    for i, turns in enumerate(conversations):
        text = render_conversation(turns)
        rows.append({
            "seed_id": f"{i:016x}", "seed": turns[0].text, "source": "synthetic", "shard": 0,
            "turns": [t.as_dict() for t in turns], "n_exchanges": len(turns) // 2, "text": text,
            "split": "eval" if i % 8 == 0 else "train",
        })
    frame = pd.DataFrame(rows)
    return frame[[f.name for f in TRAINING_SET_SCHEMA if f.name in frame.columns]]


def test_adapter_trains_in_a_pipes_child_and_its_evaluation_beats_the_base_and_is_judged(tmp_path, teacher):
    conversations = synthetic_conversations(48)
    layout = Layout(tmp_path)
    # A base that has seen the questions only, so the adapter has the answers' shape left to learn.
    questions = [t.text for c in conversations for t in c if t.role == "human"]
    build_tiny_base(questions + [render_conversation(c[:1]) for c in conversations], TINY, layout.tiny_base())
    write_parquet_atomic(training_set_frame(conversations), layout.training_set("tiny"), TRAINING_SET_SCHEMA)
    training = TrainingConfig(learning_rate=5e-3, epochs=4, max_steps=8, micro_batch_size=4, effective_batch_size=8,
                              warmup_steps=1, eval_steps=4, eval_prompts=["Tell me about the river."])
    assert training.launcher.kind == "subprocess"
    adapter = AdapterConfig(name="tiny", sources=["synthetic"], training=training)
    config = PipelineConfig(sources=[SourceConfig(name="synthetic", format="text", paths=["x"])], adapters=[adapter],
                            judge=JudgeConfig(questions=5, max_new_tokens=24))
    assets = [build_adapter_asset(adapter, config), build_evaluation_asset(adapter, config)]
    resources = {"storage": BaizeStorage(output_dir=str(tmp_path)),
                 "openai": OpenAIResource(api_key="sk-test-not-a-real-key", base_url=teacher.base_url),
                 "pipes_subprocess_client": subprocess_client()}
    with instance_for_test() as instance:
        result = materialize(assets, instance=instance, resources=resources)
        assert result.success
        logs = [e.user_message for e in instance.all_logs(result.run_id)]
        assert any("external process successfully opened dagster pipes" in m for m in logs)
        assert any(m.startswith("step 8/8 loss") for m in logs)  # streamed from the child

        adapter_md = result.asset_materializations_for_node("tiny__adapter")[0].metadata
        assert adapter_md["steps"].value == 8 and adapter_md["real_token_ratio"].value > 0.5
        assert adapter_md["loss_curve"].value.endswith("loss_curve.png")

        checks = result.get_asset_check_evaluations()
        assert [(c.check_name, c.passed) for c in checks] == [(BEATS_BASE_CHECK, True)]
        report = json.loads(layout.evaluation("tiny").read_text())
        assert report["adapter_eval_loss"] < report["base_eval_loss"]
        assert report["answers"][0]["prompt"] == "Tell me about the river."
        events = instance.get_records_for_run(result.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
        assert len(events) == 1

        # The judge section: the teacher answered and judged 5 questions, both orders each.
        judge = report["judge"]
        evaluation_md = result.asset_materializations_for_node("tiny__evaluation")[0].metadata
        assert judge["questions"] == 5 and judge["reference"] == "teacher"
        assert judge["wins"] + judge["ties"] + judge["losses"] + judge["unreadable"] == 5
        assert judge["api_requests"] == 5 + 2 * 5 and judge["cached_answers"] == 0
        assert 0 < judge["relative_score_pct"] == evaluation_md["judge_relative_score_pct"].value
        table = pd.read_parquet(layout.evaluation_judge_table("tiny"))
        assert list(table["question"]) == load_questions(config.judge.resolved_questions_path(), 5)
        assert table["candidate_answer"].str.len().gt(0).all() and table["reference_answer"].str.len().gt(0).all()
        assert "| question | adapter | reference |" in evaluation_md["judge_table"].value

        # Evaluating again asks the teacher for nothing: answers and judgments are cached.
        again = materialize(assets, selection=AssetSelection.assets(build_evaluation_asset(adapter, config).key),
                            instance=instance, resources=resources)
        assert again.success
        rejudged = json.loads(layout.evaluation("tiny").read_text())["judge"]
        assert rejudged["api_requests"] == 0 and rejudged["cached_answers"] == 15
        assert rejudged["relative_score_pct"] == judge["relative_score_pct"]

        # A teacher that fails every request: the step fails saying so, and the last report stays whole.
        questions_file = tmp_path / "new_questions.txt"
        questions_file.write_text("How do glaciers move?\nWhat is a prime number?\n")
        failing = config.model_copy(update={
            "judge": JudgeConfig(questions_path=str(questions_file), max_new_tokens=8),
            "teacher": config.teacher.model_copy(update={"max_retries": 0}),
        })
        with SimulatedTeacher(fault_rate=1.0, fault_kinds=["server_error"]) as broken:
            down = {**resources, "openai": OpenAIResource(api_key="sk-test-not-a-real-key", base_url=broken.base_url)}
            failed = materialize([build_adapter_asset(adapter, failing), build_evaluation_asset(adapter, failing)],
                                 selection=AssetSelection.assets(build_evaluation_asset(adapter, failing).key),
                                 instance=instance, resources=down, raise_on_error=False)
        assert not failed.success
        (failure,) = [e for e in failed.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
        assert "every one of the 2 requests of tiny judge reference answers failed" in str(
            failure.step_failure_data.user_failure_data.description)
        assert json.loads(layout.evaluation("tiny").read_text())["judge"] == rejudged

        # A judge that is no judge: the evaluation fails with the counts and a hint, not with a score of noise.
        with SimulatedTeacher(judge=False) as no_judge:
            chat = {**resources, "openai": OpenAIResource(api_key="sk-test-not-a-real-key", base_url=no_judge.base_url)}
            unjudged = materialize([build_adapter_asset(adapter, failing), build_evaluation_asset(adapter, failing)],
                                   selection=AssetSelection.assets(build_evaluation_asset(adapter, failing).key),
                                   instance=instance, resources=chat, raise_on_error=False)
            temperatures = no_judge.stats()["temperatures"]
        assert not unjudged.success
        (failure,) = [e for e in unjudged.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
        assert failure.step_failure_data.user_failure_data.description.startswith(
            "4 of the 4 judgments of tiny judgments hold no score (4 out_of_range)")
        assert temperatures == {"1.0": 2, "0.0": 4}  # the teacher's answers sampled, the judgments at 0
        assert json.loads(layout.evaluation("tiny").read_text())["judge"] == rejudged


def test_an_adapter_is_not_judged_against_itself_and_needs_no_teacher_then():
    adapter = AdapterConfig(name="tiny", sources=["synthetic"])
    config = PipelineConfig(sources=[SourceConfig(name="synthetic", format="text", paths=["x"])], adapters=[adapter],
                            judge=JudgeConfig(reference="tiny"))
    evaluation = build_evaluation_asset(adapter, config)
    assert evaluation.required_resource_keys - {"io_manager"} == {"storage"}
    judged = build_evaluation_asset(adapter, PipelineConfig(sources=config.sources, adapters=[adapter]))
    assert judged.required_resource_keys - {"io_manager"} == {"storage", "openai"}
    assert judged.code_versions_by_key[judged.key] != evaluation.code_versions_by_key[evaluation.key]


def test_the_pipes_client_is_a_resource_the_adapter_needs_only_to_train_in_a_child():
    in_a_child = AdapterConfig(name="tiny", sources=["synthetic"])
    in_process = AdapterConfig(name="tiny", sources=["synthetic"],
                               training=TrainingConfig(launcher={"kind": "in_process"}))
    config = PipelineConfig(sources=[SourceConfig(name="synthetic", format="text", paths=["x"])], adapters=[in_a_child])
    assert build_adapter_asset(in_a_child, config).required_resource_keys - {"io_manager"} == {
        "storage", "pipes_subprocess_client"}
    assert build_adapter_asset(in_process, config).required_resource_keys - {"io_manager"} == {"storage"}
