"""A killed collector resumes where it stopped; Dagster runs report partial budgets and never record the key."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from dagster import DagsterEventType, EnvVar, instance_for_test, materialize
from dagster_openai import OpenAIResource

from baize_assets.assets import build_assets, seed_key, transcripts_key
from baize_assets.core.collect.cache import TranscriptCache
from baize_assets.core.collect.collector import collect_transcripts
from baize_assets.core.collect.errors import BUDGET_EXHAUSTED
from baize_assets.core.config.pipeline import BudgetConfig, TeacherConfig
from baize_assets.core.storage import Layout
from baize_assets.pipes_messages import subprocess_client
from baize_assets.resources import BaizeStorage
from baize_assets.teacher.server import SimulatedTeacher

from .collection_support import make_seeds
from .conftest import fast_config
from .ops_support import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CHAT = "/v1/chat/completions"
FAST_RETRIES = {"retry_base_s": 0.02, "retry_max_s": 0.2}


def chat_requests(server: SimulatedTeacher) -> int:
    return server.stats()["requests_by_path"].get(CHAT, 0)


def test_run_killed_half_way_reruns_only_the_seeds_not_done(tmp_path):
    total, in_flight = 200, 4
    seeds = make_seeds(total)
    seeds.to_parquet(tmp_path / "seeds.parquet")
    cache_path = tmp_path / "cache.sqlite"
    config = TeacherConfig(max_concurrency=in_flight)
    with SimulatedTeacher(latency_s=0.03) as server:
        collector = subprocess.Popen(
            [sys.executable, "-m", "baize_assets_tests.collection_support", str(tmp_path / "seeds.parquet"),
             str(cache_path), server.base_url, config.model_dump_json()],
            cwd=PROJECT_ROOT, env={**os.environ, "OPENAI_API_KEY": "sk-test"},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while chat_requests(server) < total // 2:
            assert collector.poll() is None, collector.stderr.read().decode()
            assert time.monotonic() < deadline, "the collector made too few requests"
            time.sleep(0.005)
        os.kill(collector.pid, signal.SIGKILL)
        collector.wait()
        collector.stderr.close()
        sent_before_kill = chat_requests(server)

        with TranscriptCache(cache_path) as cache:
            done = cache.count()
            assert sent_before_kill - in_flight <= done < total
            before = chat_requests(server)
            result = collect_transcripts(seeds, config, "sk-test", server.base_url, lambda _: None, cache=cache)
            rerun_calls = chat_requests(server) - before
    assert rerun_calls == total - done
    assert total - sent_before_kill <= rerun_calls <= total - sent_before_kill + in_flight
    assert result.cached == done
    frame = result.transcripts
    assert sorted(frame["seed_id"]) == sorted(seeds["seed_id"]) and frame["failure_kind"].isna().all()


def _metadata(instance, run_id) -> dict:
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    (record,) = [r for r in records if r.event_log_entry.dagster_event.asset_key == transcripts_key("quora")]
    materialization = record.event_log_entry.dagster_event.step_materialization_data.materialization
    return {k: v.value for k, v in materialization.metadata.items()}


def test_dagster_runs_report_budget_and_reruns_and_never_record_the_key(tmp_path, capfd):
    right_key, wrong_key = f"sk-canary-{uuid.uuid4().hex}", f"sk-wrong-canary-{uuid.uuid4().hex}"
    url_password = f"pw-canary-{uuid.uuid4().hex}"
    config = fast_config()
    output, instance_dir = tmp_path / "output", tmp_path / "instance"
    instance_dir.mkdir()
    resources = {
        "storage": BaizeStorage(output_dir=str(output)),
        "openai": OpenAIResource(api_key=EnvVar("OPENAI_API_KEY")),
        "pipes_subprocess_client": subprocess_client(),
    }

    def assets_with(teacher: TeacherConfig):
        return build_assets(config.model_copy(update={"teacher": teacher}))

    capped = config.teacher.model_copy(update={"max_concurrency": 1, "budget": BudgetConfig(max_tokens=3000)})
    with pytest.MonkeyPatch.context() as env, instance_for_test(temp_dir=str(instance_dir)) as instance, \
            SimulatedTeacher(api_key=right_key) as server:
        env.setenv("OPENAI_BASE_URL", server.base_url)
        env.setenv("OPENAI_API_KEY", right_key)
        assert materialize(assets_with(config.teacher), selection=[seed_key("quora")], instance=instance,
                           resources=resources).success

        def transcripts(teacher: TeacherConfig, regenerate: bool = False):
            # regenerate is run config of the transcripts step, as a user sets it in the launchpad.
            run_config = {"ops": {"quora__transcripts": {"config": {"regenerate": regenerate}}}}
            return materialize(assets_with(teacher), selection=[transcripts_key("quora")], partition_key="0",
                               instance=instance, resources=resources, raise_on_error=False, run_config=run_config)

        partial = transcripts(capped)
        assert partial.success
        meta = _metadata(instance, partial.run_id)
        assert meta["partial"] is True and 0 < meta["run_tokens"] <= 3000
        assert meta["failures_by_kind"][BUDGET_EXHAUSTED] == meta["dagster/row_count"] - meta["conversations"] > 0

        finished = transcripts(config.teacher)
        meta = _metadata(instance, finished.run_id)
        assert meta["partial"] is False and meta["failed_requests"] == 0
        assert meta["cached_answers"] > 0
        assert meta["openai.calls"] == meta["dagster/row_count"] - meta["cached_answers"]

        before = chat_requests(server)
        again = _metadata(instance, transcripts(config.teacher).run_id)
        assert chat_requests(server) == before and again["openai.calls"] == 0  # a finished partition is free

        env.setenv("OPENAI_API_KEY", wrong_key)
        refused = transcripts(config.teacher, regenerate=True)
        assert not refused.success
        (failure,) = [e for e in refused.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
        assert "rejected the API key" in failure.step_failure_data.error.to_string()

        # Credentials in the endpoint's URL are secrets too: a typo'd port must not print them.
        env.setenv("OPENAI_API_KEY", right_key)
        env.setenv("OPENAI_BASE_URL", f"http://baize:{url_password}@127.0.0.1:{free_port()}/v1")
        unreachable = transcripts(config.teacher.model_copy(update=FAST_RETRIES), regenerate=True)
        assert not unreachable.success
        (failure,) = [e for e in unreachable.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
        message = failure.step_failure_data.error.message
        assert "cannot reach the teacher endpoint http://baize:[redacted]@127.0.0.1" in message
        logs = "\n".join(
            str(entry) for run in (refused, partial, unreachable) for entry in instance.all_logs(run.run_id)
        )

    assert any(instance_dir.rglob("*.db")), "the instance's storage was not where the test searches"
    captured = capfd.readouterr()
    for key in (right_key, wrong_key, url_password):
        assert key not in captured.out and key not in captured.err and key not in logs
        for directory in (output, instance_dir):
            for path in directory.rglob("*"):
                if path.is_file():
                    assert key.encode() not in path.read_bytes(), f"the API key leaked into {path}"
    assert any(Layout(output).transcript_cache("quora").parent.glob("transcript_cache.sqlite*"))
