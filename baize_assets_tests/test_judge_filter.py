"""The opt-in judge filter in a real instance: the judge rates every kept conversation over real HTTP, the
ratings are their own partitioned asset with their cost and forecast, and the training set leaves out what is
rated under the threshold with the reason judge_score."""

from __future__ import annotations

import pandas as pd
import pytest
from dagster import DagsterEventType, instance_for_test
from dagster_openai import OpenAIResource

from baize_assets.assets import conversation_ratings_key, training_set_key
from baize_assets.components.baize_pipeline import build_definitions
from baize_assets.core.config.pipeline import PipelineConfig
from baize_assets.core.corpus import judge_filter
from baize_assets.core.costs.stages import Selection, forecast_selection
from baize_assets.core.feedback.judgments import read_conversation_score
from baize_assets.core.storage import Layout
from baize_assets.jobs import corpus_job_name
from baize_assets.pipes_messages import subprocess_client
from baize_assets.resources import BaizeStorage
from baize_assets.teacher.server import SimulatedTeacher

from .conftest import fast_config, one_quora_shard_config


def one_source_config(min_score: int) -> PipelineConfig:
    """The shipped quora source as one shard, its adapter, and the judge filter on."""
    return one_quora_shard_config(corpus={"judge_filter": {"enabled": True, "min_score": min_score}})


def _run(tmp_path, config: PipelineConfig, server: SimulatedTeacher):
    defs = build_definitions(config, resources={
        "storage": BaizeStorage(output_dir=str(tmp_path / "out")),
        "openai": OpenAIResource(api_key="sk-test-filter", base_url=server.base_url),
        "pipes_subprocess_client": subprocess_client()})
    (tmp_path / "instance").mkdir()
    instance = instance_for_test(temp_dir=str(tmp_path / "instance"))
    return defs, instance


def test_the_training_set_leaves_out_conversations_the_judge_rated_too_low(tmp_path):
    config = one_source_config(min_score=7)
    layout = Layout(tmp_path / "out")
    with SimulatedTeacher() as server:
        defs, instance_context = _run(tmp_path, config, server)
        with instance_context as instance:
            assert defs.resolve_job_def("seed_tables").execute_in_process(instance=instance).success
            # Before the corpus exists, the forecast prices one rating per seed.
            (planned,) = forecast_selection(config, layout, Selection(stages=("ratings",)))
            corpus = defs.resolve_job_def(corpus_job_name("quora")).execute_in_process(instance=instance,
                                                                                     partition_key="0")
            assert corpus.success
            trained = defs.resolve_implicit_global_asset_job_def().execute_in_process(
                instance=instance, asset_selection=[training_set_key("baize_general")])
            assert trained.success
            rating_requests = server.stats()["requests_by_outcome"]["ok"] - 48  # beside the 48 self-chats
    kept = pd.read_parquet(layout.conversations("quora", 0))
    ratings = pd.read_parquet(layout.conversation_ratings("quora", 0))
    assert rating_requests == len(kept) == len(ratings) and ratings["score"].notna().all()
    assert planned.stage == "quora ratings" and planned.rows == 48
    below = int((ratings["score"] < 7).sum())
    assert 0 < below < len(kept)  # the simulated judge rates by closeness to its own answers
    (rated,) = corpus.asset_materializations_for_node(conversation_ratings_key("quora").to_python_identifier())
    assert rated.metadata["below_min_score"].value == below and rated.metadata["spend_dollars"].value > 0
    assert rated.metadata["forecast_dollars_low"].value <= rated.metadata["spend_dollars"].value <= \
        rated.metadata["forecast_dollars_high"].value
    (training,) = trained.asset_materializations_for_node(training_set_key("baize_general").to_python_identifier())
    assert training.metadata["judge_filter_dropped"].value == below
    assert "judge_score" in training.metadata["report"].value
    training_set = pd.read_parquet(layout.training_set("baize_general"))
    low = set(ratings.loc[ratings["score"] < 7, "seed_id"])
    assert not low & set(training_set["seed_id"]) and len(training_set) + below <= len(kept)


def test_ratings_from_a_model_that_is_no_judge_fail_their_step(tmp_path):
    config = one_source_config(min_score=5)
    with SimulatedTeacher(judge=False) as server:
        defs, instance_context = _run(tmp_path, config, server)
        with instance_context as instance:
            assert defs.resolve_job_def("seed_tables").execute_in_process(instance=instance).success
            run = defs.resolve_job_def(corpus_job_name("quora")).execute_in_process(
                instance=instance, partition_key="0", raise_on_error=False)
    assert not run.success
    (failure,) = [e for e in run.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    assert "judgments of quora/0 ratings hold no score" in failure.step_failure_data.user_failure_data.description


def test_a_rating_is_read_from_json_or_from_the_first_line():
    assert read_conversation_score('{"explanation": "fine", "score": 8}').scores == (8,)
    assert read_conversation_score("7\nThe replies are correct.").scores == (7,)
    assert read_conversation_score("Score: 11").reason == "out_of_range"
    frame = pd.DataFrame({"seed_id": ["a", "b", "c"]})
    ratings = pd.DataFrame({"seed_id": ["a", "b", "c"], "score": [3.0, None, 9.0]})
    assert list(judge_filter.rated_below(frame, ratings, 6)) == [True, False, False]  # unrated stays in
    with pytest.raises(ValueError):
        PipelineConfig.model_validate({**fast_config().model_dump(), "corpus": {"judge_filter": {"min_score": 11}}})
