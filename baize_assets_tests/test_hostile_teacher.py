"""Broken and hostile OpenAI-compatible endpoints, over real HTTP: every seed ends as one row,
and what no retry can fix stops the run cleanly, without leaking a secret."""

from __future__ import annotations

import socket
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterEventType, EnvVar, instance_for_test, materialize
from dagster_openai import OpenAIResource
from hypothesis import given, settings, strategies as st
from pydantic import ValidationError

from baize_assets.assets import build_assets, seed_key, transcripts_key
from baize_assets.core.collect.cache import TranscriptCache
from baize_assets.core.collect.collector import collect_transcripts
from baize_assets.core.collect.errors import TeacherFatalError
from baize_assets.core.config.pipeline import CorpusConfig, TeacherConfig
from baize_assets.core.corpus import build as corpus, reasons
from baize_assets.core.storage import Layout, seed_id
from baize_assets.pipes_messages import subprocess_client
from baize_assets.resources import BaizeStorage
from baize_assets.teacher.faults import FaultSchedule
from baize_assets.teacher.server import SimulatedTeacher

from .collection_support import make_seeds
from .conftest import fast_config

CHAT = "/v1/chat/completions"
FAST_RETRIES = {"retry_base_s": 0.01, "retry_max_s": 0.05}
API_KEY = "sk-test-hostile"


def chat_requests(server: SimulatedTeacher) -> int:
    return server.stats()["requests_by_path"].get(CHAT, 0)


def free_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def collect(base_url: str, seeds: pd.DataFrame, api_key: str = API_KEY, logs: list[str] | None = None, **teacher):
    config = TeacherConfig(**{**FAST_RETRIES, **teacher})
    return collect_transcripts(seeds, config, api_key, base_url, logs.append if logs is not None else lambda _: None)


def assert_one_row_per_seed(frame: pd.DataFrame, seeds: pd.DataFrame) -> None:
    assert sorted(frame["seed_id"]) == sorted(seeds["seed_id"])


# --------------------------------------------------------------------------- broken answers are retried


@pytest.mark.parametrize(
    "fault, kind",
    [
        ("invalid_json", "malformed"),  # a 200 whose body was cut, as by a proxy
        ("short_body", "connection"),  # Content-Length longer than what is sent, then the connection closes
        ("non_utf8", "malformed"),
        ("empty_choices", "malformed"),
        ("no_message", "malformed"),
        ("tool_calls", "malformed"),
        ("not_a_completion", "malformed"),  # [], {"foo": 1}, ...
    ],
)
def test_a_broken_answer_is_retried_then_recorded_as_a_failure_row(fault, kind):
    seeds = make_seeds(3)
    with SimulatedTeacher(fault_rate=1.0, fault_kinds=[fault]) as server:
        result = collect(server.base_url, seeds, max_retries=2)
        assert chat_requests(server) == 3 * 3  # every seed, every attempt: the endpoint answers, so no fatal stop
    frame = result.transcripts
    assert_one_row_per_seed(frame, seeds)
    assert frame["failure_kind"].tolist() == [kind] * 3
    assert frame["failure_message"].str.contains("after 3 attempts").all()
    assert frame["transcript"].isna().all()
    assert result.failures == {kind: 3} and result.retries == {kind: 9}


def test_with_a_third_of_bodies_cut_the_shard_finishes_with_every_seed_once():
    seeds = make_seeds(40)
    with SimulatedTeacher(fault_rate=0.3, fault_kinds=["invalid_json", "short_body"], fault_seed=3) as server:
        result = collect(server.base_url, seeds, max_retries=4, max_concurrency=8)
    frame = result.transcripts
    assert_one_row_per_seed(frame, seeds)
    assert result.retries["malformed"] > 0 and result.retries["connection"] > 0
    assert frame["failure_kind"].isna().sum() >= 38


def test_a_slow_drip_body_ends_at_the_deadline_of_each_attempt():
    # 16 bytes every 50 ms: each read arrives well within the timeout, the whole body would take seconds.
    seeds = make_seeds(2)
    with SimulatedTeacher(fault_rate=1.0, fault_kinds=["slow_drip"], drip_interval_s=0.05) as server:
        started = time.monotonic()
        result = collect(server.base_url, seeds, max_retries=1, timeout_s=0.5)
        elapsed = time.monotonic() - started
    assert result.transcripts["failure_kind"].tolist() == ["timeout", "timeout"]
    assert result.retries == {"timeout": 4}
    assert 1.0 <= elapsed < 2.5  # the probe's two attempts, then the other seed's second one


# --------------------------------------------------------------------------- what no retry fixes stops the run


def test_payment_required_stops_the_run_after_one_request():
    with SimulatedTeacher(fault_rate=1.0, fault_kinds=["quota_402"]) as server:
        with pytest.raises(TeacherFatalError, match=r"no quota left \(HTTP 402 insufficient_quota\)"):
            collect(server.base_url, make_seeds(20), max_concurrency=8)
        assert chat_requests(server) == 1


def test_an_endpoint_nobody_listens_on_stops_the_run_at_the_probe():
    port = free_port()
    logs: list[str] = []
    started = time.monotonic()
    with pytest.raises(TeacherFatalError) as error:
        collect(f"http://127.0.0.1:{port}/v1", make_seeds(30), logs=logs, max_retries=2, max_concurrency=8)
    assert time.monotonic() - started < 3
    message = str(error.value)
    assert message.startswith(f"cannot reach the teacher endpoint http://127.0.0.1:{port}/v1: ")
    assert message.endswith("(after 3 attempts); check OPENAI_BASE_URL")
    assert "0/30 conversations" in logs[-1] and "3 requests" in logs[-1]  # no other seed was tried


# --------------------------------------------------------------------------- answers the corpus must not keep


def test_a_content_filtered_answer_is_kept_as_a_row_and_rejected_by_the_corpus():
    seeds = make_seeds(4)
    with SimulatedTeacher(fault_rate=1.0, fault_kinds=["content_filter"]) as server:
        result = collect(server.base_url, seeds)
    frame = result.transcripts
    assert frame["failure_kind"].isna().all() and result.requests == 4  # final as it is, never retried
    assert (frame["finish_reason"] == "content_filter").all() and (frame["ended_by"] == "content_filter").all()
    built = corpus.build_corpus(frame, CorpusConfig())
    assert built.conversations.empty
    assert built.rejects["reason"].tolist() == ["content_filter"] * 4
    assert built.reason_counts()["content_filter"] == 4
    assert reasons.REASONS.index(reasons.CONTENT_FILTER) == reasons.REASONS.index(reasons.INVALID_ROW) + 1


def test_a_content_filtered_ai_turn_ends_a_turn_by_turn_row():
    def first_two(fault_seed: int) -> list[str | None]:
        schedule = FaultSchedule(0.5, ["content_filter"], fault_seed)
        return [schedule.next(), schedule.next()]

    # A schedule whose first request (the human turn) passes and whose second (the AI turn) is filtered.
    fault_seed = next(s for s in range(100) if first_two(s) == [None, "content_filter"])
    seeds = make_seeds(1)
    with SimulatedTeacher(fault_rate=0.5, fault_kinds=["content_filter"], fault_seed=fault_seed) as server:
        result = collect(server.base_url, seeds, mode="v1.5", max_concurrency=1)
    row = result.transcripts.iloc[0]
    assert row["api_calls"] == 2 and row["finish_reason"] == "content_filter" and row["ended_by"] == "content_filter"
    assert corpus.build_corpus(result.transcripts, CorpusConfig()).rejects["reason"].tolist() == ["content_filter"]


def test_an_oversized_answer_is_a_terminal_failure_and_never_cached(tmp_path):
    seeds = make_seeds(2)
    with SimulatedTeacher(fault_rate=1.0, fault_kinds=["oversized"]) as server, \
            TranscriptCache(tmp_path / "cache.sqlite") as cache:
        config = TeacherConfig(max_tokens=512, **FAST_RETRIES)
        result = collect_transcripts(seeds, config, API_KEY, server.base_url, lambda _: None, cache=cache)
        assert cache.count() == 0
    frame = result.transcripts
    assert frame["failure_kind"].tolist() == ["oversized", "oversized"] and frame["transcript"].isna().all()
    assert frame["failure_message"].str.contains("5,000,000 characters, over the limit of 9,216").all()
    assert result.requests == 2 and result.failures == {"oversized": 2}  # the same prompt runs away again


def test_the_answer_size_limit_is_configurable_and_validated(teacher):
    assert TeacherConfig(max_tokens=512).answer_char_limit == 512 * 16 + 1024
    assert TeacherConfig(max_answer_chars=100).answer_char_limit == 100
    with pytest.raises(ValidationError):
        TeacherConfig(max_answer_chars=0)
    result = collect(teacher.base_url, make_seeds(2), max_answer_chars=20)
    assert result.transcripts["failure_kind"].tolist() == ["oversized", "oversized"]


# --------------------------------------------------------------------------- secrets


def test_neither_the_key_nor_the_url_password_reaches_rows_logs_or_errors():
    api_key, password = f"sk-canary-{uuid.uuid4().hex}", f"pw{uuid.uuid4().hex}"
    faults = ["server_error", "rate_limit", "invalid_json", "short_body", "tool_calls", "malformed", "hang"]
    seeds = make_seeds(12)
    logs: list[str] = []
    with SimulatedTeacher(fault_rate=0.6, fault_kinds=faults, fault_seed=5, retry_after_s=0.01, hang_s=1) as server:
        url = f"http://user:{password}@127.0.0.1:{server.port}/v1"
        result = collect(url, seeds, api_key=api_key, logs=logs, max_retries=1, timeout_s=0.3, progress_every_s=0.05)
        with pytest.raises(TeacherFatalError) as quota:
            with SimulatedTeacher(fault_rate=1.0, fault_kinds=["quota_402"]) as broke:
                collect(f"http://user:{password}@127.0.0.1:{broke.port}/v1", seeds, api_key=api_key, logs=logs)
    with pytest.raises(TeacherFatalError) as unreachable:
        collect(f"http://user:{password}@127.0.0.1:{free_port()}/v1", seeds, api_key=api_key, logs=logs,
                max_retries=1)
    assert result.failures and len(result.transcripts) == len(seeds)
    assert "http://user:[redacted]@127.0.0.1:" in str(unreachable.value)
    texts = [*logs, str(quota.value), str(unreachable.value), result.transcripts.to_json(), str(result.failures)]
    for secret in (api_key, password):
        assert not any(secret in text for text in texts)


# --------------------------------------------------------------------------- property: nothing escapes, nothing is lost

_MARKED = st.builds(lambda h, a: f"[Human] {h}\n[AI] {a}", st.text(max_size=40), st.text(max_size=40))
_CONTENT = st.one_of(st.text(max_size=80), _MARKED, st.binary(max_size=60))


@pytest.fixture(scope="module")
def scripted_teacher():
    with SimulatedTeacher() as server:
        yield server


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.text(max_size=40), _CONTENT), min_size=1, max_size=3, unique_by=lambda p: p[0]),
    mode=st.sampled_from(["v1", "v1.5"]),
)
def test_arbitrary_seeds_and_answers_never_raise_and_every_seed_is_one_row(scripted_teacher, pairs, mode):
    replies = dict(pairs)
    scripted_teacher.scripted_reply = lambda subject: replies.get(subject, pairs[0][1])
    seeds = pd.DataFrame([{"seed_id": seed_id(s), "seed": s, "source": "quora", "shard": 0} for s, _ in pairs])
    config = TeacherConfig(mode=mode, max_retries=1, max_rounds=2, max_concurrency=2, **FAST_RETRIES)
    with tempfile.TemporaryDirectory() as directory, \
            TranscriptCache(Path(directory) / "cache.sqlite", reuse=False) as cache:
        result = collect_transcripts(seeds, config, API_KEY, scripted_teacher.base_url, lambda _: None, cache=cache)
    frame = result.transcripts
    assert sorted(frame["seed_id"]) == sorted(seeds["seed_id"])
    built = corpus.build_corpus(frame, CorpusConfig())
    assert len(built.conversations) + len(built.rejects) == len(frame)


# --------------------------------------------------------------------------- the Dagster step


def test_a_partition_whose_every_seed_failed_is_a_failed_step_and_an_unreachable_teacher_says_so(tmp_path):
    config = fast_config()
    failing = config.teacher.model_copy(update={"max_retries": 1, **FAST_RETRIES})
    assets = build_assets(config.model_copy(update={"teacher": failing}))
    output = tmp_path / "output"
    resources = {"storage": BaizeStorage(output_dir=str(output)),
                 "openai": OpenAIResource(api_key=EnvVar("OPENAI_API_KEY")),
                 "pipes_subprocess_client": subprocess_client()}
    (tmp_path / "instance").mkdir()
    with pytest.MonkeyPatch.context() as env, instance_for_test(temp_dir=str(tmp_path / "instance")) as instance, \
            SimulatedTeacher(fault_rate=1.0, fault_kinds=["server_error"]) as server:
        env.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
        env.setenv("OPENAI_BASE_URL", server.base_url)
        assert materialize(assets, selection=[seed_key("quora")], instance=instance, resources=resources).success

        def failure_of_transcripts():
            run = materialize(assets, selection=[transcripts_key("quora")], partition_key="0", instance=instance,
                              resources=resources, raise_on_error=False)
            assert not run.success
            (event,) = [e for e in run.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
            return event.step_failure_data.user_failure_data

        all_failed = failure_of_transcripts()
        env.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
        unreachable = failure_of_transcripts()
    seeds = len(pd.read_parquet(Layout(output).transcripts("quora", 0)))
    assert all_failed.description.startswith(
        f"every one of the {seeds} requests of quora/0 failed ({seeds} server_error)"
    )
    assert all_failed.metadata["failures_by_kind"].value == {"server_error": seeds}
    assert all_failed.metadata["conversations"].value == 0
    assert unreachable.description.startswith("cannot reach the teacher endpoint http://127.0.0.1:")
