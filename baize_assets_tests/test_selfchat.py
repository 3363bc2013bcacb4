import time

import pandas as pd
import pytest

from baize_assets.core.collect.collector import collect_transcripts
from baize_assets.core.collect.errors import TeacherFatalError
from baize_assets.core.config.pipeline import CorpusConfig, TeacherConfig
from baize_assets.core.corpus.build import build_corpus
from baize_assets.core.prompts import SELF_CHAT_PROMPT_VERSION
from baize_assets.core.storage import seed_id
from baize_assets.teacher.server import SimulatedTeacher

SEEDS = pd.DataFrame(
    [
        {"seed_id": seed_id(text), "seed": text, "source": "quora", "shard": 1}
        for text in ["How do tides work?", "What makes bread rise?", "Why do cats purr?", "How is glass made?"]
    ]
)


def test_one_transcript_per_seed_over_real_http(teacher):
    before = teacher.stats()["requests_total"]
    result = collect_transcripts(SEEDS, TeacherConfig(), api_key="sk-test", base_url=teacher.base_url)
    frame = result.transcripts
    assert sorted(frame["seed_id"]) == sorted(SEEDS["seed_id"])
    assert teacher.stats()["requests_total"] - before == len(SEEDS)
    assert frame["failure_kind"].isna().all()
    assert (frame["prompt_version"] == SELF_CHAT_PROMPT_VERSION).all()
    assert (frame["model"] == "baize-simulated-teacher").all()
    assert (frame["finish_reason"] == "stop").all()
    assert (frame["total_tokens"] == frame["prompt_tokens"] + frame["completion_tokens"]).all()
    assert all("[Human]" in t and "[AI]" in t for t in frame["transcript"])
    metadata = result.usage.as_metadata()
    assert metadata["openai.calls"] == len(SEEDS)
    assert metadata["openai.total_tokens"] == int(frame["total_tokens"].sum()) > 0
    assert metadata["openai.baize-simulated-teacher.calls"] == len(SEEDS)
    assert len(build_corpus(frame, CorpusConfig()).conversations) == len(SEEDS)


def test_a_seed_that_keeps_failing_is_recorded_not_lost():
    with SimulatedTeacher(fault_rate=1.0, fault_kinds=["server_error"]) as server:
        result = collect_transcripts(SEEDS.head(2), TeacherConfig(max_retries=0), api_key="k", base_url=server.base_url)
    assert result.transcripts["failure_kind"].tolist() == ["server_error", "server_error"]
    assert result.failures == {"server_error": 2}
    assert result.transcripts["transcript"].isna().all()


def test_wrong_api_key_stops_the_run_at_once_without_leaking_the_key():
    with SimulatedTeacher(api_key="sk-right") as server:
        started = time.monotonic()
        with pytest.raises(TeacherFatalError, match="rejected the API key") as error:
            collect_transcripts(
                SEEDS, TeacherConfig(max_concurrency=1), api_key="sk-wrong-secret", base_url=server.base_url
            )
        assert time.monotonic() - started < 5
        assert server.stats()["requests_total"] == 1
    assert "sk-wrong-secret" not in str(error.value)


def test_unknown_model_is_a_clear_fatal_error(teacher):
    with pytest.raises(TeacherFatalError, match="no model 'gpt-nope'"):
        collect_transcripts(
            SEEDS, TeacherConfig(model="gpt-nope", max_concurrency=1), api_key="k", base_url=teacher.base_url
        )
