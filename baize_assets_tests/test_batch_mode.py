"""Batch API collection against the simulated teacher over real HTTP: rows, retries, resumption, prices."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pandas as pd
import pytest
from dagster import DagsterEventType, EnvVar, instance_for_test, materialize
from dagster_openai import OpenAIResource

from baize_assets.assets import build_assets, seed_key, transcripts_key
from baize_assets.core.collect.batch import collect_transcripts_batch
from baize_assets.core.collect.batch_jobs import BatchJobs
from baize_assets.core.collect.cache import TranscriptCache, cache_key
from baize_assets.core.collect.client import estimate_tokens
from baize_assets.core.collect.collector import collect_transcripts
from baize_assets.core.collect.errors import BUDGET_EXHAUSTED
from baize_assets.core.collect.results import generation_inputs
from baize_assets.core.config.pipeline import BatchConfig, BudgetConfig, ModelPrice, TeacherConfig
from baize_assets.core.prompts import self_chat_prompt
from baize_assets.core.storage import Layout
from baize_assets.pipes_messages import subprocess_client
from baize_assets.resources import BaizeStorage
from baize_assets.teacher.server import DEFAULT_MODEL, SimulatedTeacher

from .collection_support import make_seeds
from .conftest import fast_config

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BATCH = TeacherConfig(api="batch", batch=BatchConfig(poll_interval_s=0.05), max_tokens=400)
COMPARED = ["seed_id", "seed", "transcript", "finish_reason", "ended_by", "prompt_tokens", "completion_tokens",
            "total_tokens", "model", "prompt_version"]
# Collects a seed Parquet file in batch mode with a transcript cache, as a run's process would.
COLLECTOR = """
import sys, pandas as pd
from baize_assets.core.collect.batch import collect_transcripts_batch
from baize_assets.core.config.pipeline import TeacherConfig
from baize_assets.core.collect.cache import TranscriptCache, cache_key
seeds, cache, base_url, teacher = sys.argv[1:]
with TranscriptCache(cache) as c:
    collect_transcripts_batch(pd.read_parquet(seeds), TeacherConfig.model_validate_json(teacher), "sk-test",
                              base_url, log=lambda line: print(line, flush=True), cache=c)
"""


def quiet(_: str) -> None:
    pass


def conversations(frame) -> int:
    return int(frame["failure_kind"].isna().sum())


def test_one_row_per_seed_matching_chat_mode_and_feeding_the_same_cache(tmp_path):
    seeds = make_seeds(12)
    with SimulatedTeacher(batch_completion_delay_s=0.2) as server, \
            TranscriptCache(tmp_path / "cache.sqlite") as cache:
        batched = collect_transcripts_batch(seeds, BATCH, "k", server.base_url, quiet, cache=cache)
        stats = server.stats()
        assert stats["batches_created"] == 1 and stats["batch_lines_completed"] == 12
        assert "/v1/chat/completions" not in stats["requests_by_path"]
        chatted = collect_transcripts(seeds, BATCH.model_copy(update={"api": "chat"}), "k", server.base_url, quiet)
        # Chat mode finds every conversation in the cache batch mode filled.
        cached = collect_transcripts(seeds, BATCH.model_copy(update={"api": "chat"}), "k", server.base_url, quiet,
                                     cache=cache)
        assert cached.cached == 12 and cached.requests == 0
    frame = batched.transcripts
    assert sorted(frame["seed_id"]) == sorted(seeds["seed_id"]) and conversations(frame) == 12
    assert frame[COMPARED].equals(chatted.transcripts[COMPARED])
    assert batched.usage.as_metadata()["openai.calls"] == 12 and batched.resumed_batches == 0
    assert len(batched.batch_ids) == 1 and not batched.partial


def test_judgments_go_through_the_batch_api_the_same_as_through_chat(tmp_path):
    from baize_assets.core.collect.modes import REFERENCE_WRITER
    from baize_assets.core.evaluate.judge import judge_requests
    from baize_assets.core.feedback.judgments import read_pair_scores

    questions = ["How do volcanoes form?", "Why is the sky blue?", "How do I brew tea?"]
    requests = judge_requests(questions, ["Magma rises through the crust.", "Bananas.", "Steep leaves in hot water."],
                              ["Volcanoes form where magma reaches the surface.", "Light scatters.", "Boil water."])
    with SimulatedTeacher(batch_completion_delay_s=0.1) as server, \
            TranscriptCache(tmp_path / "cache.sqlite") as cache:
        batched = collect_transcripts_batch(requests, BATCH, "k", server.base_url, quiet, cache=cache,
                                            writer=REFERENCE_WRITER)
        assert server.stats()["batch_lines_completed"] == len(requests)
        chat = BATCH.model_copy(update={"api": "chat"})
        chatted = collect_transcripts(requests, chat, "k", server.base_url, quiet, writer=REFERENCE_WRITER)
        cached = collect_transcripts(requests, chat, "k", server.base_url, quiet, cache=cache, writer=REFERENCE_WRITER)
    assert cached.cached == len(requests) and cached.requests == 0
    frame = batched.transcripts
    assert conversations(frame) == len(requests) and (frame["generation_mode"] == "judge").all()
    assert frame[COMPARED].equals(chatted.transcripts[COMPARED])
    assert all(read_pair_scores(text).ok for text in frame["transcript"])


def test_a_turn_by_turn_writer_is_refused_by_batch_mode():
    from baize_assets.core.collect.modes import V15_WRITER

    with pytest.raises(ValueError, match="one request per row; mode 'v1.5' asks turn by turn"):
        collect_transcripts_batch(make_seeds(1), BATCH, "k", "http://127.0.0.1:9", quiet, writer=V15_WRITER)


def test_failed_lines_go_into_a_follow_up_batch_and_then_become_failure_rows():
    seeds = make_seeds(30)
    with SimulatedTeacher(batch_completion_delay_s=0.2, batch_failure_rate=0.3) as server:
        result = collect_transcripts_batch(seeds, BATCH, "k", server.base_url, quiet)
        follow_ups = server.stats()["batches_created"]
    assert conversations(result.transcripts) == 30 and follow_ups >= 2
    assert result.retries["server_error"] > 0 and len(result.batch_ids) == follow_ups

    with SimulatedTeacher(batch_completion_delay_s=0.2, batch_failure_rate=0.3) as server:
        once = collect_transcripts_batch(seeds, BATCH.model_copy(update={"max_retries": 0}), "k", server.base_url,
                                         quiet)
        assert server.stats()["batches_created"] == 1
    frame = once.transcripts
    assert sorted(frame["seed_id"]) == sorted(seeds["seed_id"])
    failed = frame[frame["failure_kind"].notna()]
    assert len(failed) == once.failures["server_error"] > 0
    assert failed["failure_message"].str.contains("after 1 batches").all()


def test_an_expired_batch_has_its_unfinished_seeds_resubmitted():
    seeds = make_seeds(10)
    with SimulatedTeacher(batch_completion_delay_s=0.2, batch_expire=1) as server:
        result = collect_transcripts_batch(seeds, BATCH, "k", server.base_url, quiet)
        stats = server.stats()
    assert conversations(result.transcripts) == 10 and len(result.transcripts) == 10
    assert stats["batches_created"] == 2 and stats["batch_lines_completed"] == 10  # half, then the other half
    assert result.retries["batch_expired"] == 5


def test_a_cancelled_batch_has_its_unfinished_seeds_resubmitted():
    seeds = make_seeds(10)
    submitted: list[str] = []

    def log(line: str) -> None:
        if "submitted" in line:
            submitted.append(line.split()[1].rstrip(":"))

    with SimulatedTeacher(batch_completion_delay_s=1.0) as server:
        results = []
        collector = threading.Thread(target=lambda: results.append(
            collect_transcripts_batch(seeds, BATCH, "k", server.base_url, log)))
        collector.start()
        deadline = time.monotonic() + 10
        while not submitted:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)
        client = openai.OpenAI(api_key="k", base_url=server.base_url, max_retries=0)
        assert client.batches.cancel(submitted[0]).status == "cancelling"
        collector.join(20)
        assert client.batches.retrieve(submitted[0]).status == "cancelled"
    (result,) = results
    assert conversations(result.transcripts) == 10 and len(submitted) == 2
    assert 0 < result.retries["batch_cancelled"] < 10


def test_missing_duplicated_and_unknown_custom_ids_are_counted_and_no_row_is_lost_or_doubled(tmp_path):
    seeds = make_seeds(10)
    with SimulatedTeacher(batch_completion_delay_s=0.2, batch_missing_ids=2, batch_duplicate_ids=3,
                          batch_unknown_ids=1) as server, TranscriptCache(tmp_path / "cache.sqlite") as cache:
        result = collect_transcripts_batch(seeds, BATCH, "k", server.base_url, quiet, cache=cache)
        assert server.stats()["batches_created"] == 2  # the missing two, again
        assert cache.count() == 10
    frame = result.transcripts
    assert sorted(frame["seed_id"]) == sorted(seeds["seed_id"]) and conversations(frame) == 10
    assert dict(result.line_problems) == {"missing_custom_ids": 2, "duplicated_custom_ids": 3,
                                          "unknown_custom_ids": 1}
    assert result.batch_metadata()["batch_line_problems"]["unparsable_lines"] == 0
    assert result.usage.as_metadata()["openai.calls"] == 10  # a repeated line is not paid twice


def test_a_collector_killed_while_waiting_resumes_the_same_batch_and_pays_once(tmp_path):
    seeds = make_seeds(8)
    seeds.to_parquet(tmp_path / "seeds.parquet")
    cache_path = tmp_path / "cache.sqlite"
    teacher = BATCH.model_copy(update={"prices": {DEFAULT_MODEL: ModelPrice(input_per_million=1,
                                                                             output_per_million=2)}})
    with SimulatedTeacher(batch_completion_delay_s=2.0) as server:
        collector = subprocess.Popen(
            [sys.executable, "-c", COLLECTOR, str(tmp_path / "seeds.parquet"), str(cache_path), server.base_url,
             teacher.model_dump_json()],
            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        first_line = collector.stdout.readline()
        assert "submitted 8 requests" in first_line, collector.stderr.read()
        batch_id = first_line.split()[1].rstrip(":")
        os.kill(collector.pid, signal.SIGKILL)
        collector.wait()
        collector.stdout.close()
        collector.stderr.close()
        jobs = BatchJobs(cache_path)
        assert list(jobs.uncollected(sorted(_keys(teacher, seeds)))) == [batch_id]
        jobs.close()

        with TranscriptCache(cache_path) as cache:
            resumed = collect_transcripts_batch(seeds, teacher, "sk-test", server.base_url, quiet, cache=cache)
            stats = server.stats()
            assert stats["batches_created"] == 1 and stats["batch_lines_completed"] == 8
            assert resumed.batch_ids == [batch_id] and resumed.resumed_batches == 1
            assert conversations(resumed.transcripts) == 8 and resumed.spent_dollars > 0

            requests_before = server.stats()["requests_total"]
            again = collect_transcripts_batch(seeds, teacher, "sk-test", server.base_url, quiet, cache=cache)
            assert server.stats()["requests_total"] == requests_before  # a finished shard makes no request
    assert again.cached == 8 and again.requests == 0 and again.batch_ids == []
    assert again.transcripts["cached"].all()


def _keys(teacher: TeacherConfig, seeds) -> set[str]:
    return {cache_key(seed, generation_inputs(teacher)) for seed in seeds["seed"]}


def test_the_budget_is_reserved_before_submission_and_rows_carry_batch_prices():
    seeds = make_seeds(10)
    worst_case = estimate_tokens([{"role": "user", "content": self_chat_prompt(seeds["seed"][0])}]) + 400
    price = ModelPrice(input_per_million=1.0, output_per_million=2.0)
    capped = BATCH.model_copy(update={"prices": {DEFAULT_MODEL: price},
                                      "budget": BudgetConfig(max_tokens=3 * worst_case + 5)})
    with SimulatedTeacher(batch_completion_delay_s=0.2) as server:
        result = collect_transcripts_batch(seeds, capped, "k", server.base_url, quiet)
        assert server.stats()["batch_lines_completed"] == 3  # only what fits was submitted
    frame = result.transcripts
    assert len(frame) == 10 and result.partial
    assert result.failures[BUDGET_EXHAUSTED] == 7 and "before submission" in frame["failure_message"].dropna().iloc[0]
    done = frame[frame["failure_kind"].isna()]
    half = (done["prompt_tokens"] * 0.5 + done["completion_tokens"] * 1.0) / 1e6  # half the synchronous price
    assert done["dollars"].tolist() == pytest.approx(half.tolist())
    assert result.spent_dollars == pytest.approx(half.sum()) and result.spent_tokens == done["total_tokens"].sum()

    own = BATCH.model_copy(update={"prices": {DEFAULT_MODEL: price}, "batch": BATCH.batch.model_copy(
        update={"prices": {DEFAULT_MODEL: ModelPrice(input_per_million=0.1, output_per_million=0.3)}})})
    with SimulatedTeacher(batch_completion_delay_s=0.2) as server:
        priced = collect_transcripts_batch(seeds.head(2), own, "k", server.base_url, quiet).transcripts
    assert priced["dollars"].tolist() == pytest.approx(
        ((priced["prompt_tokens"] * 0.1 + priced["completion_tokens"] * 0.3) / 1e6).tolist())


def test_batch_mode_is_v1_only_and_refuses_a_bad_key_after_one_request():
    with pytest.raises(ValueError, match="v1.5 asks turn by turn"):
        TeacherConfig(api="batch", mode="v1.5")
    with SimulatedTeacher(api_key="sk-right") as server:
        with pytest.raises(Exception, match="rejected the API key") as error:
            collect_transcripts_batch(make_seeds(3), BATCH, "sk-wrong-secret", server.base_url, quiet)
        assert server.stats()["requests_total"] == 1
    assert "sk-wrong-secret" not in str(error.value)


def test_a_dagster_materialization_of_a_transcripts_partition_in_batch_mode(tmp_path):
    config = fast_config()
    teacher = config.teacher.model_copy(update={"api": "batch", "batch": BatchConfig(poll_interval_s=0.05)})
    assets = build_assets(config.model_copy(update={"teacher": teacher}))
    resources = {"storage": BaizeStorage(output_dir=str(tmp_path / "output")),
                 "openai": OpenAIResource(api_key=EnvVar("OPENAI_API_KEY")),
                 "pipes_subprocess_client": subprocess_client()}
    (tmp_path / "instance").mkdir()
    with pytest.MonkeyPatch.context() as env, instance_for_test(temp_dir=str(tmp_path / "instance")) as instance, \
            SimulatedTeacher(batch_completion_delay_s=0.2) as server:
        env.setenv("OPENAI_BASE_URL", server.base_url)
        env.setenv("OPENAI_API_KEY", "sk-test")
        assert materialize(assets, selection=[seed_key("quora")], instance=instance, resources=resources).success

        def transcripts() -> dict:
            run = materialize(assets, selection=[transcripts_key("quora")], partition_key="0", instance=instance,
                              resources=resources)
            (event,) = [e for e in run.all_events if e.event_type == DagsterEventType.ASSET_MATERIALIZATION]
            return {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}

        first = transcripts()
        assert server.stats()["batches_created"] == 1
        requests = server.stats()["requests_total"]
        again = transcripts()
        assert server.stats()["requests_total"] == requests  # a finished partition makes no request
    assert first["teacher_api"] == "batch" and first["batch_ids"].startswith("batch_")
    assert first["conversations"] == first["dagster/row_count"] > 0 and first["failed_requests"] == 0
    assert first["batch_line_problems"] == {"missing_custom_ids": 0, "duplicated_custom_ids": 0,
                                            "unknown_custom_ids": 0, "unparsable_lines": 0}
    assert again["cached_answers"] == again["dagster/row_count"] and again["api_requests"] == 0
    frame = pd.read_parquet(Layout(tmp_path / "output").transcripts("quora", 0))
    assert frame["failure_kind"].isna().all() and len(frame) == first["dagster/row_count"]


def test_a_recorded_batch_the_endpoint_no_longer_has_is_submitted_again(tmp_path):
    seeds = make_seeds(4)
    lines: list[str] = []
    with TranscriptCache(tmp_path / "cache.sqlite") as cache, SimulatedTeacher(batch_completion_delay_s=0.1) as server:
        jobs = BatchJobs(cache.path)
        jobs.record("batch_from_another_endpoint", "file-gone", sorted(_keys(BATCH, seeds)))
        jobs.close()
        result = collect_transcripts_batch(seeds, BATCH, "k", server.base_url, lines.append, cache=cache)
        assert server.stats()["batches_created"] == 1
    assert conversations(result.transcripts) == 4 and result.resumed_batches == 1
    assert any("not found at the endpoint" in line for line in lines)
