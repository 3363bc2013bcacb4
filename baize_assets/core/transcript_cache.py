"""Durable per-source store of finished self-chat conversations.

Each conversation is committed as it arrives, so a crashed or killed run keeps
everything that was answered; only requests in flight (and the few rows a writer thread
has not yet committed, milliseconds' worth) are lost. The writer thread takes the JSON
encoding and the commits off the collector's event loop and commits whatever has queued
up in one transaction, so the cache costs the collector almost nothing at any rate. Rows are keyed by a
hash of exactly what determines the teacher's answer (seed text, prompt version, mode,
model, sampling parameters and loop guards), so a rerun asks only for what it lacks
and a prompt or model change asks again only for what it affects.

SQLite in WAL mode: appends are atomic, a reader never sees half a row, and a process
killed mid-commit leaves the file consistent. Several processes may write at once (the
collector processes of one shard, the steps of other runs): each insert is one short
transaction, and a writer waits for another's (the busy timeout) instead of failing. The
table is append-only; a regenerated conversation is a newer row under the same key and the
newest one wins.
"""

from __future__ import annotations

import hashlib
import json
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cache_key TEXT NOT NULL,
    seed_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    row_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_by_key ON conversations (cache_key, id);
"""


def cache_key(seed: str, generation: dict[str, Any]) -> str:
    """Hash of the seed text and every input that shapes the teacher's answer."""
    payload = json.dumps({"seed": seed, **generation}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class TranscriptCache:
    """Append-only SQLite store of finished conversations of one source."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._connect()
        self._db.executescript(_SCHEMA)
        self._pending: queue.Queue[tuple | None] = queue.Queue()
        self._write_error: BaseException | None = None
        self._writer = threading.Thread(target=self._write_rows, name="transcript-cache-writer", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        # Autocommit outside the writer's explicit transactions.
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process (not a power cut) at a fraction of FULL's cost.
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _write_rows(self) -> None:
        db = self._connect()
        try:
            while True:
                batch = [self._pending.get()]
                while not self._pending.empty():
                    batch.append(self._pending.get_nowait())
                rows = [(key, seed_id, at, json.dumps(row, ensure_ascii=False)) for key, seed_id, at, row in
                        (item for item in batch if item is not None)]
                try:
                    if rows and self._write_error is None:
                        with db:  # one transaction for what queued up meanwhile
                            db.executemany(
                                "INSERT INTO conversations (cache_key, seed_id, created_at, row_json) "
                                "VALUES (?, ?, ?, ?)", rows,
                            )
                except sqlite3.Error as error:
                    self._write_error = error
                finally:
                    for _ in batch:
                        self._pending.task_done()
                if None in batch:
                    return
        finally:
            db.close()

    def flush(self) -> None:
        """Wait until every row put so far is committed; raise if a commit failed."""
        self._pending.join()
        if self._write_error is not None:
            raise sqlite3.OperationalError(f"could not write to the cache {self.path}: {self._write_error}")

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The newest stored row of each key that has one."""
        self.flush()
        found: dict[str, dict[str, Any]] = {}
        keys = list(dict.fromkeys(keys))
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            cursor = self._db.execute(
                f"SELECT cache_key, row_json FROM conversations WHERE id IN "
                f"(SELECT MAX(id) FROM conversations WHERE cache_key IN ({marks}) GROUP BY cache_key)",
                chunk,
            )
            found.update((key, json.loads(row)) for key, row in cursor)
        return found

    def stored_keys(self, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` have a stored row (without reading the rows)."""
        self.flush()
        found: set[str] = set()
        keys = list(dict.fromkeys(keys))
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            cursor = self._db.execute(f"SELECT DISTINCT cache_key FROM conversations WHERE cache_key IN ({marks})",
                                      chunk)
            found.update(key for (key,) in cursor)
        return found

    def put(self, key: str, seed_id: str, row: dict[str, Any]) -> None:
        """Queue ``row`` for the writer thread; a copy, so later changes to ``row`` are not stored."""
        if self._write_error is not None:
            self.flush()
        self._pending.put((key, seed_id, time.time(), dict(row)))

    def count(self) -> int:
        self.flush()
        return self._db.execute("SELECT COUNT(DISTINCT cache_key) FROM conversations").fetchone()[0]

    def close(self) -> None:
        if self._writer.is_alive():
            self._pending.put(None)
            self._writer.join()
        self._db.close()
        if self._write_error is not None:
            raise sqlite3.OperationalError(f"could not write to the cache {self.path}: {self._write_error}")

    def __enter__(self) -> "TranscriptCache":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
