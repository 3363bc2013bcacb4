"""The PostgreSQL state store (``state_store.kind: postgres``) on the PostgreSQL of this machine: caches,
batch ledgers and leases with the contracts of the SQLite files and ``flock`` leases."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from baize_assets.core.collect.cache import CollectionStats
from baize_assets.core.collect.errors import TeacherFatalError
from baize_assets.core.collect.leases import LeaseTimeout
from baize_assets.core.collect.postgres_state import PostgresCache, postgres_lease
from baize_assets.core.collect.state import StateStore
from baize_assets.core.config.pipeline import PROJECT_ROOT, PipelineConfig, StateStoreConfig

from .ops_support import fresh_postgres_database


@pytest.fixture
def state_url(monkeypatch):
    with fresh_postgres_database() as url:
        url = url.replace("postgresql+psycopg2://", "postgresql://")
        monkeypatch.setenv("BAIZE_STATE_URL", url)
        yield url


def test_a_cache_keeps_the_newest_row_of_a_key_under_its_own_name(state_url, tmp_path):
    store = StateStore(StateStoreConfig(kind="postgres"), tmp_path)
    with store.cache(tmp_path / "faq" / "transcript_cache.sqlite") as cache:
        assert cache.name == "faq/transcript_cache"
        cache.put("k1", "s1", {"text": "first"})
        cache.put("k1", "s1", {"text": "second"})
        cache.put("k2", "s2", {"text": "other"})
        cache.record_collection("h", CollectionStats(rows=2, requests=3))
        cache.record_collection("h", CollectionStats(rows=1, requests=1))
    with store.cache(tmp_path / "faq" / "transcript_cache.sqlite") as cache:  # a new connection: it was committed
        assert cache.get_many(["k1", "k2", "k3"]) == {"k1": {"text": "second"}, "k2": {"text": "other"}}
        assert cache.stored_keys(["k2", "k3"]) == {"k2"} and cache.count() == 2
        assert cache.collection_history("h") == CollectionStats(rows=3, requests=4)
    with store.cache(tmp_path / "faq" / "transcript_cache.sqlite", reuse=False) as regenerating:
        assert regenerating.get_many(["k1"]) == {} and regenerating.stored_keys(["k1"]) == set()
    with PostgresCache(state_url, "other/transcript_cache") as other:
        assert other.get_many(["k1"]) == {} and other.count() == 0


def test_a_batch_ledger_lives_beside_its_cache(state_url):
    with PostgresCache(state_url, "faq/transcript_cache") as cache:
        jobs = cache.batch_jobs()
        jobs.record("batch_a", "file_a", ["c1", "c2"])
        jobs.record("batch_b", "file_b", ["c3"])
        assert jobs.uncollected(["c1", "c3", "c9"]) == {"batch_a": {"c1", "c2"}, "batch_b": {"c3"}}
        jobs.mark_collected("batch_a")
    with PostgresCache(state_url, "faq/transcript_cache") as cache:
        assert cache.batch_jobs().uncollected(["c1", "c2", "c3"]) == {"batch_b": {"c3"}}
    with PostgresCache(state_url, "medquad/transcript_cache") as cache:
        assert cache.batch_jobs().uncollected(["c3"]) == {}


# A process that takes a lease and keeps it until it is killed.
LEASE_HOLDER = textwrap.dedent(
    """
    import sys, time
    from baize_assets.core.collect.postgres_state import postgres_lease

    with postgres_lease(sys.argv[1], "faq/transcripts_shard_0", holder="the killed holder"):
        print("held", flush=True)
        time.sleep(60)
    """
)


def test_a_lease_is_exclusive_says_who_holds_it_and_is_free_once_its_holder_is_killed(state_url):
    holder = subprocess.Popen([sys.executable, "-c", LEASE_HOLDER, state_url], cwd=PROJECT_ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        lines = []
        with pytest.raises(LeaseTimeout, match=r"still held by the killed holder \(pid \d+ on "):
            with postgres_lease(state_url, "faq/transcripts_shard_0", "waiter", log=lines.append, timeout_s=0.3,
                                poll_s=0.05):
                pytest.fail("a second holder got the lease")
        assert lines[0].startswith(f"waiting for the lease faq/transcripts_shard_0: held by the killed holder "
                                   f"(pid {holder.pid} on ")
        with postgres_lease(state_url, "faq/transcripts_shard_1", "another shard", timeout_s=0):
            pass  # another name is another lease
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()
    started = time.monotonic()
    # PostgreSQL ends the killed process's session, and with it the lock, as soon as it sees the socket close.
    with postgres_lease(state_url, "faq/transcripts_shard_0", "waiter", timeout_s=5, poll_s=0.05):
        assert time.monotonic() - started < 2


def test_a_postgres_store_without_its_url_or_server_is_a_clear_error(tmp_path, monkeypatch):
    store = StateStore(StateStoreConfig(kind="postgres", url_env="MY_STATE_URL"), tmp_path)
    monkeypatch.delenv("MY_STATE_URL", raising=False)
    with pytest.raises(TeacherFatalError, match="state_store is postgres, but MY_STATE_URL"):
        store.cache(tmp_path / "faq" / "transcript_cache.sqlite")
    monkeypatch.setenv("MY_STATE_URL", "postgresql://baize:secret-password@127.0.0.1:1/nowhere")
    with pytest.raises(TeacherFatalError, match=r"cannot reach the PostgreSQL state store") as error:
        store.cache(tmp_path / "faq" / "transcript_cache.sqlite")
    assert "secret-password" not in str(error.value)


def test_the_state_store_is_sqlite_unless_configured():
    assert StateStoreConfig().kind == "sqlite" and StateStoreConfig().url_env == "BAIZE_STATE_URL"
    assert PipelineConfig.model_fields["state_store"].default.kind == "sqlite"
    with pytest.raises(ValueError, match="url_env"):
        StateStoreConfig(kind="postgres", url_env="not a variable")
