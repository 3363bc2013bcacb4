"""The graph end to end in a real Dagster instance, and the scope of a one-shard backfill."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from dagster import (
    AssetCheckKey,
    AssetSelection,
    DagsterEventType,
    EnvVar,
    instance_for_test,
    materialize,
)
from dagster_openai import OpenAIResource
from peft import PeftModel
from transformers import AutoModelForCausalLM

from baize_assets.assets import (
    build_asset_checks,
    build_assets,
    conversations_key,
    feedback_samples_key,
    transcripts_key,
)
from baize_assets.core.feedback.self_distill import held_out_seed_ids
from baize_assets.core.storage import Layout
from baize_assets.definitions import build_definitions
from baize_assets.demo import materialize_whole_graph
from baize_assets.pipes_messages import subprocess_client
from baize_assets.resources import BaizeStorage

from .conftest import fast_config
from .ops_support import materialized_in_run

# End to end through real Dagster runs and services: deselect with -m 'not slow'.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built_graph(tmp_path_factory):
    """The whole graph, materialized once against the simulated teacher."""
    output = tmp_path_factory.mktemp("output")
    config = fast_config()
    resources = {
        "storage": BaizeStorage(output_dir=str(output)),
        "openai": OpenAIResource(api_key=EnvVar("OPENAI_API_KEY")),
        "pipes_subprocess_client": subprocess_client(),
    }
    # The deployed wiring (checks, automation, jobs), with outputs in a temporary folder.
    defs = build_definitions(config, resources)
    assets = [*build_assets(config), *build_asset_checks(config)]
    with pytest.MonkeyPatch.context() as env, instance_for_test() as instance:
        from baize_assets.teacher.server import SimulatedTeacher

        with SimulatedTeacher() as teacher:
            env.setenv("OPENAI_BASE_URL", teacher.base_url)
            env.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
            run_ids = materialize_whole_graph(defs, config, instance, log=lambda _: None)
            yield config, assets, resources, instance, Layout(output), run_ids


def test_whole_graph_materializes_every_asset_and_partition(built_graph):
    config, _, _, instance, layout, run_ids = built_graph
    seen = set().union(*(materialized_in_run(instance, run_id) for run_id in run_ids))
    expected = {(f"{s.name}/seed_questions", None) for s in config.sources}
    for source in config.sources:
        steps = ["transcripts", "conversations"] if source.is_self_chat else ["conversations"]
        expected |= {(f"{source.name}/{step}", str(shard)) for step in steps for shard in range(source.shards)}
    expected |= {
        (f"{a.name}/{stage}", None) for a in config.adapters for stage in ("training_set", "adapter", "evaluation")
    }
    expected |= {("base_models/tiny_llama", None), ("costs/forecast", None)}
    for plan in config.self_distillation:
        for source in map(config.source, config.adapter(plan.adapter).sources):
            expected |= {
                (f"{plan.adapter_name}/{source.name}_{stage}", str(shard))
                for stage in ("samples", "scores") for shard in range(source.shards)
            }
        expected |= {(f"{plan.adapter_name}/{stage}", None) for stage in ("training_set", "adapter", "evaluation")}
    assert config.self_distillation, "the project's configuration runs Baize v2 end to end"
    assert seen == expected


def test_v2_never_samples_the_conversations_v1_and_v2_are_evaluated_on(built_graph):
    config, _, _, _, layout, _ = built_graph
    for plan in config.self_distillation:
        v1_set = pd.read_parquet(layout.training_set(plan.adapter))
        held_out = held_out_seed_ids(v1_set, pd.read_parquet(layout.training_set_duplicates(plan.adapter)))
        assert held_out, "the shipped configuration holds conversations out"
        sampled = {seed_id for source in map(config.source, config.adapter(plan.adapter).sources)
                   for shard in range(source.shards)
                   for seed_id in pd.read_parquet(layout.feedback_samples(plan.adapter_name, source.name, shard))[
                       "seed_id"]}
        assert sampled and not sampled & held_out
        v2_eval = pd.read_parquet(layout.training_set(plan.adapter_name)).query("split == 'eval'")
        assert set(v2_eval["seed_id"]) == set(v1_set.query("split == 'eval'")["seed_id"])


def test_every_table_reports_row_count_matching_its_parquet(built_graph):
    _, _, _, instance, layout, run_ids = built_graph
    for run_id in run_ids:
        for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records:
            materialization = record.event_log_entry.dagster_event.step_materialization_data.materialization
            if "dagster/row_count" in materialization.metadata:
                path = materialization.metadata["path"].value
                assert len(pd.read_parquet(path)) == materialization.metadata["dagster/row_count"].value
                assert materialization.metadata["dagster/row_count"].value > 0


def test_transcripts_report_openai_usage(built_graph):
    _, _, _, instance, _, _ = built_graph
    event = instance.get_latest_materialization_event(transcripts_key("quora"))
    metadata = event.asset_materialization.metadata
    assert metadata["openai.calls"].value == metadata["dagster/row_count"].value
    assert metadata["openai.total_tokens"].value == (
        metadata["openai.prompt_tokens"].value + metadata["openai.completion_tokens"].value
    )


def test_adapters_are_standard_peft_directories(built_graph):
    config, _, _, _, layout, _ = built_graph
    for adapter in config.adapters:
        directory = layout.adapter(adapter.name)
        assert {"adapter_config.json", "adapter_model.safetensors", "training_summary.json"} <= {
            p.name for p in directory.iterdir()
        }
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(layout.tiny_base()), directory)
        assert model.peft_config["default"].r == adapter.lora.r


def test_backfill_of_one_shard_rebuilds_exactly_its_dependents(built_graph, teacher_env):
    _, assets, resources, instance, layout, _ = built_graph
    before = pd.read_parquet(layout.conversations("quora", 3))
    result = materialize(
        assets,
        selection=AssetSelection.assets(transcripts_key("medquad")).downstream(),
        partition_key="3",
        instance=instance,
        resources=resources,
    )
    assert result.success
    assert materialized_in_run(instance, result.run_id) == {
        ("medquad/transcripts", "3"),
        ("medquad/conversations", "3"),
        ("baize_healthcare/training_set", None),
        ("baize_healthcare/adapter", None),
        ("baize_healthcare/evaluation", None),
        # Baize v2 of that adapter, through the same shard of its samples and scores.
        ("baize_healthcare_v2/medquad_samples", "3"),
        ("baize_healthcare_v2/medquad_scores", "3"),
        ("baize_healthcare_v2/training_set", None),
        ("baize_healthcare_v2/adapter", None),
        ("baize_healthcare_v2/evaluation", None),
    }
    pd.testing.assert_frame_equal(before, pd.read_parquet(layout.conversations("quora", 3)))


def test_prompt_and_logic_assets_carry_a_code_version(built_graph):
    _, assets, _, _, _, _ = built_graph
    versions = {key.to_user_string(): v for a in assets for key, v in a.code_versions_by_key.items()}
    for name, version in versions.items():
        assert version, f"{name} has no code_version"


def test_baize_chat_answers_once_from_a_trained_adapter(built_graph):
    config, _, _, _, layout, _ = built_graph
    adapter = layout.adapter(config.adapters[0].name)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("baize")), "chat", "--adapter", str(adapter),
         "--message", "How do tides work?", "--max-new-tokens", "24", "--seed", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    answer = result.stdout.strip()
    assert answer and "[|Human|]" not in answer and "[|AI|]" not in answer
    assert "Loading weights" not in result.stderr and "Warning" not in result.stderr  # the answer, nothing else


def test_blocking_corpus_checks_ran_and_passed_on_every_shard(built_graph):
    config, _, _, instance, _, run_ids = built_graph
    evaluations = [
        record.event_log_entry.dagster_event.event_specific_data
        for run_id in run_ids
        for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
    ]
    schema_checks = {
        (e.asset_key.to_user_string(), e.partition if hasattr(e, "partition") else None): e.passed
        for e in evaluations
        if e.check_name == "schema_and_nonempty_turns"
    }
    assert len(schema_checks) == sum(s.shards for s in config.sources)
    assert all(schema_checks.values())
    assert AssetCheckKey(conversations_key("medquad"), "schema_and_nonempty_turns") in {
        AssetCheckKey(e.asset_key, e.check_name) for e in evaluations
    }


def test_self_distillation_trains_v2_on_the_best_answers_from_v1(built_graph):
    config, _, _, _, layout, _ = built_graph
    plan = config.self_distillation[0]
    v1, v2 = plan.adapter, plan.adapter_name
    source = config.adapter(v1).sources[0]
    samples = pd.read_parquet(layout.feedback_samples(v2, source, 0))
    scores = pd.read_parquet(layout.feedback_scores(v2, source, 0))
    assert len(samples) == len(scores) > 0
    assert samples.groupby("seed_id").size().eq(plan.sampling.answers_per_seed).all()
    # Every answer has a score or a reason, never both, never neither.
    assert (scores["score"].isna() == scores["reason"].notna()).all()
    assert scores["score"].dropna().between(1, 100).all()
    distilled = pd.read_parquet(layout.training_set(v2))
    train = distilled[distilled["split"] == "train"]
    best = scores.loc[scores.groupby("seed_id")["score"].idxmax()].merge(samples, on=["seed_id", "sample_index"])
    for row in best.itertuples():
        trained = train[train["seed_id"] == row.seed_id]
        if len(trained):
            assert list(trained.iloc[0]["turns"])[-1]["text"] == row.answer
    v1_eval = pd.read_parquet(layout.training_set(v1)).query("split == 'eval'")
    assert sorted(distilled.query("split == 'eval'")["seed_id"]) == sorted(v1_eval["seed_id"])
    summary = json.loads((layout.adapter(v2) / "training_summary.json").read_text())
    assert summary["init_adapter"] == str(layout.adapter(v1))
    assert summary["training"]["loss_on"] == "last_ai"


def test_rerunning_one_samples_shard_rebuilds_only_its_scores_and_v2(built_graph, teacher_env):
    config, assets, resources, instance, layout, _ = built_graph
    plan = config.self_distillation[0]
    source = config.adapter(plan.adapter).sources[0]
    other_shard = pd.read_parquet(layout.feedback_scores(plan.adapter_name, source, 2))
    result = materialize(
        assets,
        selection=AssetSelection.assets(feedback_samples_key(plan.adapter_name, source)).downstream(),
        partition_key="1",
        instance=instance,
        resources=resources,
    )
    assert result.success
    v2 = plan.adapter_name
    assert materialized_in_run(instance, result.run_id) == {
        (f"{plan.adapter_name}/{source}_samples", "1"),
        (f"{plan.adapter_name}/{source}_scores", "1"),
        (f"{v2}/training_set", None),
        (f"{v2}/adapter", None),
        (f"{v2}/evaluation", None),
    }
    pd.testing.assert_frame_equal(other_shard, pd.read_parquet(layout.feedback_scores(plan.adapter_name, source, 2)))


def test_every_adapter_is_judged_and_the_judge_checks_v2_against_v1(built_graph):
    from baize_assets.assets.checks import judge_check_name
    from baize_assets.core.evaluate.judge import load_questions
    from baize_assets.core.evaluate.judged_comparison import compare_judged

    config, _, _, instance, layout, run_ids = built_graph
    questions = load_questions(config.judge.resolved_questions_path(), config.judge.questions)
    plan = config.self_distillation[0]
    scores = {}
    for name in [a.name for a in config.adapters] + [plan.adapter_name]:
        judge = json.loads(layout.evaluation(name).read_text())["judge"]
        assert judge["questions"] == len(questions) and judge["reference"] == "teacher"
        assert judge["wins"] + judge["ties"] + judge["losses"] + judge["unreadable"] == len(questions)
        scores[name] = judge["relative_score_pct"]
    assert all(score > 0 for score in scores.values())
    checks = [
        record.event_log_entry.dagster_event.event_specific_data
        for run_id in run_ids
        for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
    ]
    judged = [c for c in checks if c.check_name == judge_check_name(plan.adapter)]
    assert len(judged) == 1
    compared = compare_judged(pd.read_parquet(layout.evaluation_judge_table(plan.adapter)),
                              pd.read_parquet(layout.evaluation_judge_table(plan.adapter_name)))
    assert judged[0].passed == (not compared.worse)
    assert judged[0].metadata["paired_questions"].value == compared.questions == len(questions)
    assert judged[0].metadata[f"{plan.adapter}_relative_score_pct"].value == scores[plan.adapter]
