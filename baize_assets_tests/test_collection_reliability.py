"""Self-chat collection against the simulated teacher over real HTTP: faults, cache, budget, modes."""

import asyncio
import time

import pytest

from baize_assets.core.collect.cache import TranscriptCache
from baize_assets.core.collect.collector import collect_transcripts
from baize_assets.core.collect.errors import (
    BUDGET_EXHAUSTED,
    MAX_RESET_PAUSE_S,
    TeacherFatalError,
    parse_reset,
    parse_retry_after,
)
from baize_assets.core.collect.limiter import RateLimiter
from baize_assets.core.collect.shared_limits import MemoryLimitStore
from baize_assets.core.collect.transcript import guard_transcript
from baize_assets.core.config.pipeline import (
    BudgetConfig,
    CorpusConfig,
    ModelPrice,
    RateLimitConfig,
    TeacherConfig,
)
from baize_assets.core.corpus.build import build_corpus
from baize_assets.core.corpus.parse import parse_transcript
from baize_assets.core.prompts import SELF_CHAT_TURN_PROMPT_VERSION
from baize_assets.teacher.server import DEFAULT_FAULT_KINDS, SimulatedTeacher

from .collection_support import make_seeds

CHAT = "/v1/chat/completions"
FAST_RETRIES = {"retry_base_s": 0.02, "retry_max_s": 0.2}


def chat_requests(server: SimulatedTeacher) -> int:
    return server.stats()["requests_by_path"].get(CHAT, 0)


def test_with_a_fifth_of_requests_faulted_every_seed_ends_once_as_conversation_or_recorded_failure():
    seeds = make_seeds(120)
    teacher = TeacherConfig(max_concurrency=16, timeout_s=0.5, max_retries=6, **FAST_RETRIES)
    with SimulatedTeacher(fault_rate=0.2, fault_seed=7, retry_after_s=0.05, hang_s=2.0) as server:
        result = collect_transcripts(seeds, teacher, api_key="k", base_url=server.base_url, log=lambda _: None)
        outcomes = server.stats()["requests_by_outcome"]
    frame = result.transcripts
    assert sorted(frame["seed_id"]) == sorted(seeds["seed_id"])  # none lost, none duplicated
    assert set(DEFAULT_FAULT_KINDS) <= set(outcomes)  # every fault kind really happened
    conversations = frame[frame["failure_kind"].isna()]
    failures = frame[frame["failure_kind"].notna()]
    assert all(parse_transcript(t).reason is None for t in conversations["transcript"])
    assert failures["failure_message"].str.len().gt(0).all()
    assert len(conversations) >= 0.95 * len(seeds)
    assert {"rate_limited", "server_error", "timeout", "wrong_format"} <= set(result.retries)
    # Every answered call is accounted for (a timed-out request may never reach the server).
    assert result.usage.as_metadata()["openai.calls"] == outcomes["ok"] + outcomes["malformed"]
    assert result.requests >= sum(outcomes.values())


def test_rerun_asks_only_for_missing_conversations_and_regenerate_asks_again(tmp_path, teacher):
    seeds = make_seeds(30)
    teacher_config = TeacherConfig(max_concurrency=8)
    with TranscriptCache(tmp_path / "cache.sqlite") as cache:
        first = collect_transcripts(seeds.head(20), teacher_config, "k", teacher.base_url, lambda _: None, cache=cache)
        assert first.requests == 20 and first.cached == 0

        before = chat_requests(teacher)
        again = collect_transcripts(seeds.head(20), teacher_config, "k", teacher.base_url, lambda _: None, cache=cache)
        assert chat_requests(teacher) == before  # a finished partition costs nothing
        assert again.cached == 20 and again.usage.as_metadata()["openai.calls"] == 0
        columns = ["seed_id", "transcript", "total_tokens"]
        assert again.transcripts[columns].equals(first.transcripts[columns])
        assert again.transcripts["cached"].all()

        grown = collect_transcripts(seeds, teacher_config, "k", teacher.base_url, lambda _: None, cache=cache)
        assert grown.requests == 10 and grown.cached == 20  # only the new seeds

        changed = teacher_config.model_copy(update={"temperature": 0.7})
        hotter = collect_transcripts(seeds.head(5), changed, "k", teacher.base_url, lambda _: None, cache=cache)
        assert hotter.requests == 5 and hotter.cached == 0  # other sampling parameters, other conversations

    # A run that regenerates reads nothing back and writes anew; its rows are the cache's from then on.
    with TranscriptCache(tmp_path / "cache.sqlite", reuse=False) as regenerating:
        redone = collect_transcripts(seeds.head(5), teacher_config, "k", teacher.base_url, lambda _: None,
                                     cache=regenerating)
        assert redone.requests == 5 and redone.cached == 0
    with TranscriptCache(tmp_path / "cache.sqlite") as cache:
        after = collect_transcripts(seeds.head(5), teacher_config, "k", teacher.base_url, lambda _: None, cache=cache)
        assert after.requests == 0 and after.cached == 5


def test_wrong_key_fails_fast_after_one_request_even_with_many_workers():
    with SimulatedTeacher(api_key="sk-right", latency_s=0.05) as server:
        started = time.monotonic()
        with pytest.raises(TeacherFatalError, match="rejected the API key") as error:
            collect_transcripts(make_seeds(50), TeacherConfig(max_concurrency=32), "sk-wrong-secret", server.base_url,
                                lambda _: None)
        assert time.monotonic() - started < 5
        assert chat_requests(server) == 1
    assert "sk-wrong-secret" not in str(error.value)


def test_budget_stops_cleanly_and_a_rerun_with_more_budget_finishes(tmp_path, teacher):
    seeds = make_seeds(40)
    price = ModelPrice(input_per_million=0.5, output_per_million=1.5)
    capped = TeacherConfig(max_concurrency=4, max_tokens=400, prices={"baize-simulated-teacher": price},
                           budget=BudgetConfig(max_tokens=8000))
    with TranscriptCache(tmp_path / "cache.sqlite") as cache:
        partial = collect_transcripts(seeds, capped, "k", teacher.base_url, lambda _: None, cache=cache)
        frame = partial.transcripts
        assert partial.partial and 0 < partial.spent_tokens <= 8000
        assert frame["failure_kind"].isin([BUDGET_EXHAUSTED]).sum() == partial.failures[BUDGET_EXHAUSTED] > 0
        done = frame[frame["failure_kind"].isna()]
        assert partial.spent_tokens == done["total_tokens"].sum()
        assert partial.spent_dollars == pytest.approx(
            (done["prompt_tokens"].sum() * 0.5 + done["completion_tokens"].sum() * 1.5) / 1e6
        )
        assert done["dollars"].sum() == pytest.approx(partial.spent_dollars)
        assert "budget" in frame.loc[frame["failure_kind"] == BUDGET_EXHAUSTED, "failure_message"].iloc[0]

        roomy = capped.model_copy(update={"budget": BudgetConfig(max_dollars=1.0)})
        rest = collect_transcripts(seeds, roomy, "k", teacher.base_url, lambda _: None, cache=cache)
        assert not rest.partial and rest.transcripts["failure_kind"].isna().all()
        assert rest.cached == len(done) and rest.requests == len(seeds) - len(done)


def test_dollar_budget_needs_a_price():
    with pytest.raises(ValueError, match="needs a price"):
        TeacherConfig(budget=BudgetConfig(max_dollars=5))


def test_turn_by_turn_mode_builds_the_dialogue_call_by_call(teacher):
    seeds = make_seeds(6)
    result = collect_transcripts(seeds, TeacherConfig(mode="v1.5"), "k", teacher.base_url, lambda _: None)
    frame = result.transcripts
    assert frame["failure_kind"].isna().all()
    assert (frame["prompt_version"] == SELF_CHAT_TURN_PROMPT_VERSION).all()
    assert (frame["ended_by"] == "human_done").all()  # the simulated human runs out of questions
    exchanges = [len(parse_transcript(t).turns) // 2 for t in frame["transcript"]]
    assert all(2 <= n <= 4 for n in exchanges)
    # One human-turn and one AI-turn call per exchange, plus the human turn that ended it.
    assert frame["api_calls"].tolist() == [2 * n + 1 for n in exchanges]
    assert result.requests == frame["api_calls"].sum()
    assert len(build_corpus(frame, CorpusConfig()).conversations) == len(seeds)

    capped = collect_transcripts(seeds, TeacherConfig(mode="v1.5", max_rounds=1), "k", teacher.base_url,
                                 lambda _: None)
    assert (capped.transcripts["ended_by"] == "max_turns").all()
    assert (capped.transcripts["api_calls"] == 2).all()


def test_v1_transcripts_are_cut_at_loops_and_turn_caps():
    looping = "[Human] Why?\n[AI] Because.\n[Human] Why?\n[AI] Because."
    assert guard_transcript(looping, 8) == ("[Human] Why?\n[AI] Because.", "repeated_turn")
    long = "\n".join(f"[Human] q{n}\n[AI] a{n}" for n in range(5))
    cut, why = guard_transcript(long, 2)
    assert why == "max_turns" and cut == "[Human] q0\n[AI] a0\n[Human] q1\n[AI] a1"
    assert guard_transcript("[Human] q\n[AI] a", 2) == ("[Human] q\n[AI] a", None)


def test_rate_limit_headers_and_retry_after_are_read():
    assert parse_reset("6m0s") == 360 and parse_reset("20ms") == pytest.approx(0.02) and parse_reset("1.5s") == 1.5
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25 and parse_retry_after({"retry-after": "2"}) == 2


def test_limiter_spaces_requests_at_the_configured_rate():
    async def run() -> list[float]:
        limiter = RateLimiter(RateLimitConfig(requests_per_minute=1200), MemoryLimitStore(), "k")  # one every 50 ms
        starts: list[float] = []

        async def one() -> None:
            await limiter.acquire(10)
            starts.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(21)))
        return starts

    starts = asyncio.run(run())
    assert starts[-1] - starts[0] >= 20 * 0.05 * 0.98  # never faster than the limit


def test_endpoint_limit_from_headers_keeps_429s_rare():
    # The server allows 10 requests per 0.5 s window and says so in its headers; the client
    # has no limit of its own and must slow down on them.
    seeds = make_seeds(40)
    with SimulatedTeacher(requests_per_window=10, rate_window_s=0.5) as server:
        result = collect_transcripts(seeds, TeacherConfig(max_concurrency=4, **FAST_RETRIES), "k", server.base_url,
                                     lambda _: None)
        refused = server.stats()["requests_by_outcome"].get("rate_limited_by_limit", 0)
    assert result.transcripts["failure_kind"].isna().all()
    assert refused <= 2, refused


def test_a_hostile_reset_header_pauses_at_most_the_cap():
    store = MemoryLimitStore(clock=lambda: 0.0)
    limiter = RateLimiter(RateLimitConfig(), store, "k")
    limiter.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "99999h"})
    assert store.pause_left("k") == MAX_RESET_PAUSE_S
    limiter.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "inf"})
    limiter.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "-5"})
    assert store.pause_left("k") == MAX_RESET_PAUSE_S


def test_a_low_remaining_quota_pauses_for_the_shortfall_when_paced_and_the_whole_reset_when_not():
    headers = {"x-ratelimit-limit-requests": "120", "x-ratelimit-remaining-requests": "1",
               "x-ratelimit-reset-requests": "10s"}
    paced, unpaced, enough = (MemoryLimitStore(clock=lambda: 0.0) for _ in range(3))
    RateLimiter(RateLimitConfig(requests_per_minute=720), paced, "k").observe(headers, in_flight=2)
    assert paced.pause_left("k") == pytest.approx(10 * 2 / 119)  # 2 short: 2 of the 119 used come back
    RateLimiter(RateLimitConfig(), unpaced, "k").observe(headers, in_flight=2)
    assert unpaced.pause_left("k") == 10  # unpaced requests may have used the quota in one burst
    RateLimiter(RateLimitConfig(requests_per_minute=720), enough, "k").observe(headers, in_flight=0)
    assert enough.pause_left("k") == 0
