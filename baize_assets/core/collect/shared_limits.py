"""One rate limit and one budget per endpoint and key, shared by every process that uses them.

A store keeps, per limit key (a hash of the endpoint and the API key, never the key
itself), the theoretical arrival time of the next request (GCRA): each request
atomically takes ``start = max(next_free, now, paused_until)`` and moves ``next_free``
one interval on, then sleeps until its start. That is the evenly spaced ticket queue
of one process, made shared, so any number of processes together stay under the
limit. Tokens are paced the same way, and a provider's pause (``Retry-After``, an
exhausted ``x-ratelimit-*``) is written once for everyone. The per-run budget is a
ledger in the same store: a request reserves its worst case against the cap in one
atomic step and settles its real usage after, so the overshoot is bounded by the
requests in flight. The requests in flight are counted in the store too: the provider's
``x-ratelimit-remaining-*`` headers do not count requests sent after the one they answer,
by any process, so each process reads them against everyone's requests in flight.

Stores: ``MemoryLimitStore`` (one process), ``SqliteLimitStore`` (the processes of one
machine, through one file; no service to run) and ``RedisLimitStore`` (processes on any
number of machines; the server's clock is the only clock; :mod:`.redis_limits`);
:func:`.stores.open_limit_store` opens the one the configuration names. The same store
keeps each run's request profile (:mod:`.request_profile`).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from .errors import TeacherFatalError


class LimitStoreError(TeacherFatalError):
    """The shared limit store cannot be used: the run stops instead of sending without limits."""


def limit_key(base_url: str, api_key: str) -> str:
    """The key of an endpoint's limit: a hash of its URL without credentials, and of the API key."""
    parts = urlsplit(base_url.rstrip("/"))
    url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return hashlib.sha256(f"{url}\0{api_key}".encode()).hexdigest()[:32]


def _fits(spent: float, reserved: float, more: float, cap: float | None) -> bool:
    return cap is None or spent + reserved + more <= cap


class LimitStore:
    """Request slots, token pacing, pauses and budget ledgers, keyed by string.

    Times are the store's own clock; callers only use differences of them.
    """

    name = "the limit store"

    def take_slot(self, key: str, interval_s: float, token_cost_s: float) -> float:
        """Take the next request slot of ``key``: seconds until it starts (0: now)."""
        raise NotImplementedError

    def shift_tokens(self, key: str, seconds: float) -> None:
        """Move the token pacing of ``key`` by ``seconds`` (a reservation corrected by real usage)."""
        raise NotImplementedError

    def pause(self, key: str, seconds: float) -> None:
        """No slot of ``key`` starts within ``seconds`` from now, in any process."""
        raise NotImplementedError

    def pause_left(self, key: str) -> float:
        raise NotImplementedError

    def begin_request(self, key: str, request: str) -> None:
        """Count ``request`` (an id unique across processes) as in flight to the endpoint of ``key``."""
        raise NotImplementedError

    def end_request(self, key: str, request: str, stale_after_s: float) -> int:
        """Stop counting ``request``; the requests of ``key`` still in flight, in every process.

        A request begun more than ``stale_after_s`` ago is no longer counted: its process
        died without ending it, since a live one gives up on a request by then.
        """
        raise NotImplementedError

    def reserve(self, ledger: str, tokens: int, dollars: float, max_tokens: int | None,
                max_dollars: float | None) -> tuple[bool, int, float]:
        """Reserve a request's worst case if the ledger stays within the caps.

        Returns ``(fits, spent tokens, spent dollars)``, the spending before this reservation.
        """
        raise NotImplementedError

    def settle(self, ledger: str, reserved_tokens: int, reserved_dollars: float, tokens: int, dollars: float) -> None:
        """Release a reservation and charge what was really used."""
        raise NotImplementedError

    def spent(self, ledger: str) -> tuple[int, float]:
        raise NotImplementedError

    def adaptations(self, key: str) -> dict[str, str]:
        """The request fields adapted under ``key`` (a run's model at an endpoint): field -> action."""
        raise NotImplementedError

    def add_adaptation(self, key: str, name: str, action: str) -> bool:
        """Record that requests under ``key`` ``action`` field ``name``; False when it was already recorded."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class MemoryLimitStore(LimitStore):
    """A store of this process only: what a single collector needs, and no I/O."""

    name = "the in-process limit store"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._limits: dict[str, list[float]] = {}  # key: [next request, next token, paused until]
        self._ledgers: dict[str, list[float]] = {}  # ledger: [spent tokens, spent dollars, reserved ...]
        self._in_flight: dict[str, set[str]] = {}  # key: requests (this process's own cannot go stale)
        self._adaptations: dict[str, dict[str, str]] = {}

    def _limit(self, key: str) -> list[float]:
        return self._limits.setdefault(key, [0.0, 0.0, 0.0])

    def _ledger(self, ledger: str) -> list[float]:
        return self._ledgers.setdefault(ledger, [0, 0.0, 0, 0.0])

    def take_slot(self, key: str, interval_s: float, token_cost_s: float) -> float:
        now, state = self._clock(), self._limit(key)
        token_start = max(state[1], now)
        start = max(state[0], now, state[2], token_start)
        state[0], state[1] = start + interval_s, token_start + token_cost_s
        return start - now

    def shift_tokens(self, key: str, seconds: float) -> None:
        self._limit(key)[1] += seconds

    def pause(self, key: str, seconds: float) -> None:
        state = self._limit(key)
        state[2] = max(state[2], self._clock() + seconds)

    def pause_left(self, key: str) -> float:
        return max(self._limit(key)[2] - self._clock(), 0.0)

    def begin_request(self, key: str, request: str) -> None:
        self._in_flight.setdefault(key, set()).add(request)

    def end_request(self, key: str, request: str, stale_after_s: float) -> int:
        requests = self._in_flight.setdefault(key, set())
        requests.discard(request)
        return len(requests)

    def reserve(self, ledger, tokens, dollars, max_tokens, max_dollars):
        state = self._ledger(ledger)
        fits = _fits(state[0], state[2], tokens, max_tokens) and _fits(state[1], state[3], dollars, max_dollars)
        if fits:
            state[2] += tokens
            state[3] += dollars
        return fits, int(state[0]), state[1]

    def settle(self, ledger, reserved_tokens, reserved_dollars, tokens, dollars):
        state = self._ledger(ledger)
        state[0] += tokens
        state[1] += dollars
        state[2] -= reserved_tokens
        state[3] -= reserved_dollars

    def spent(self, ledger):
        state = self._ledger(ledger)
        return int(state[0]), state[1]

    def adaptations(self, key):
        return dict(self._adaptations.get(key, {}))

    def add_adaptation(self, key, name, action):
        adapted = self._adaptations.setdefault(key, {})
        if name in adapted:
            return False
        adapted[name] = action
        return True


class SqliteLimitStore(LimitStore):
    """A store in one SQLite file: shared by the processes of one machine, no service needed.

    Every change is one short ``BEGIN IMMEDIATE`` transaction, so two processes never
    take the same slot. ``time.time()`` is the clock: one machine, one clock.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = f"the SQLite limit store {self.path}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            # Losing the last slots to a power cut is harmless; an fsync per request is not.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._write(self._create_tables)  # a write: an unwritable file fails here, before any request
        except (sqlite3.Error, OSError) as error:
            raise LimitStoreError(f"{self.name} cannot be used: {error}; no request was sent") from None

    @staticmethod
    def _create_tables(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS limits (key TEXT PRIMARY KEY, next_request REAL NOT NULL, "
                   "next_token REAL NOT NULL, paused_until REAL NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS ledgers (ledger TEXT PRIMARY KEY, spent_tokens INTEGER NOT NULL, "
                   "spent_dollars REAL NOT NULL, reserved_tokens INTEGER NOT NULL, reserved_dollars REAL NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS in_flight (key TEXT NOT NULL, request TEXT NOT NULL, "
                   "started_at REAL NOT NULL, PRIMARY KEY (key, request))")
        db.execute("CREATE TABLE IF NOT EXISTS adaptations (key TEXT NOT NULL, name TEXT NOT NULL, "
                   "action TEXT NOT NULL, PRIMARY KEY (key, name))")

    def _write(self, change: Callable[[sqlite3.Connection], object]):
        """``change`` in one write transaction; a failing store stops the run, it never lets requests through."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = change(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result
        except sqlite3.Error as error:
            raise LimitStoreError(f"{self.name} failed: {error}") from None

    def _limit(self, db: sqlite3.Connection, key: str) -> tuple[float, float, float]:
        row = db.execute("SELECT next_request, next_token, paused_until FROM limits WHERE key = ?", (key,)).fetchone()
        return row or (0.0, 0.0, 0.0)

    def _store_limit(self, db: sqlite3.Connection, key: str, state: tuple[float, float, float]) -> None:
        db.execute("INSERT INTO limits VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                   "next_request = excluded.next_request, next_token = excluded.next_token, "
                   "paused_until = excluded.paused_until", (key, *state))

    def take_slot(self, key: str, interval_s: float, token_cost_s: float) -> float:
        def take(db: sqlite3.Connection) -> float:
            now = time.time()
            next_request, next_token, paused_until = self._limit(db, key)
            token_start = max(next_token, now)
            start = max(next_request, now, paused_until, token_start)
            self._store_limit(db, key, (start + interval_s, token_start + token_cost_s, paused_until))
            return start - now

        return self._write(take)

    def shift_tokens(self, key: str, seconds: float) -> None:
        def shift(db: sqlite3.Connection) -> None:
            next_request, next_token, paused_until = self._limit(db, key)
            self._store_limit(db, key, (next_request, next_token + seconds, paused_until))

        self._write(shift)

    def pause(self, key: str, seconds: float) -> None:
        def pause(db: sqlite3.Connection) -> None:
            next_request, next_token, paused_until = self._limit(db, key)
            self._store_limit(db, key, (next_request, next_token, max(paused_until, time.time() + seconds)))

        self._write(pause)

    def pause_left(self, key: str) -> float:
        try:
            paused_until = self._limit(self._db, key)[2]
        except sqlite3.Error as error:
            raise LimitStoreError(f"{self.name} failed: {error}") from None
        return max(paused_until - time.time(), 0.0)

    def begin_request(self, key: str, request: str) -> None:
        self._write(lambda db: db.execute("INSERT OR REPLACE INTO in_flight VALUES (?, ?, ?)",
                                          (key, request, time.time())))

    def end_request(self, key: str, request: str, stale_after_s: float) -> int:
        def end(db: sqlite3.Connection) -> int:
            db.execute("DELETE FROM in_flight WHERE key = ? AND (request = ? OR started_at < ?)",
                       (key, request, time.time() - stale_after_s))
            return db.execute("SELECT COUNT(*) FROM in_flight WHERE key = ?", (key,)).fetchone()[0]

        return self._write(end)

    def _ledger(self, db: sqlite3.Connection, ledger: str) -> tuple[int, float, int, float]:
        row = db.execute("SELECT spent_tokens, spent_dollars, reserved_tokens, reserved_dollars FROM ledgers "
                         "WHERE ledger = ?", (ledger,)).fetchone()
        return row or (0, 0.0, 0, 0.0)

    def _store_ledger(self, db: sqlite3.Connection, ledger: str, state: tuple[int, float, int, float]) -> None:
        db.execute("INSERT INTO ledgers VALUES (?, ?, ?, ?, ?) ON CONFLICT (ledger) DO UPDATE SET "
                   "spent_tokens = excluded.spent_tokens, spent_dollars = excluded.spent_dollars, "
                   "reserved_tokens = excluded.reserved_tokens, reserved_dollars = excluded.reserved_dollars",
                   (ledger, *state))

    def reserve(self, ledger, tokens, dollars, max_tokens, max_dollars):
        def reserve(db: sqlite3.Connection) -> tuple[bool, int, float]:
            spent_tokens, spent_dollars, reserved_tokens, reserved_dollars = self._ledger(db, ledger)
            fits = (_fits(spent_tokens, reserved_tokens, tokens, max_tokens)
                    and _fits(spent_dollars, reserved_dollars, dollars, max_dollars))
            if fits:
                self._store_ledger(db, ledger, (spent_tokens, spent_dollars, reserved_tokens + tokens,
                                                reserved_dollars + dollars))
            return fits, spent_tokens, spent_dollars

        return self._write(reserve)

    def settle(self, ledger, reserved_tokens, reserved_dollars, tokens, dollars):
        def settle(db: sqlite3.Connection) -> None:
            state = self._ledger(db, ledger)
            self._store_ledger(db, ledger, (state[0] + tokens, state[1] + dollars, state[2] - reserved_tokens,
                                            state[3] - reserved_dollars))

        self._write(settle)

    def spent(self, ledger):
        try:
            state = self._ledger(self._db, ledger)
        except sqlite3.Error as error:
            raise LimitStoreError(f"{self.name} failed: {error}") from None
        return int(state[0]), float(state[1])

    def adaptations(self, key):
        try:
            return dict(self._db.execute("SELECT name, action FROM adaptations WHERE key = ?", (key,)).fetchall())
        except sqlite3.Error as error:
            raise LimitStoreError(f"{self.name} failed: {error}") from None

    def add_adaptation(self, key, name, action):
        return self._write(lambda db: db.execute("INSERT OR IGNORE INTO adaptations VALUES (?, ?, ?)",
                                                 (key, name, action)).rowcount == 1)

    def close(self) -> None:
        self._db.close()
