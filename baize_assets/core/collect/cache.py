"""Durable per-source store of finished self-chat conversations.

Each conversation is committed the moment it arrives, so a crashed or killed run keeps
everything that was answered; only requests in flight are lost. Rows are keyed by a
hash of exactly what determines the teacher's answer (seed text, prompt version, mode,
model, sampling parameters and loop guards), so a rerun asks only for what it lacks
and a prompt or model change asks again only for what it affects.

Beside the conversations, each collection appends what it cost (:class:`CollectionStats`,
retries and rejected answers included), so a forecast can price the next one from what
the same prompt version and model really used (:mod:`baize_assets.core.costs`).

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
import sqlite3
import time
from dataclasses import asdict, astuple, dataclass
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
CREATE TABLE IF NOT EXISTS collections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    history_key TEXT NOT NULL,
    stats_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS collections_by_history ON collections (history_key, id);
"""


@dataclass
class CollectionStats:
    """What asking some rows cost, every answered request included (retries, answers in another format).

    ``answered_tokens`` and ``answered_tokens_sq`` sum each answered row's tokens (prompt and
    completion) and their squares, for the spread of a row's cost; ``prompt_estimate`` sums
    the first request's estimated prompt tokens of each asked row, for calibrating estimates.
    """

    rows: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    answered: int = 0
    answered_tokens: float = 0.0
    answered_tokens_sq: float = 0.0
    prompt_estimate: int = 0

    def __add__(self, other: "CollectionStats") -> "CollectionStats":
        return CollectionStats(*(a + b for a, b in zip(astuple(self), astuple(other))))


def cache_key(seed: str, generation: dict[str, Any]) -> str:
    """Hash of the seed text and every input that shapes the teacher's answer."""
    payload = json.dumps({"seed": seed, **generation}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class TranscriptCache:
    """Append-only SQLite store of finished conversations of one source.

    With ``reuse=False`` (a run that regenerates) nothing stored is read back, while new rows
    are still written and are the newest from then on.
    """

    def __init__(self, path: Path, reuse: bool = True) -> None:
        self.path = Path(path)
        self.reuse = reuse
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: every insert is its own durable transaction.
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process (not a power cut) at a fraction of FULL's cost.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The newest stored row of each key that has one."""
        found: dict[str, dict[str, Any]] = {}
        keys = list(dict.fromkeys(keys)) if self.reuse else []
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
        found: set[str] = set()
        keys = list(dict.fromkeys(keys)) if self.reuse else []
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            cursor = self._db.execute(f"SELECT DISTINCT cache_key FROM conversations WHERE cache_key IN ({marks})",
                                      chunk)
            found.update(key for (key,) in cursor)
        return found

    def put(self, key: str, seed_id: str, row: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO conversations (cache_key, seed_id, created_at, row_json) VALUES (?, ?, ?, ?)",
            (key, seed_id, time.time(), json.dumps(row, ensure_ascii=False)),
        )

    def record_collection(self, history_key: str, stats: CollectionStats) -> None:
        """Append what one collection under ``history_key`` (see ``results.history_key``) cost."""
        if stats.rows:
            self._db.execute("INSERT INTO collections (created_at, history_key, stats_json) VALUES (?, ?, ?)",
                             (time.time(), history_key, json.dumps(asdict(stats))))

    def collection_history(self, history_key: str) -> CollectionStats:
        """What every recorded collection under ``history_key`` cost, summed."""
        total = CollectionStats()
        for (stats,) in self._db.execute("SELECT stats_json FROM collections WHERE history_key = ?", (history_key,)):
            total = total + CollectionStats(**json.loads(stats))
        return total

    def batch_jobs(self):
        """The ledger of the Batch API jobs of this cache's rows, in the same file."""
        from .batch_jobs import BatchJobs

        return BatchJobs(self.path)

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(DISTINCT cache_key) FROM conversations").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "TranscriptCache":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
