"""Batches within the provider's limits, over real HTTP against the simulated teacher.

The teacher enforces the per-batch limits (requests, bytes) and a per-model enqueued-token
limit the way OpenAI answers them: the batch is created, then fails validation with the
reason in ``errors``. The collector cuts a shard into batches within the same limits,
resumes each recorded batch after a kill, and sends failed lines of one batch again in
follow-ups.
"""

import json
import os
import signal
import subprocess
import sys
import time

import openai
import pytest

from baize_assets.core.collect.batch import collect_transcripts_batch
from baize_assets.core.collect.batch_jobs import BatchJobs
from baize_assets.core.collect.batch_plan import REQUEST_TOO_LARGE
from baize_assets.core.collect.cache import TranscriptCache
from baize_assets.core.collect.errors import TeacherFatalError
from baize_assets.core.config.pipeline import BatchConfig, TeacherConfig
from baize_assets.core.prompts import self_chat_prompt
from baize_assets.teacher.batches import BatchLimits
from baize_assets.teacher.server import DEFAULT_MODEL, SimulatedTeacher

from .collection_support import make_seeds
from .test_batch_mode import COLLECTOR, PROJECT_ROOT, _keys, conversations, quiet

# The self-chat prompt of make_seeds' questions: 161-162 prompt tokens by the collector's
# estimate (144 by the teacher's count), 893-898 bytes a batch line.
TOKENS_PER_REQUEST = 162
LINE_BYTES = 900


def teacher(**batch) -> TeacherConfig:
    return TeacherConfig(api="batch", max_tokens=400, batch=BatchConfig(poll_interval_s=0.05, **batch))


def request_file(seeds: list[str], model: str = DEFAULT_MODEL) -> bytes:
    lines = [{"custom_id": f"r{n}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": model, "messages": [{"role": "user", "content": self_chat_prompt(seed)}]}}
             for n, seed in enumerate(seeds)]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def create_batch(client: openai.OpenAI, data: bytes):
    upload = client.files.create(file=("requests.jsonl", data), purpose="batch")
    return client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")


def wait_until_ended(client: openai.OpenAI, batch_id: str):
    deadline = time.monotonic() + 20
    while (batch := client.batches.retrieve(batch_id)).status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.02)
    return batch


def test_the_simulated_teacher_fails_batches_over_its_limits_the_way_openai_does():
    seeds = list(make_seeds(3)["seed"])
    one = request_file(seeds[:1])
    max_bytes = 3 * len(one) + 100
    limits = BatchLimits(max_requests=2, max_file_bytes=max_bytes, enqueued_tokens=2 * 144)
    with SimulatedTeacher(batch_completion_delay_s=0.3, batch_limits=limits) as server:
        client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)
        too_many = create_batch(client, request_file(seeds))
        assert too_many.status == "failed" and too_many.request_counts.total == 0
        (error,) = too_many.errors.data
        assert error.code == "too_many_tasks" and "3 requests, more than the 2 maximum" in error.message

        too_large = create_batch(client, request_file([seeds[0] + " and more" * 400]))
        (error,) = too_large.errors.data
        assert error.code == "file_too_large"
        assert error.message.startswith(f"The batch input file is larger than the {max_bytes} maximum for the "
                                        f"{DEFAULT_MODEL} model")

        holding = create_batch(client, request_file(seeds[:2]))  # 288 tokens: the whole queue
        assert holding.status != "failed"
        queued_out = create_batch(client, one)
        (error,) = queued_out.errors.data
        assert error.code == "token_limit_exceeded" and "Limit: 288 enqueued tokens" in error.message
        assert wait_until_ended(client, holding.id).status == "completed"
        assert server.batches.enqueued_tokens(DEFAULT_MODEL) == 0
        assert create_batch(client, one).status != "failed"  # the queue is free again
        stats = server.stats()
    assert stats["batches_failed_by_code"] == {"too_many_tasks": 1, "file_too_large": 1, "token_limit_exceeded": 1}


@pytest.mark.parametrize(
    ("settings", "limits", "least_batches"),
    [
        ({"max_requests_per_batch": 3}, BatchLimits(max_requests=3), 4),
        ({"max_bytes_per_batch": 2 * LINE_BYTES}, BatchLimits(max_file_bytes=2 * LINE_BYTES), 5),
        # Room for two requests in flight at a time: the batches wait for each other.
        ({"max_enqueued_tokens": 2 * TOKENS_PER_REQUEST + 10}, BatchLimits(enqueued_tokens=2 * TOKENS_PER_REQUEST), 5),
    ],
    ids=["requests", "bytes", "enqueued-tokens"],
)
def test_a_shard_goes_out_in_batches_within_each_limit_and_comes_back_whole(settings, limits, least_batches):
    seeds = make_seeds(10)
    with SimulatedTeacher(batch_completion_delay_s=0.1, batch_limits=limits) as server:
        result = collect_transcripts_batch(seeds, teacher(**settings), "sk-test", server.base_url, quiet)
        stats = server.stats()
    assert stats["batches_failed_by_code"] == {}  # every batch within the teacher's limits
    assert stats["batches_created"] == len(result.batch_ids) >= least_batches
    assert stats["batch_lines_completed"] == 10 and conversations(result.transcripts) == 10
    assert sorted(result.transcripts["seed_id"]) == sorted(seeds["seed_id"])


@pytest.mark.parametrize(
    ("settings", "named"),
    [({"max_bytes_per_batch": 300}, "teacher.batch.max_bytes_per_batch: 300"),
     ({"max_enqueued_tokens_by_model": {DEFAULT_MODEL: 100}},
      f"teacher.batch.max_enqueued_tokens_by_model.{DEFAULT_MODEL}: 100")],
    ids=["bytes", "tokens"],
)
def test_a_request_no_batch_can_hold_fails_before_any_request_naming_the_setting(settings, named):
    with SimulatedTeacher() as server:
        result = collect_transcripts_batch(make_seeds(3), teacher(**settings), "sk-test", server.base_url, quiet)
        assert server.stats()["requests_total"] == 0
    frame = result.transcripts
    assert (frame["failure_kind"] == REQUEST_TOO_LARGE).all() and len(frame) == 3
    assert frame["failure_message"].str.contains(named, regex=False).all()


def test_a_limit_above_the_providers_stops_the_run_naming_it_and_the_rerun_with_it_lowered_collects(tmp_path):
    seeds = make_seeds(7)
    with SimulatedTeacher(batch_completion_delay_s=0.1, batch_limits=BatchLimits(max_requests=3)) as server, \
            TranscriptCache(tmp_path / "cache.sqlite") as cache:
        with pytest.raises(TeacherFatalError, match=r"too_many_tasks: The batch input file contains 7 requests.*"
                                                    r"lower teacher\.batch\.max_requests_per_batch \(now 50,000\)"):
            collect_transcripts_batch(seeds, teacher(), "sk-test", server.base_url, quiet, cache=cache)
        jobs = BatchJobs(cache.path)
        assert jobs.uncollected(sorted(_keys(teacher(), seeds))) == {}  # the failed batch is not waited on again
        jobs.close()
        result = collect_transcripts_batch(seeds, teacher(max_requests_per_batch=3), "sk-test", server.base_url, quiet,
                                           cache=cache)
        assert server.stats()["batches_created"] == 1 + 3
    assert conversations(result.transcripts) == 7 and result.resumed_batches == 0


def test_a_queue_held_by_batches_outside_the_step_is_waited_out():
    seeds = make_seeds(2)
    with SimulatedTeacher(batch_completion_delay_s=0.3, batch_limits=BatchLimits(enqueued_tokens=300)) as server:
        client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)
        other = create_batch(client, request_file(list(make_seeds(2, start=50)["seed"])))  # 288 of the 300
        lines: list[str] = []
        result = collect_transcripts_batch(seeds, teacher(), "sk-test", server.base_url, lines.append)
        assert client.batches.retrieve(other.id).status == "completed"
        stats = server.stats()
    assert stats["batches_failed_by_code"]["token_limit_exceeded"] >= 1
    assert result.retries["batch_token_limit_exceeded"] >= 2 and conversations(result.transcripts) == 2
    assert stats["batch_lines_completed"] == 2 + 2


def test_failed_lines_of_one_batch_go_into_follow_ups_and_no_seed_is_answered_twice():
    seeds = make_seeds(24)
    # Which lines fail depends on the batch each lands in, which depends on timing: with the
    # default 5 retries a seed fails all 6 tries in 1.7% of runs, with 10 in 0.004%.
    settings = teacher(max_requests_per_batch=5).model_copy(update={"max_retries": 10})
    with SimulatedTeacher(batch_completion_delay_s=0.1, batch_failure_rate=0.3,
                          batch_limits=BatchLimits(max_requests=5)) as server:
        result = collect_transcripts_batch(seeds, settings, "sk-test", server.base_url, quiet)
        stats = server.stats()
    assert conversations(result.transcripts) == 24 and result.retries["server_error"] > 0
    assert stats["batches_created"] > 5 and stats["batches_failed_by_code"] == {}
    assert stats["batch_lines_completed"] == 24  # a seed answered once, whichever batch answered it


@pytest.mark.slow
def test_a_collector_killed_between_batches_resumes_each_recorded_one_and_sends_the_rest(tmp_path):
    seeds = make_seeds(9)
    seeds.to_parquet(tmp_path / "seeds.parquet")
    cache_path = tmp_path / "cache.sqlite"
    # Three batches of three, one in flight at a time (the enqueued-token limit holds three requests).
    settings = teacher(max_requests_per_batch=3, max_enqueued_tokens=3 * TOKENS_PER_REQUEST + 10)
    with SimulatedTeacher(batch_completion_delay_s=1.5, batch_limits=BatchLimits(max_requests=3)) as server:
        collector = subprocess.Popen(
            [sys.executable, "-c", COLLECTOR, str(tmp_path / "seeds.parquet"), str(cache_path), server.base_url,
             settings.model_dump_json()],
            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        submitted = []
        while len(submitted) < 2:  # the first batch, collected, then the second submitted
            line = collector.stdout.readline()
            assert line, collector.stderr.read()
            if "submitted 3 requests" in line:
                submitted.append(line.split()[1].rstrip(":"))
        os.kill(collector.pid, signal.SIGKILL)
        collector.wait()
        collector.stdout.close()
        collector.stderr.close()

        with TranscriptCache(cache_path) as cache:
            assert cache.count() == 3
            resumed = collect_transcripts_batch(seeds, settings, "sk-test", server.base_url, quiet, cache=cache)
            stats = server.stats()
    assert resumed.resumed_batches == 1 and resumed.batch_ids[0] == submitted[1] and len(resumed.batch_ids) == 2
    assert stats["batches_created"] == 3 and stats["batch_lines_completed"] == 9  # every seed paid once
    assert conversations(resumed.transcripts) == 9 and resumed.cached == 3


@pytest.mark.slow
def test_the_teacher_command_enforces_the_batch_limits_it_is_given_and_refuses_a_bad_one():
    command = [sys.executable, "-m", "baize_assets.teacher", "--port", "0", "--batch-delay-s", "0.1",
               "--batch-max-requests", "2", "--batch-max-bytes", "100000", "--batch-enqueued-tokens", "200"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        base_url = process.stdout.readline().strip()
        client = openai.OpenAI(api_key="sk-test", base_url=base_url, max_retries=0, timeout=5)
        seeds = list(make_seeds(3)["seed"])
        assert [e.code for e in create_batch(client, request_file(seeds)).errors.data] == ["too_many_tasks"]
        assert [e.code for e in create_batch(client, request_file(seeds[:2])).errors.data] == ["token_limit_exceeded"]
        assert wait_until_ended(client, create_batch(client, request_file(seeds[:1])).id).status == "completed"
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    refused = subprocess.run([*command[:3], "--batch-max-requests", "0"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "batch limit max_requests must be at least 1, got 0" in refused.stderr
