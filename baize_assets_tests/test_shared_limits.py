"""One rate limit and one budget per endpoint and key, shared by real processes.

The stores are tested across processes that start together; the Dagster test runs the
project's definitions as several ``dagster`` processes at once against a simulated
teacher that enforces a per-key request limit (test_ops_celery.py does the same with two
dagster-celery workers and the Redis store).
"""

import os
import textwrap
import time
import uuid
from contextlib import ExitStack

import pandas as pd
import pytest

from baize_assets.assets import seed_key, transcripts_key
from baize_assets.core.collect.collector import collect_transcripts
from baize_assets.core.collect.shared_limits import LimitStoreError, SqliteLimitStore, limit_key
from baize_assets.core.collect.stores import open_limit_store
from baize_assets.core.config.pipeline import (
    PROJECT_ROOT,
    BudgetConfig,
    PipelineConfig,
    RateLimitConfig,
    RateLimitStoreConfig,
    SourceConfig,
    TeacherConfig,
)
from baize_assets.teacher.server import SimulatedTeacher, busiest_window

from .collection_support import make_seeds
from .ops_support import (
    REDIS,
    REDIS_URL,
    CommandLineDeployment,
    free_port,
    process_group,
    require_service,
    run_together,
    write_faq_csv,
)
from .scale_out_support import (
    BIN,
    CHAT,
    LIMITED_TEACHER,
    assert_the_limit_held,
    limited_config,
    transcripts_steps_at_once,
)

STORE_KINDS = ["sqlite", "redis"]


def store_env(kind: str) -> dict:
    if kind == "redis":
        require_service("Redis", REDIS)
    return {**os.environ, "BAIZE_REDIS_URL": REDIS_URL, "PYTHONPATH": str(PROJECT_ROOT)}


# Three asyncio tasks in this process take slots of one key through the shared store.
ACQUIRE = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from pathlib import Path
    from baize_assets.core.config.pipeline import RateLimitConfig, RateLimitStoreConfig
    from baize_assets.core.collect.limiter import RateLimiter
    from baize_assets.core.collect.stores import open_limit_store

    kind, path, key, rpm, count = sys.argv[1:]
    store = open_limit_store(RateLimitStoreConfig(kind=kind), Path(path))
    limiter = RateLimiter(RateLimitConfig(requests_per_minute=float(rpm), headroom=0.0), store, key)
    starts = []

    async def take(n):
        for _ in range(n):
            await limiter.acquire(10)
            starts.append(time.time())

    async def main():
        await asyncio.wait_for(asyncio.gather(*(take(int(count) // 3) for _ in range(3))), 30)

    start_together()
    asyncio.run(main())
    print(json.dumps(starts))
    """
)


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_processes_sharing_a_store_take_evenly_spaced_slots(tmp_path, kind):
    env, key, interval = store_env(kind), uuid.uuid4().hex, 0.05
    per_process = 15
    starts = run_together(ACQUIRE, [[kind, str(tmp_path / "limits.sqlite"), key, str(60 / interval),
                                     str(per_process)]] * 3, env)
    every = sorted(t for process in starts for t in process)
    assert len(every) == 3 * per_process
    # The processes took turns (each began before another ended), yet together kept one pace.
    assert max(p[0] for p in map(sorted, starts)) < min(p[-1] for p in map(sorted, starts))
    assert every[-1] - every[0] >= (len(every) - 1) * interval * 0.97
    assert busiest_window(every, 0.5) <= 0.5 / interval + 1


# A process reserves 100 tokens, uses 90, and so on until the run's cap says no.
SPEND = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from baize_assets.core.config.pipeline import RateLimitStoreConfig
    from baize_assets.core.collect.stores import open_limit_store

    kind, path, ledger = sys.argv[1:]
    store = open_limit_store(RateLimitStoreConfig(kind=kind), Path(path))
    start_together()
    admitted = 0
    while store.reserve(ledger, 100, 0.25, 3000, None)[0]:
        admitted += 1
        time.sleep(0.02)  # the request in flight
        store.settle(ledger, 100, 0.25, 90, 0.2)
    print(json.dumps(admitted))
    """
)


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_budget_ledger_shared_by_processes_never_passes_its_cap(tmp_path, kind, monkeypatch):
    env, ledger, path = store_env(kind), f"run-{uuid.uuid4().hex}", tmp_path / "limits.sqlite"
    admitted = run_together(SPEND, [[kind, str(path), ledger]] * 3, env)
    monkeypatch.setenv("BAIZE_REDIS_URL", REDIS_URL)
    store = open_limit_store(RateLimitStoreConfig(kind=kind), path)
    tokens, dollars = store.spent(ledger)
    store.close()
    assert all(n > 0 for n in admitted)
    # Every settlement counted once; the cap held, and was used up to what the other
    # processes' reservations in flight (100 each) kept back when the last one was refused.
    assert tokens == 90 * sum(admitted) and dollars == pytest.approx(0.2 * sum(admitted))
    assert 3000 - 100 - 2 * 100 < tokens <= 3000


# Pauses a key for PAUSE_S seconds; prints when it wrote the pause (the clock every process shares).
PAUSE_S = 2.0
PAUSE = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from baize_assets.core.config.pipeline import RateLimitStoreConfig
    from baize_assets.core.collect.stores import open_limit_store

    kind, path, key, seconds = sys.argv[1:]
    store = open_limit_store(RateLimitStoreConfig(kind=kind), Path(path))
    start_together()
    written_at = time.time()
    store.pause(key, float(seconds))
    print(json.dumps(written_at))
    """
)


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_pause_written_by_one_process_holds_back_another(tmp_path, kind, monkeypatch):
    import asyncio

    from baize_assets.core.collect.limiter import RateLimiter

    env, key, path = store_env(kind), uuid.uuid4().hex, tmp_path / "limits.sqlite"
    monkeypatch.setenv("BAIZE_REDIS_URL", REDIS_URL)
    store = open_limit_store(RateLimitStoreConfig(kind=kind), path)
    limiter = RateLimiter(RateLimitConfig(requests_per_minute=6000), store, key)
    (written_at,) = run_together(PAUSE, [[kind, str(path), key, str(PAUSE_S)]], env)
    asked_at = time.time()
    asyncio.run(limiter.acquire(10))
    store.close()
    # Measured from when the other process wrote the pause, however long that process took to exit.
    assert asked_at < written_at + PAUSE_S, "the pause was over before this process asked for a slot"
    assert written_at + PAUSE_S <= time.time() < written_at + PAUSE_S + 1.0


# A collector with a tokens-per-minute limit, its pacing shared through the store.
COLLECT_TOKENS = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from baize_assets.core.config.pipeline import RateLimitConfig, RateLimitStoreConfig, TeacherConfig
    from baize_assets.core.collect.collector import collect_transcripts
    from baize_assets.core.collect.stores import open_limit_store
    from baize_assets_tests.collection_support import make_seeds

    kind, path, base_url, tpm, worker, count = sys.argv[1:]
    teacher = TeacherConfig(max_concurrency=4, rate_limit=RateLimitConfig(tokens_per_minute=float(tpm), headroom=0.15))
    store = open_limit_store(RateLimitStoreConfig(kind=kind), Path(path))
    seeds = make_seeds(int(count), start=int(worker) * int(count))
    start_together()
    result = collect_transcripts(seeds, teacher, "sk-shared-tokens", base_url, lambda _: None, limit_store=store)
    print(json.dumps({"failures": dict(result.failures), "retries": dict(result.retries)}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("kind", STORE_KINDS)
def test_processes_sharing_a_token_limit_stay_under_it(tmp_path, kind):
    """Three processes share one tokens-per-minute limit the teacher enforces for their key,
    over a 5 s window instead of a minute so the test takes seconds.

    The teacher counts the tokens an answer uses, which the client learns only from the
    answer: it paces by the mean answer so far, so a run of long answers can fill a window
    beyond the pace; the 15% headroom covers that over ~35 requests a window (over a real
    minute's hundreds of requests a window, the share it must cover is far smaller).
    """
    env, window_s, tokens = store_env(kind), 5.0, 15_000
    with SimulatedTeacher(tokens_per_window=tokens, rate_window_s=window_s, latency_s=0.05) as server:
        outcomes = run_together(COLLECT_TOKENS, [[kind, str(tmp_path / "limits.sqlite"), server.base_url,
                                                  str(tokens * 60 / window_s), str(worker), "30"]
                                                 for worker in range(3)], env)
        stats = server.stats()
    assert all(not o["failures"] and not o["retries"] for o in outcomes), outcomes
    assert stats["requests_by_outcome"].get("rate_limited_by_limit", 0) == 0, stats["requests_by_outcome"]
    times, used = zip(*stats["admitted_tokens_at_s"])
    assert len(times) == 90
    busiest = busiest_window(list(times), window_s, list(used))
    assert 0.85 * tokens <= busiest <= tokens, busiest


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_requests_in_flight_are_counted_for_every_process_and_a_dead_ones_expire(tmp_path, kind, monkeypatch):
    store_env(kind)
    monkeypatch.setenv("BAIZE_REDIS_URL", REDIS_URL)
    key = uuid.uuid4().hex
    first, second = (open_limit_store(RateLimitStoreConfig(kind=kind), tmp_path / "limits.sqlite") for _ in range(2))
    first.begin_request(key, "a")
    second.begin_request(key, "b")
    second.begin_request(key, "c")
    assert first.end_request(key, "a", 60) == 2
    time.sleep(0.3)
    second.begin_request(key, "d")
    assert second.end_request(key, "b", 0.2) == 1  # "c" began too long ago: its process died without ending it
    first.close()
    second.close()


def test_the_limit_key_is_a_hash_without_the_key_or_the_urls_password():
    key = limit_key("https://user:hunter2@api.example.com/v1/", "sk-secret")
    assert "sk-secret" not in key and "hunter2" not in key
    assert key == limit_key("https://other:pw@api.example.com/v1", "sk-secret")  # credentials of the URL aside
    assert key != limit_key("https://api.example.com/v1", "sk-other")


def test_a_limit_store_that_is_down_stops_the_run_before_any_request(tmp_path, teacher, monkeypatch):
    closed = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("BAIZE_REDIS_URL", closed)
    with pytest.raises(LimitStoreError, match=r"Redis limit store redis://:\[redacted\]@127\.0\.0\.1") as error:
        open_limit_store(RateLimitStoreConfig(kind="redis"), tmp_path / "unused.sqlite")
    assert "s3cret" not in str(error.value)
    monkeypatch.delenv("BAIZE_REDIS_URL")
    with pytest.raises(LimitStoreError, match="BAIZE_REDIS_URL .* is not set"):
        open_limit_store(RateLimitStoreConfig(kind="redis"), tmp_path / "unused.sqlite")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(LimitStoreError, match="SQLite limit store .*a_file/limits.sqlite cannot be used"):
        SqliteLimitStore(tmp_path / "a_file" / "limits.sqlite")
    with pytest.raises(ValueError, match="path is for the sqlite store"):
        RateLimitStoreConfig(kind="redis", path="limits.sqlite")

    # Through a Dagster run: the step fails with the store's name, and the teacher saw nothing.
    monkeypatch.setenv("BAIZE_REDIS_URL", closed)
    csv = write_faq_csv(tmp_path / "faq.csv", [f"How do I water plant {n}?" for n in range(4)])
    teacher_config = TeacherConfig(rate_limit=RateLimitConfig(requests_per_minute=600),
                                   rate_limit_store=RateLimitStoreConfig(kind="redis"))
    config = PipelineConfig(teacher=teacher_config, sources=[
        SourceConfig(name="faq", format="csv", text_field="question", paths=[str(csv)], shards=1)])
    (tmp_path / "run").mkdir()
    deployment = CommandLineDeployment(tmp_path / "run", config, teacher.base_url)
    assert deployment.materialize_here([seed_key("faq")]).success
    before = teacher.stats()["requests_by_path"].get(CHAT, 0)
    result = deployment.materialize_here([transcripts_key("faq")], "0")
    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    assert "Redis limit store" in str(failure.event_specific_data)
    assert teacher.stats()["requests_by_path"].get(CHAT, 0) == before


def test_a_collection_budget_is_kept_in_the_store_it_is_given(tmp_path, teacher):
    store = SqliteLimitStore(tmp_path / "limits.sqlite")
    capped = TeacherConfig(max_concurrency=4, max_tokens=400, budget=BudgetConfig(max_tokens=6000))
    first = collect_transcripts(make_seeds(20), capped, "k", teacher.base_url, lambda _: None,
                                limit_store=store, ledger="run-1")
    # A second collection on the same ledger finds the cap already spent by the first.
    second = collect_transcripts(make_seeds(40).tail(20), capped, "k", teacher.base_url, lambda _: None,
                                 limit_store=store, ledger="run-1")
    tokens, _ = store.spent("run-1")
    store.close()
    assert first.partial and second.partial
    assert tokens == first.spent_tokens + second.spent_tokens <= 6000


# -- real Dagster processes against a teacher with a per-key limit

PAIRED_SOURCES = ["extra_a", "extra_b"]


@pytest.mark.slow
def test_concurrent_runs_and_parallel_steps_share_one_limit(tmp_path):
    """Four shard runs of one source (in-process executor, each run one process) and a fifth
    run with two parallel steps (multiprocess executor, a process each), all started at once:
    six processes, one endpoint and key."""
    seeds = {"faq": 120, "extra_a": 30, "extra_b": 30}
    config = limited_config(tmp_path, 4, seeds, "sqlite")
    with SimulatedTeacher(**LIMITED_TEACHER) as server:
        (tmp_path / "run").mkdir()
        deployment = CommandLineDeployment(tmp_path / "run", config, server.base_url)
        assert deployment.materialize_here([seed_key(name) for name in seeds]).success
        materialize = [str(BIN / "dagster"), "asset", "materialize", "-m", "baize_assets.definitions"]
        # A step process of its own would only add imports to these runs of one step each.
        in_process = {**deployment.env, "BAIZE_EXECUTOR": "in_process"}
        commands = [([*materialize, "--select", transcripts_key("faq").to_user_string(), "--partition", str(shard)],
                     in_process) for shard in range(4)]
        commands.append(([*materialize, "--select", ",".join(f"{s}/transcripts" for s in PAIRED_SOURCES),
                          "--partition", "0"], deployment.env))
        logs = [deployment.log(f"run-{n}") for n in range(len(commands))]
        with ExitStack() as stack:
            runs = [stack.enter_context(process_group(command, log, env))
                    for (command, env), log in zip(commands, logs)]
            codes = [run.wait(timeout=240) for run in runs]
        assert codes == [0] * len(commands), "\n".join(log.read_text()[-3000:] for log in logs)
        assert_the_limit_held(server, sum(seeds.values()))
    with deployment.instance() as instance:
        run_ids = [run.run_id for run in instance.get_runs() if "transcripts" in str(run.asset_selection)]
        assert transcripts_steps_at_once(instance, run_ids) >= 4
    for name in seeds:
        for shard in range(4 if name == "faq" else 1):
            frame = pd.read_parquet(deployment.layout.transcripts(name, shard))
            assert frame["failure_kind"].isna().all()
