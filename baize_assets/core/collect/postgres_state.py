"""The collection's state in PostgreSQL: caches, batch ledgers and leases shared by machines without a shared disk.

The same contracts as the SQLite caches (:mod:`.cache`, :mod:`.batch_jobs`) and the
``flock`` leases (:mod:`.leases`), for steps on several machines (Celery workers, pods):

* a **cache** is the rows of one name (``quora/transcript_cache``) in one table; every
  insert is its own committed transaction, so a killed step loses only what was in flight,
  and the newest row of a key wins;
* a **lease** is a session-level advisory lock on the lease's name, held by the
  connection: PostgreSQL releases it when the holder's connection ends, whichever way its
  process ends (a SIGKILL, a lost machine once its connection times out), so it needs no
  expiry; who holds it is a row beside it, for the processes that wait.

The URL (which may carry a password) comes from the variable ``state_store.url_env`` names.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any, Callable, Iterable, Iterator

from .cache import CollectionStats
from .errors import TeacherFatalError
from .leases import wait_for_lease

# One lock serialises the creation of the tables by processes that start together.
_SCHEMA_LOCK = 7_046_511_001
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS baize_conversations (id BIGSERIAL PRIMARY KEY, cache TEXT NOT NULL, "
    "cache_key TEXT NOT NULL, seed_id TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, row_json TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS baize_conversations_by_key ON baize_conversations (cache, cache_key, id)",
    "CREATE TABLE IF NOT EXISTS baize_collections (id BIGSERIAL PRIMARY KEY, cache TEXT NOT NULL, "
    "history_key TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, stats_json TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS baize_batch_jobs (cache TEXT NOT NULL, batch_id TEXT NOT NULL, "
    "input_file_id TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, collected_at DOUBLE PRECISION, "
    "PRIMARY KEY (cache, batch_id))",
    "CREATE TABLE IF NOT EXISTS baize_batch_job_requests (cache TEXT NOT NULL, batch_id TEXT NOT NULL, "
    "custom_id TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS baize_batch_job_requests_by_id ON baize_batch_job_requests (cache, custom_id)",
    "CREATE TABLE IF NOT EXISTS baize_leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, pid INTEGER NOT NULL, "
    "host TEXT NOT NULL, since DOUBLE PRECISION NOT NULL)",
]


def connect(url: str):
    """An autocommit connection with the tables in place."""
    import psycopg  # imported only where PostgreSQL state is used

    try:
        connection = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as error:
        # The driver's message names the host and database, never the password.
        raise TeacherFatalError(f"cannot reach the PostgreSQL state store (state_store.url_env): {error}") from None
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        for statement in _SCHEMA:
            connection.execute(statement)
    return connection


class PostgresCache:
    """The rows of one cache name, with :class:`~baize_assets.core.collect.cache.TranscriptCache`'s methods."""

    def __init__(self, url: str, name: str, reuse: bool = True) -> None:
        self.url, self.name, self.reuse = url, name, reuse
        self._db = connect(url)

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        keys = list(dict.fromkeys(keys)) if self.reuse else []
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), 1000):
            rows = self._db.execute(
                "SELECT DISTINCT ON (cache_key) cache_key, row_json FROM baize_conversations "
                "WHERE cache = %s AND cache_key = ANY(%s) ORDER BY cache_key, id DESC",
                (self.name, keys[start : start + 1000])).fetchall()
            found.update((key, json.loads(row)) for key, row in rows)
        return found

    def stored_keys(self, keys: Iterable[str]) -> set[str]:
        keys = list(dict.fromkeys(keys)) if self.reuse else []
        found: set[str] = set()
        for start in range(0, len(keys), 1000):
            found.update(key for (key,) in self._db.execute(
                "SELECT DISTINCT cache_key FROM baize_conversations WHERE cache = %s AND cache_key = ANY(%s)",
                (self.name, keys[start : start + 1000])))
        return found

    def put(self, key: str, seed_id: str, row: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO baize_conversations (cache, cache_key, seed_id, created_at, row_json) "
                         "VALUES (%s, %s, %s, %s, %s)",
                         (self.name, key, seed_id, time.time(), json.dumps(row, ensure_ascii=False)))

    def record_collection(self, history_key: str, stats: CollectionStats) -> None:
        if stats.rows:
            self._db.execute("INSERT INTO baize_collections (cache, history_key, created_at, stats_json) "
                             "VALUES (%s, %s, %s, %s)",
                             (self.name, history_key, time.time(), json.dumps(asdict(stats))))

    def collection_history(self, history_key: str) -> CollectionStats:
        total = CollectionStats()
        for (stats,) in self._db.execute("SELECT stats_json FROM baize_collections WHERE cache = %s AND "
                                         "history_key = %s", (self.name, history_key)):
            total = total + CollectionStats(**json.loads(stats))
        return total

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(DISTINCT cache_key) FROM baize_conversations WHERE cache = %s",
                                (self.name,)).fetchone()[0]

    def batch_jobs(self) -> "PostgresBatchJobs":
        return PostgresBatchJobs(self._db, self.name)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "PostgresCache":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class PostgresBatchJobs:
    """:class:`~baize_assets.core.collect.batch_jobs.BatchJobs` beside a PostgreSQL cache."""

    def __init__(self, connection, cache: str) -> None:
        self._db, self.cache = connection, cache

    def record(self, batch_id: str, input_file_id: str, custom_ids: list[str]) -> None:
        with self._db.transaction():  # a batch is recorded with all of its requests or not at all
            self._db.execute("INSERT INTO baize_batch_jobs VALUES (%s, %s, %s, %s, NULL)",
                             (self.cache, batch_id, input_file_id, time.time()))
            with self._db.cursor() as cursor:
                cursor.executemany("INSERT INTO baize_batch_job_requests VALUES (%s, %s, %s)",
                                   [(self.cache, batch_id, c) for c in custom_ids])

    def uncollected(self, custom_ids: list[str]) -> dict[str, set[str]]:
        # Every request of each uncollected batch holding one of ``custom_ids``, in one round trip.
        rows = self._db.execute(
            "SELECT r.batch_id, r.custom_id FROM baize_batch_job_requests r JOIN baize_batch_jobs j "
            "ON j.cache = r.cache AND j.batch_id = r.batch_id WHERE r.cache = %s AND j.collected_at IS NULL "
            "AND r.batch_id IN (SELECT batch_id FROM baize_batch_job_requests WHERE cache = %s "
            "AND custom_id = ANY(%s))", (self.cache, self.cache, list(custom_ids))).fetchall()
        batches: dict[str, set[str]] = {}
        for batch_id, custom_id in rows:
            batches.setdefault(batch_id, set()).add(custom_id)
        return dict(sorted(batches.items()))

    def mark_collected(self, batch_id: str) -> None:
        self._db.execute("UPDATE baize_batch_jobs SET collected_at = %s WHERE cache = %s AND batch_id = %s",
                         (time.time(), self.cache, batch_id))

    def close(self) -> None:
        pass  # the cache's connection


def _holder(connection, name: str) -> str:
    row = connection.execute("SELECT holder, pid, host, since FROM baize_leases WHERE name = %s", (name,)).fetchone()
    if row is None:
        return "a process that has not yet said who it is"
    return f"{row[0]} (pid {row[1]} on {row[2]}, for {time.time() - row[3]:.0f} s)"


@contextmanager
def postgres_lease(url: str, name: str, holder: str, log: Callable[[str], None] = print,
                   timeout_s: float | None = None, poll_s: float = 0.2, log_every_s: float = 30.0) -> Iterator[None]:
    """Hold the lease ``name`` for the ``with`` block, waiting while another process holds it (as
    :func:`.leases.exclusive_lease` does: ``timeout_s`` None waits as long as the holder lives)."""
    connection = connect(url)
    try:
        lock = "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))"
        wait_for_lease(name, lambda: connection.execute(lock, (name,)).fetchone()[0],
                       lambda: _holder(connection, name), log, timeout_s, poll_s, log_every_s)
        connection.execute("INSERT INTO baize_leases VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                           "holder = excluded.holder, pid = excluded.pid, host = excluded.host, "
                           "since = excluded.since", (name, holder, os.getpid(), socket.gethostname(), time.time()))
        try:
            yield
        finally:
            connection.execute("DELETE FROM baize_leases WHERE name = %s AND pid = %s AND host = %s",
                               (name, os.getpid(), socket.gethostname()))
    finally:
        connection.close()  # ends the session: the advisory lock is released (by a killed holder's too)
