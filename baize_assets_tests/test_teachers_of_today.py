"""Today's teachers over real HTTP: OpenAI's reasoning models and their 400s, an endpoint that refuses a field,
reasoning tokens, answers in another format, provider fields, and a judge of its own that may be no judge."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterEventType, EnvVar, instance_for_test, materialize
from dagster_openai import OpenAIResource
from pydantic import ValidationError

from baize_assets.assets import build_assets, feedback_scores_key, seed_key, transcripts_key
from baize_assets.core.collect.batch import collect_transcripts_batch
from baize_assets.core.collect.collector import collect_transcripts
from baize_assets.core.collect.errors import REASONING_EXHAUSTED, WRONG_FORMAT, TeacherFatalError
from baize_assets.core.collect.modes import judge_writer
from baize_assets.core.collect.parallel import SharedStores, collect_transcripts_in_processes
from baize_assets.core.collect.request_profile import is_reasoning_model
from baize_assets.core.collect.results import generation_inputs
from baize_assets.core.collect.shared_limits import SqliteLimitStore
from baize_assets.core.collect.state import CacheSpec
from baize_assets.core.config.pipeline import (
    BatchConfig,
    ModelPrice,
    PipelineConfig,
    RateLimitStoreConfig,
    TeacherConfig,
)
from baize_assets.core.feedback import self_distill
from baize_assets.core.feedback.judgments import read_pair_scores, read_single_score
from baize_assets.core.prompts import SCORE_ANSWER_FORMAT, Turn
from baize_assets.core.storage import Layout, write_parquet_atomic
from baize_assets.pipes_messages import subprocess_client
from baize_assets.resources import BaizeStorage
from baize_assets.teacher.server import SimulatedTeacher

from .collection_support import make_seeds
from .conftest import fast_config

FAST = {"retry_base_s": 0.01, "retry_max_s": 0.05}
API_KEY = "sk-test-today"


def bad_requests(server: SimulatedTeacher) -> int:
    return server.stats()["requests_by_outcome"].get("invalid_request", 0)


def chat_requests(server: SimulatedTeacher) -> int:
    return server.stats()["requests_by_path"].get("/v1/chat/completions", 0)


def collect(server: SimulatedTeacher, seeds: pd.DataFrame, warnings: list[str] | None = None, **settings):
    teacher = TeacherConfig(**{**FAST, **settings})
    return collect_transcripts(seeds, teacher, API_KEY, server.base_url, lambda _: None,
                               warn=warnings.append if warnings is not None else None)


def materialize_shard(config: PipelineConfig, server: SimulatedTeacher, tmp_path: Path, source: str = "quora"):
    """The seed table and shard 0 of ``source``'s transcripts, materialized in a real instance."""
    assets = build_assets(config)
    resources = {"storage": BaizeStorage(output_dir=str(tmp_path / "output")),
                 "openai": OpenAIResource(api_key=EnvVar("OPENAI_API_KEY")),
                 "pipes_subprocess_client": subprocess_client()}
    with pytest.MonkeyPatch.context() as env, instance_for_test(temp_dir=str(tmp_path)) as instance:
        env.setenv("OPENAI_API_KEY", API_KEY)
        env.setenv("OPENAI_BASE_URL", server.base_url)
        assert materialize(assets, selection=[seed_key(source)], instance=instance, resources=resources).success
        run = materialize(assets, selection=[transcripts_key(source)], partition_key="0", instance=instance,
                          resources=resources)
        logs = [e for e in instance.all_logs(run.run_id) if e.dagster_event is None]
    return run.asset_materializations_for_node(f"{source}__transcripts")[0].metadata, logs


# --------------------------------------------------------------------------- reasoning models


@pytest.mark.parametrize("model", ["gpt-5-mini", "o4-mini", "o3", "openai/gpt-5.1", "o1-preview"])
def test_openai_reasoning_families_are_known(model):
    assert is_reasoning_model(model)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4.1", "baize-simulated-teacher", "llama-3-o1-tune", "gpt-50x"])
def test_other_models_are_not_taken_for_reasoning_models(model):
    assert not is_reasoning_model(model)


def test_the_shipped_configuration_collects_from_gpt_5_mini_with_only_the_model_changed(tmp_path):
    config = fast_config()
    config = config.model_copy(update={"teacher": config.teacher.model_copy(update={"model": "gpt-5-mini"})})
    with SimulatedTeacher(reasoning_models=["gpt-5-mini"]) as server:
        metadata, logs = materialize_shard(config, server, tmp_path)
        stats = server.stats()
    transcripts = pd.read_parquet(Layout(tmp_path / "output").transcripts("quora", 0))
    assert transcripts["failure_kind"].isna().all() and len(transcripts) == chat_requests(server)
    assert bad_requests(server) == 0  # nothing the model refuses was ever sent
    assert stats["request_fields"].get("max_completion_tokens") == len(transcripts)
    assert "max_tokens" not in stats["request_fields"] and stats["temperatures"] == {"None": len(transcripts)}
    # Hidden reasoning: counted per row, in the totals, and inside the completion tokens it is part of.
    assert (transcripts["reasoning_tokens"] == 192).all()
    assert metadata["openai.reasoning_tokens"].value == 192 * len(transcripts)
    assert metadata["openai.completion_tokens"].value == transcripts["completion_tokens"].sum()
    assert not [log for log in logs if "refused the field" in log.user_message or "takes only" in log.user_message]


def test_reasoning_tokens_are_paid_for_and_budgeted():
    seeds = make_seeds(6)
    price = ModelPrice(input_per_million=1.0, output_per_million=8.0)
    with SimulatedTeacher(reasoning_models=["gpt-5-mini"]) as server:
        result = collect(server, seeds, model="gpt-5-mini", reasoning_effort="high", prices={"gpt-5-mini": price})
    frame = result.transcripts
    assert (frame["reasoning_tokens"] == 512).all() and (frame["completion_tokens"] > 512).all()
    expected = (frame["prompt_tokens"].sum() * 1.0 + frame["completion_tokens"].sum() * 8.0) / 1e6
    assert result.spent_dollars == pytest.approx(expected)
    assert result.spent_tokens == frame["total_tokens"].sum()
    assert result.usage.as_metadata()["openai.gpt-5-mini.reasoning_tokens"] == 512 * len(seeds)
    # Cached under its effort: the same seeds at another effort are other conversations.
    assert generation_inputs(TeacherConfig(reasoning_effort="high")) != generation_inputs(TeacherConfig())
    assert generation_inputs(TeacherConfig()) == generation_inputs(TeacherConfig(extra_body={}))


def test_a_completion_budget_spent_on_reasoning_is_its_own_failure_and_not_asked_again():
    seeds = make_seeds(5)
    with SimulatedTeacher(reasoning_models=["gpt-5-mini"]) as server:
        result = collect(server, seeds, model="gpt-5-mini", max_tokens=150,
                         prices={"gpt-5-mini": ModelPrice(input_per_million=1.0, output_per_million=8.0)})
        requests = chat_requests(server)
    frame = result.transcripts
    assert requests == len(seeds)  # the same request would spend the same budget on the same thinking
    assert (frame["failure_kind"] == REASONING_EXHAUSTED).all()
    message = frame["failure_message"].iloc[0]
    assert "150 completion tokens, 150 of them reasoning" in message
    assert "raise teacher.max_tokens (now 150) or lower teacher.reasoning_effort" in message
    assert result.rejected_tokens[REASONING_EXHAUSTED] == frame.shape[0] * 150 + sum(
        result.usage.prompt_tokens.values())
    assert result.rejected_cost()[REASONING_EXHAUSTED]["dollars"] > 0


def test_a_batch_for_a_reasoning_model_follows_its_rules():
    teacher = TeacherConfig(**FAST, model="gpt-5-mini", api="batch", batch=BatchConfig(poll_interval_s=0.05))
    with SimulatedTeacher(reasoning_models=["gpt-5-mini"], batch_completion_delay_s=0.1) as server:
        result = collect_transcripts_batch(make_seeds(5), teacher, API_KEY, server.base_url, log=lambda _: None)
    assert result.transcripts["failure_kind"].isna().all()
    assert (result.transcripts["reasoning_tokens"] == 192).all() and result.usage.as_metadata()[
        "openai.reasoning_tokens"] == 5 * 192


def test_v15_against_a_reasoning_model_cuts_at_the_stop_markers_on_the_client():
    seeds = make_seeds(4)
    with SimulatedTeacher(reasoning_models=["o4-mini"]) as server:
        result = collect(server, seeds, model="o4-mini", mode="v1.5", max_rounds=2)
        fields = server.stats()["request_fields"]
    frame = result.transcripts
    assert frame["failure_kind"].isna().all() and bad_requests(server) == 0
    assert "stop" not in fields and "temperature" not in fields
    # Each human turn was cut at [AI] by the client, as the endpoint would have with a stop sequence.
    assert all(t.count("[Human]") == t.count("[AI]") >= 1 for t in frame["transcript"])


def test_a_setting_a_reasoning_model_does_not_take_is_named_in_a_warning_once():
    warnings: list[str] = []
    with SimulatedTeacher(reasoning_models=["gpt-5-mini"]) as server:
        result = collect(server, make_seeds(3), warnings, model="gpt-5-mini", temperature=0.7)
    assert result.transcripts["failure_kind"].isna().all()
    assert warnings == ["teacher.temperature is 0.7, but 'gpt-5-mini' takes only its default (1): the requests are "
                        "sent without it"]


# --------------------------------------------------------------------------- a model the project does not know


def test_an_unknown_model_that_refuses_fields_is_adapted_once_per_run_with_a_warning_each():
    seeds = make_seeds(12)
    warnings: list[str] = []
    with SimulatedTeacher(reasoning_models=["acme-thinker-2"]) as server:
        result = collect(server, seeds, warnings, model="acme-thinker-2", mode="v1.5", max_rounds=2, top_p=0.9,
                         max_concurrency=4)
        refused = bad_requests(server)
        fields = server.stats()["request_fields"]
    assert result.transcripts["failure_kind"].isna().all()
    # max_tokens, top_p and stop: one 400 each for the whole run, not one per seed.
    assert refused == 3 and result.adaptations == 3
    assert len(warnings) == 3
    assert any("refused the field 'max_tokens'" in w and "as 'max_completion_tokens' instead of 'max_tokens'" in w
               for w in warnings)
    assert any("'stop'" in w and "cuts each answer at the first stop sequence itself" in w for w in warnings)
    assert any("Unsupported parameter: 'top_p'" in w and "sends no 'top_p'" in w for w in warnings)
    assert fields["max_completion_tokens"] == chat_requests(server) - 1  # all but the very first


def test_processes_of_one_run_share_the_adaptation(tmp_path):
    seeds = make_seeds(16)
    store = RateLimitStoreConfig(path=str(tmp_path / "limits.sqlite"))
    stores = SharedStores(store, tmp_path / "limits.sqlite", CacheSpec(tmp_path / "cache.sqlite", "cache"))
    teacher = TeacherConfig(**FAST, model="acme-thinker-2", processes=2, max_concurrency=2)
    warnings: list[str] = []
    ledger = f"run-{uuid.uuid4()}"
    with SimulatedTeacher(reasoning_models=["acme-thinker-2"], latency_s=0.02) as server:
        result = collect_transcripts_in_processes(seeds, teacher, API_KEY, stores, server.base_url,
                                                  log=lambda _: None, ledger=ledger, warn=warnings.append)
        first = bad_requests(server)
        # A later step of the same run (another shard) starts with the run's adapted profile.
        collect_transcripts(make_seeds(4, start=100), teacher.model_copy(update={"processes": 1}), API_KEY,
                            server.base_url, lambda _: None, limit_store=SqliteLimitStore(tmp_path / "limits.sqlite"),
                            ledger=ledger, warn=warnings.append)
        later = bad_requests(server) - first
    assert result.transcripts["failure_kind"].isna().all()
    assert 1 <= first <= 2 and later == 0  # at most one 400 per process, never one per seed
    assert len(warnings) == 1 and warnings[0].startswith("[process ")  # recorded once, so said once
    with sqlite3.connect(tmp_path / "limits.sqlite") as db:
        assert db.execute("SELECT name, action FROM adaptations").fetchall() == [("max_tokens", "rename")]


class _RefusingGateway(BaseHTTPRequestHandler):
    """A gateway that answers every chat completion 400, naming a field: ``messages``, or whichever token limit
    the request carries (so no renaming ever helps)."""

    refused: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        param = next((f for f in ("max_tokens", "max_completion_tokens") if f in body), "messages") \
            if self.server.mode == "limits" else "messages"
        self.refused.append(param)
        data = json.dumps({"error": {"message": f"Unsupported parameter: '{param}'.", "type": "invalid_request_error",
                                     "param": param, "code": "unsupported_parameter"}}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize("mode", ["messages", "limits"])
def test_a_refusal_no_field_change_can_fix_stops_the_run_without_looping(mode):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefusingGateway)
    server.mode = mode
    _RefusingGateway.refused = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(TeacherFatalError, match=r"rejected the request \(HTTP 400\)"):
            collect_transcripts(make_seeds(5), TeacherConfig(**FAST), API_KEY,
                                f"http://127.0.0.1:{server.server_address[1]}/v1", lambda _: None)
    finally:
        server.shutdown()
        server.server_close()
    # messages: no field to change, one request; limits: each name tried once, then the run stops.
    assert _RefusingGateway.refused == (["messages"] if mode == "messages" else ["max_tokens", "max_completion_tokens"])


def test_extra_body_reaches_the_endpoint_and_may_not_hold_a_field_the_pipeline_sets():
    with SimulatedTeacher() as server:
        result = collect(server, make_seeds(3), extra_body={"top_k": 20, "repetition_penalty": 1.1,
                                                           "provider": {"order": ["a", "b"]}})
        fields = server.stats()["request_fields"]
    assert result.transcripts["failure_kind"].isna().all()
    assert fields["top_k"] == fields["repetition_penalty"] == fields["provider"] == 3
    with pytest.raises(ValidationError, match="max_tokens cannot go in extra_body: the pipeline sets it"):
        TeacherConfig(extra_body={"max_tokens": 5})


# --------------------------------------------------------------------------- answers in another format


def test_a_weak_teacher_s_format_slips_are_asked_again_once_and_cost_is_counted():
    seeds = make_seeds(10)
    slipping = set(seeds["seed"].iloc[:6])
    with SimulatedTeacher() as server:
        # Six seeds always get prose instead of a transcript, as a small open model often writes.
        server.scripted_reply = lambda subject: "Sure! Here is a nice conversation about it." if subject in slipping \
            else None
        result = collect(server, seeds)
        once = chat_requests(server)
        no_retry = collect(server, seeds, format_retries=0)
        none_again = chat_requests(server) - once
    frame = result.transcripts
    assert once == 10 + 6  # each slip asked again once, not max_retries times
    assert (frame["failure_kind"] == WRONG_FORMAT).sum() == 6 and result.retries[WRONG_FORMAT] == 6
    assert "after 2 answers in another format; teacher.format_retries is 1" in \
        frame.loc[frame["failure_kind"] == WRONG_FORMAT, "failure_message"].iloc[0]
    assert result.rejected_tokens[WRONG_FORMAT] > 0 and result.rejected_cost()[WRONG_FORMAT]["tokens"] > 0
    assert none_again == 10 and (no_retry.transcripts["failure_kind"] == WRONG_FORMAT).sum() == 6


# --------------------------------------------------------------------------- the judge


def _judge_requests() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Eight sampled answers (two per seed, a good and an off-topic one) and their judge requests."""
    samples = pd.DataFrame({
        "seed_id": [f"s{i}" for i in range(4) for _ in range(2)], "source": "medquad", "shard": 0,
        "sample_index": [0, 1] * 4,
        "context": [[Turn("human", f"How do bees make honey, case {i}?").as_dict()] for i in range(4) for _ in "ab"],
        "answer": ["Bees make honey from nectar they collect and evaporate.", "I like turtles."] * 4,
        "finish_reason": "stop",
    })
    return samples, self_distill.judge_requests(samples)


def test_structured_judgments_are_read_and_a_refused_response_format_falls_back_to_text():
    samples, requests = _judge_requests()
    judge = TeacherConfig(**FAST, temperature=0.0)
    writer = judge_writer(SCORE_ANSWER_FORMAT)
    with SimulatedTeacher() as structured:
        as_json = collect_transcripts(requests, judge, API_KEY, structured.base_url, lambda _: None, writer=writer)
        assert structured.stats()["request_fields"]["response_format"] == len(requests)
    assert all(text.startswith("{") and read_single_score(text).ok for text in as_json.transcripts["transcript"])
    for refusal, outcome in (("refused", "invalid_request"), ("refused_as_500", "server_error")):
        warnings: list[str] = []
        with SimulatedTeacher(structured_output=refusal) as plain:
            as_text = collect_transcripts(requests, judge, API_KEY, plain.base_url, lambda _: None, writer=writer,
                                          warn=warnings.append)
            # One refusal for the run, as OpenAI (400) or as llama-cpp-python's server (500) answers it.
            assert plain.stats()["requests_by_outcome"].get(outcome) == 1
        assert len(warnings) == 1 and "sends no 'response_format'" in warnings[0]
        scores = self_distill.read_judgments(samples, as_text.transcripts)
        assert scores["score"].notna().all()
    # The same scores either way, read from JSON or from the first line.
    assert list(self_distill.read_judgments(samples, as_json.transcripts)["score"]) == list(scores["score"])
    assert read_pair_scores('{"explanation": "x", "assistant_1_score": 7, "assistant_2_score": 9}').scores == (7, 9)
    assert read_pair_scores('{"assistant_1_score": 7}').reason == "no_score"


def test_the_judge_block_has_its_own_model_sampling_and_endpoint(monkeypatch):
    config = fast_config()
    config = PipelineConfig.model_validate({
        **config.model_dump(), "judge": {"model": "gpt-5", "reasoning_effort": "low", "max_tokens": 2000,
                                         "base_url_env": "JUDGE_BASE_URL", "api_key_env": "JUDGE_API_KEY"}})
    judge = config.judge_teacher()
    assert (judge.model, judge.reasoning_effort, judge.max_tokens, judge.temperature) == ("gpt-5", "low", 2000, 0.0)
    assert (judge.section, judge.base_url_env, judge.api_key_env) == ("judge", "JUDGE_BASE_URL", "JUDGE_API_KEY")
    assert judge.rate_limit == config.teacher.rate_limit and judge.budget == config.teacher.budget
    # Judge settings key the judgment cache: another judge temperature is another judgment.
    other = config.model_copy(update={"judge": config.judge.model_copy(update={"temperature": 0.5})})
    assert generation_inputs(judge) != generation_inputs(other.judge_teacher())
    with pytest.raises(ValidationError, match="judge: budget.max_dollars needs a price for model 'gpt-5'"):
        PipelineConfig.model_validate({**config.model_dump(), "teacher": {
            **config.teacher.model_dump(), "budget": {"max_dollars": 5.0},
            "prices": {"baize-simulated-teacher": {"input_per_million": 1.0, "output_per_million": 1.0}}}})


def _scores_run(tmp_path: Path, judge_server: SimulatedTeacher, judge: dict):
    """The v2 scores of shard 0 of medquad, judged by ``judge_server`` on its own endpoint."""
    base = fast_config()
    config = PipelineConfig.model_validate({**base.model_dump(), "judge": {
        **judge, "base_url_env": "JUDGE_BASE_URL", "api_key_env": "JUDGE_API_KEY"}})
    plan = config.self_distillation[0]
    layout = Layout(tmp_path / "output")
    samples, _ = _judge_requests()
    write_parquet_atomic(samples, layout.feedback_samples(plan.adapter_name, "medquad", 0), self_distill.SAMPLE_SCHEMA)
    assets = build_assets(config)
    resources = {"storage": BaizeStorage(output_dir=str(tmp_path / "output")),
                 "openai": OpenAIResource(api_key="sk-teacher-key", base_url="http://127.0.0.1:9/v1"),
                 "pipes_subprocess_client": subprocess_client()}
    with pytest.MonkeyPatch.context() as env, instance_for_test(temp_dir=str(tmp_path)) as instance:
        env.setenv("JUDGE_BASE_URL", judge_server.base_url)
        env.setenv("JUDGE_API_KEY", "sk-judge-key")
        return materialize(assets, selection=[feedback_scores_key(plan.adapter_name, "medquad")], partition_key="0",
                           instance=instance, resources=resources, raise_on_error=False), layout, plan


def test_v2_scores_are_judged_at_temperature_zero_on_the_judge_s_own_endpoint(tmp_path):
    with SimulatedTeacher(models=["judge-model"], api_key="sk-judge-key") as judge_server:
        run, layout, plan = _scores_run(tmp_path, judge_server, {"model": "judge-model"})
        stats = judge_server.stats()
    assert run.success
    assert stats["temperatures"] == {"0.0": 8} and stats["request_fields"]["response_format"] == 8
    scores = pd.read_parquet(layout.feedback_scores(plan.adapter_name, "medquad", 0))
    assert scores["score"].notna().all()
    metadata = run.asset_materializations_for_node(f"{plan.adapter_name}__medquad_scores")[0].metadata
    assert metadata["judge_model"].value == "judge-model"


def test_scores_from_a_model_that_is_no_judge_fail_the_step_with_counts_and_a_hint(tmp_path):
    with SimulatedTeacher(models=["tiny-chat"], judge=False, api_key="sk-judge-key") as judge_server:
        run, layout, plan = _scores_run(tmp_path, judge_server, {"model": "tiny-chat"})
    assert not run.success
    (failure,) = [e for e in run.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith(f"8 of the 8 judgments of {plan.adapter_name}/medquad/0 scores hold no score "
                              "(8 out_of_range), more than judge.max_unscored_fraction (0.5) allows.")
    assert "Is judge.model ('tiny-chat') a judge?" in message
    assert not layout.feedback_scores(plan.adapter_name, "medquad", 0).exists()  # nothing green, nothing written
