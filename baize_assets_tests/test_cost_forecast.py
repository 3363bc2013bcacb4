"""The cost forecast against what collections really spend, over real HTTP: v1, v1.5, batch and judging;
cached rows are free, an unpriced model is refused, and the spend per kept conversation adds up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterEventType, instance_for_test
from dagster_openai import OpenAIResource

from baize_assets.assets import COST_FORECAST_KEY, conversations_key, transcripts_key
from baize_assets.components.baize_pipeline import build_definitions
from baize_assets.core.collect.batch import collect_transcripts_batch
from baize_assets.core.collect.cache import TranscriptCache
from baize_assets.core.collect.collector import collect_transcripts
from baize_assets.core.collect.modes import judge_writer
from baize_assets.core.config.pipeline import PipelineConfig
from baize_assets.core.costs.forecast import ForecastError
from baize_assets.core.costs.stages import Selection, forecast_selection, scores_forecast, transcripts_forecast
from baize_assets.core.feedback import self_distill
from baize_assets.core.prompts import SCORE_ANSWER_FORMAT, Turn
from baize_assets.core.seeds.table import load_seed_table
from baize_assets.core.storage import Layout, write_parquet_atomic
from baize_assets.jobs import corpus_job_name
from baize_assets.pipes_messages import subprocess_client
from baize_assets.resources import BaizeStorage
from baize_assets.teacher.server import SimulatedTeacher

from .conftest import fast_config

API_KEY = "sk-test-forecast"
FAST = {"retry_base_s": 0.01, "retry_max_s": 0.05}


def priced_config(**teacher) -> PipelineConfig:
    """The shipped configuration (it prices the simulated teacher), with teacher settings changed."""
    config = fast_config()
    return PipelineConfig.model_validate({**config.model_dump(), "teacher": {
        **config.teacher.model_dump(), **FAST, **teacher}})


def shard_seeds(config: PipelineConfig, source: str, shard: int) -> pd.DataFrame:
    seeds = load_seed_table(config.source(source)).seeds
    return seeds[seeds["shard"] == shard].reset_index(drop=True)


def collect_shard(config: PipelineConfig, layout: Layout, server: SimulatedTeacher, source: str, shard: int):
    with TranscriptCache(layout.transcript_cache(source)) as cache:
        if config.teacher.api == "batch":
            return collect_transcripts_batch(shard_seeds(config, source, shard), config.teacher, API_KEY,
                                             server.base_url, lambda _: None, cache=cache)
        return collect_transcripts(shard_seeds(config, source, shard), config.teacher, API_KEY, server.base_url,
                                   lambda _: None, cache=cache)


@pytest.mark.parametrize("settings", [{"mode": "v1"}, {"mode": "v1.5", "max_rounds": 3},
                                      {"api": "batch", "batch": {"poll_interval_s": 0.05}}],
                         ids=["v1", "v1.5", "batch"])
def test_a_fresh_shard_s_spend_falls_in_its_forecast_and_a_cached_one_forecasts_nothing(tmp_path, settings):
    config = priced_config(**settings)
    layout = Layout(tmp_path)
    source = config.source("quora")
    with SimulatedTeacher(batch_completion_delay_s=0.05) as server:
        blind = transcripts_forecast(config, layout, source, [0])  # no history yet: wide, and said so
        first = collect_shard(config, layout, server, "quora", 0)
        informed = transcripts_forecast(config, layout, source, [3])  # shard 0's cost is the history now
        second = collect_shard(config, layout, server, "quora", 3)
    assert blind.basis.startswith("no history") and blind.dollars.low <= first.spent_dollars <= blind.dollars.high
    assert informed.basis.startswith("what 16 earlier rows")
    assert informed.dollars.low <= second.spent_dollars <= informed.dollars.high
    # Informed, the range is much narrower, and the expected figure close to the spend.
    assert informed.dollars.high - informed.dollars.low < (blind.dollars.high - blind.dollars.low) / 2
    assert abs(second.spent_dollars / informed.expected_dollars - 1) < 0.25
    if config.teacher.api == "chat":  # a batch's requests are its files and polls; its lines are its rows
        assert informed.requests.low <= second.requests <= informed.requests.high
    cached = transcripts_forecast(config, layout, source, [0, 3])
    assert cached.cached == cached.rows == 32 and cached.dollars.high == cached.expected_dollars == 0.0
    assert transcripts_forecast(config, layout, source, [0], regenerate=True).dollars.low > 0


def test_judge_scores_are_forecast_from_the_samples_and_land_in_range(tmp_path):
    config = priced_config()
    layout = Layout(tmp_path)
    plan, source = config.self_distillation[0], config.source("medquad")
    writer = judge_writer(SCORE_ANSWER_FORMAT)
    with SimulatedTeacher() as server:
        spent = []
        for shard in (0, 1):
            seeds = shard_seeds(config, "medquad", shard)
            samples = pd.DataFrame({
                "seed_id": [s for s in seeds["seed_id"] for _ in range(2)], "source": "medquad", "shard": shard,
                "sample_index": [0, 1] * len(seeds),
                "context": [[Turn("human", q).as_dict()] for q in seeds["seed"] for _ in range(2)],
                "answer": [a for q in seeds["seed"] for a in (f"About {q}: it depends on the person.", "No idea.")],
                "finish_reason": "stop"})
            write_parquet_atomic(samples, layout.feedback_samples(plan.adapter_name, "medquad", shard),
                                 self_distill.SAMPLE_SCHEMA)
            forecast = scores_forecast(config, layout, plan, source, [shard])
            with TranscriptCache(layout.feedback_cache(plan.adapter_name)) as cache:
                result = collect_transcripts(self_distill.judge_requests(samples), config.judge_teacher(), API_KEY,
                                             server.base_url, lambda _: None, cache=cache, writer=writer)
            spent.append((forecast, result.spent_dollars, result.requests))
    for forecast, dollars, requests in spent:
        assert forecast.rows == forecast.requests.low <= requests <= forecast.requests.high
        assert forecast.dollars.low <= dollars <= forecast.dollars.high
    assert spent[1][0].basis.startswith("what 30 earlier rows")


def test_a_stage_whose_model_has_no_price_is_refused_naming_the_setting(tmp_path):
    config = priced_config(prices={})
    with pytest.raises(ForecastError, match="quora transcripts: model 'baize-simulated-teacher' has no price; add "
                                            "it under teacher.prices"):
        forecast_selection(config, Layout(tmp_path), Selection(sources=("quora",)))
    judged_elsewhere = PipelineConfig.model_validate({**fast_config().model_dump(), "judge": {"model": "gpt-5"}})
    with pytest.raises(ForecastError, match="judge: baize_general's judgments: model 'gpt-5' has no price"):
        forecast_selection(judged_elsewhere, Layout(tmp_path), Selection(stages=("judgments",)))


def test_baize_estimate_prints_the_shipped_configuration_s_forecast_and_sends_nothing(tmp_path):
    env = {"BAIZE_OUTPUT_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    shown = subprocess.run([sys.executable, "-m", "baize_assets.cli", "estimate", "--source", "quora", "--shards",
                            "0,1"], capture_output=True, text=True, env=env, check=True).stdout
    assert "quora transcripts (shards 0, 1)" in shown and "total" in shown and "assumptions:" in shown
    as_json = json.loads(subprocess.run([sys.executable, "-m", "baize_assets.cli", "estimate", "--json"],
                                        capture_output=True, text=True, env=env, check=True).stdout)
    stages = {s["stage"] for s in as_json["stages"]}
    assert {"quora transcripts", "baize_healthcare_v2 scores of medquad", "judge: baize_general's judgments"} <= stages
    assert as_json["total_dollars"][0] < as_json["expected_dollars"] < as_json["total_dollars"][1]
    refused = subprocess.run([sys.executable, "-m", "baize_assets.cli", "estimate", "--stages", "transcript"],
                             capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "--stages: unknown transcript" in refused.stderr


# --------------------------------------------------------------------------- in Dagster


def _run_corpus_shard(tmp_path: Path, config: PipelineConfig, server: SimulatedTeacher):
    """The seed tables, then shard 0 of quora's corpus job, in a real instance; the run and the forecast."""
    defs = build_definitions(config, resources={
        "storage": BaizeStorage(output_dir=str(tmp_path / "out")),
        "openai": OpenAIResource(api_key=API_KEY, base_url=server.base_url),
        "pipes_subprocess_client": subprocess_client()})
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert defs.resolve_job_def("seed_tables").execute_in_process(instance=instance).success
        run = defs.resolve_job_def(corpus_job_name("quora")).execute_in_process(
            instance=instance, partition_key="0", raise_on_error=False)
        return run, instance.get_latest_materialization_event(COST_FORECAST_KEY)


def test_a_shard_s_metadata_sets_its_spend_beside_its_forecast_and_per_kept_conversation(tmp_path):
    with SimulatedTeacher() as server:
        run, _ = _run_corpus_shard(tmp_path, priced_config(), server)
    assert run.success
    transcripts = run.asset_materializations_for_node(f"{transcripts_key('quora').to_python_identifier()}")[0]
    corpus = run.asset_materializations_for_node(f"{conversations_key('quora').to_python_identifier()}")[0]
    spent = transcripts.metadata["spend_dollars"].value
    assert transcripts.metadata["forecast_dollars_low"].value <= spent <= \
        transcripts.metadata["forecast_dollars_high"].value
    assert transcripts.metadata["forecast_ratio"].value == pytest.approx(
        spent / transcripts.metadata["forecast_dollars_expected"].value, rel=1e-3)
    kept = corpus.metadata["dagster/row_count"].value
    assert corpus.metadata["spend_dollars"].value == pytest.approx(spent, abs=1e-6)
    assert corpus.metadata["dollars_per_kept_conversation"].value == pytest.approx(spent / kept, rel=1e-4)


def test_a_forecast_over_the_limit_stops_the_collecting_run_before_any_request(tmp_path):
    with SimulatedTeacher() as server:
        run, forecast = _run_corpus_shard(tmp_path, priced_config(budget={"max_forecast_dollars": 0.0001}), server)
        requests = server.stats()["requests_total"]
    assert not run.success and requests == 0
    checks = [e for e in run.all_events if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION]
    (check,) = [e.event_specific_data for e in checks]
    assert not check.passed and "against a limit of $0.0001" in check.description
    assert not run.asset_materializations_for_node(transcripts_key("quora").to_python_identifier())
    assert forecast.asset_materialization.metadata["forecast_dollars_expected"].value > 0.0001
