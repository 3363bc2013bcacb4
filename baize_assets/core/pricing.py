"""Tokens into dollars, the per-run budget, and the ledger that shares it between steps.

A run's transcript steps may run in separate processes (Dagster's multiprocess
executor), so what each step has spent goes to a small SQLite ledger keyed by run id;
every step counts the others' spending against the run's cap.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .config import BudgetConfig, ModelPrice


def dollars(price: ModelPrice | None, prompt_tokens: int, completion_tokens: int) -> float | None:
    """Cost of a call, or None when the model has no price."""
    if price is None:
        return None
    return (prompt_tokens * price.input_per_million + completion_tokens * price.output_per_million) / 1_000_000


@dataclass
class Reservation:
    tokens: int
    dollars: float


class Budget:
    """Admits a request only if, even at its largest, the run stays within its cap.

    Each request reserves its worst case (estimated prompt plus ``max_tokens`` of
    completion) while in flight and settles its real usage when it ends, so the cap
    holds even with many requests in flight.
    """

    def __init__(self, config: BudgetConfig, price: ModelPrice | None) -> None:
        self.config = config
        self.price = price
        self.spent_tokens = 0
        self.spent_dollars = 0.0
        self.elsewhere_tokens = 0  # other steps of the same run, from the ledger
        self.elsewhere_dollars = 0.0
        self._reserved_tokens = 0
        self._reserved_dollars = 0.0
        self.exhausted = False

    def reserve(self, prompt_tokens: int, completion_tokens: int) -> Reservation | None:
        """Reserve a request's worst case; None (and exhausted from now on) when it does not fit."""
        tokens = prompt_tokens + completion_tokens
        cost = dollars(self.price, prompt_tokens, completion_tokens) or 0.0
        if self.exhausted:
            return None
        over_tokens = self.config.max_tokens is not None and (
            self.elsewhere_tokens + self.spent_tokens + self._reserved_tokens + tokens > self.config.max_tokens
        )
        over_dollars = self.config.max_dollars is not None and (
            self.elsewhere_dollars + self.spent_dollars + self._reserved_dollars + cost > self.config.max_dollars
        )
        if over_tokens or over_dollars:
            self.exhausted = True
            return None
        self._reserved_tokens += tokens
        self._reserved_dollars += cost
        return Reservation(tokens, cost)

    def settle(self, reservation: Reservation, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """End a reservation, charging what the request really used (nothing if it failed)."""
        self._reserved_tokens -= reservation.tokens
        self._reserved_dollars -= reservation.dollars
        self.spent_tokens += prompt_tokens + completion_tokens
        self.spent_dollars += dollars(self.price, prompt_tokens, completion_tokens) or 0.0


class SpendLedger:
    """Tokens and dollars spent per (run, step), shared by processes through SQLite."""

    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS spend (run_id TEXT NOT NULL, step TEXT NOT NULL, tokens INTEGER NOT NULL, "
            "dollars REAL NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (run_id, step))"
        )

    def record(self, run_id: str, step: str, tokens: int, spent_dollars: float) -> None:
        self._db.execute(
            "INSERT INTO spend VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id, step) DO UPDATE SET "
            "tokens = excluded.tokens, dollars = excluded.dollars, updated_at = excluded.updated_at",
            (run_id, step, tokens, spent_dollars, time.time()),
        )

    def run_total(self, run_id: str, excluding_step: str | None = None) -> tuple[int, float]:
        tokens, spent = self._db.execute(
            "SELECT COALESCE(SUM(tokens), 0), COALESCE(SUM(dollars), 0.0) FROM spend WHERE run_id = ? AND step != ?",
            (run_id, excluding_step or ""),
        ).fetchone()
        return int(tokens), float(spent)

    def close(self) -> None:
        self._db.close()
