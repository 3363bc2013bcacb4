"""The ledger of Batch API jobs, beside a source's cached conversations (its SQLite file).

A batch is recorded with all of its requests the moment it exists, so a killed or
restarted run waits on the same batch instead of submitting (and paying for) it again.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_jobs (
    batch_id TEXT PRIMARY KEY,
    input_file_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    collected_at REAL
);
CREATE TABLE IF NOT EXISTS batch_job_requests (batch_id TEXT NOT NULL, custom_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS batch_job_requests_by_custom_id ON batch_job_requests (custom_id);
"""


class BatchJobs:
    """The batches submitted for a source and the requests in each, beside its cached conversations."""

    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def record(self, batch_id: str, input_file_id: str, custom_ids: list[str]) -> None:
        with self._db:  # one transaction: a batch is recorded with all of its requests or not at all
            self._db.execute("BEGIN")
            self._db.execute("INSERT INTO batch_jobs VALUES (?, ?, ?, NULL)", (batch_id, input_file_id, time.time()))
            self._db.executemany("INSERT INTO batch_job_requests VALUES (?, ?)", [(batch_id, c) for c in custom_ids])

    def uncollected(self, custom_ids: list[str]) -> dict[str, set[str]]:
        """Batches not yet collected that hold any of ``custom_ids``, with all of their requests."""
        batch_ids: set[str] = set()
        for start in range(0, len(custom_ids), 500):
            chunk = custom_ids[start : start + 500]
            batch_ids.update(row[0] for row in self._db.execute(
                f"SELECT DISTINCT r.batch_id FROM batch_job_requests r JOIN batch_jobs j USING (batch_id) "
                f"WHERE j.collected_at IS NULL AND r.custom_id IN ({','.join('?' * len(chunk))})", chunk))
        query = "SELECT custom_id FROM batch_job_requests WHERE batch_id = ?"
        return {batch_id: {row[0] for row in self._db.execute(query, (batch_id,))} for batch_id in sorted(batch_ids)}

    def mark_collected(self, batch_id: str) -> None:
        self._db.execute("UPDATE batch_jobs SET collected_at = ? WHERE batch_id = ?", (time.time(), batch_id))

    def close(self) -> None:
        self._db.close()
