"""Tokens into dollars, and the per-run budget, kept in a ledger that every step shares.

A run's transcript steps may run in separate processes (Dagster's multiprocess
executor, Celery workers on other machines), so the run's spending lives in one
ledger of the shared limit store (:mod:`.shared_limits`), keyed by run id: each request
reserves its worst case there against the run's cap, atomically, before it is sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.pipeline import BudgetConfig, ModelPrice
from .shared_limits import LimitStore


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
    completion) in the ledger while in flight and settles its real usage when it ends,
    so across every process of the run the cap is passed by at most what the requests
    in flight use beyond their estimate. Without a cap the ledger is written once, at
    the end, for the run's totals.
    """

    def __init__(self, config: BudgetConfig, price: ModelPrice | None, store: LimitStore, ledger: str) -> None:
        self.config = config
        self.price = price
        self.store = store
        self.ledger = ledger
        self.capped = config.max_tokens is not None or config.max_dollars is not None
        self.spent_tokens = 0  # by this collection
        self.spent_dollars = 0.0
        self.elsewhere_tokens = 0  # by the rest of the run, as of the last reservation
        self.elsewhere_dollars = 0.0
        self._reserved_tokens = 0
        self._reserved_dollars = 0.0
        self.exhausted = False

    def reserve(self, prompt_tokens: int, completion_tokens: int) -> Reservation | None:
        """Reserve a request's worst case; None (and exhausted from now on) when it does not fit."""
        if self.exhausted:
            return None
        reservation = Reservation(prompt_tokens + completion_tokens,
                                  dollars(self.price, prompt_tokens, completion_tokens) or 0.0)
        if self.capped:
            fits, run_tokens, run_dollars = self.store.reserve(
                self.ledger, reservation.tokens, reservation.dollars, self.config.max_tokens, self.config.max_dollars
            )
            self.elsewhere_tokens = run_tokens - self.spent_tokens
            self.elsewhere_dollars = run_dollars - self.spent_dollars
            if not fits:
                self.exhausted = True
                return None
        self._reserved_tokens += reservation.tokens
        self._reserved_dollars += reservation.dollars
        return reservation

    def settle(self, reservation: Reservation, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """End a reservation, charging what the request really used (nothing if it failed)."""
        used_tokens = prompt_tokens + completion_tokens
        used_dollars = dollars(self.price, prompt_tokens, completion_tokens) or 0.0
        self._reserved_tokens -= reservation.tokens
        self._reserved_dollars -= reservation.dollars
        self.spent_tokens += used_tokens
        self.spent_dollars += used_dollars
        if self.capped:
            self.store.settle(self.ledger, reservation.tokens, reservation.dollars, used_tokens, used_dollars)

    def run_spending(self) -> str:
        """What the whole run had spent at the last reservation, for the message of a seed left unasked."""
        spent = f"{self.elsewhere_tokens + self.spent_tokens} tokens"
        if self.price is not None:
            spent += f", ${self.elsewhere_dollars + self.spent_dollars:.4f}"
        return spent

    def close(self) -> None:
        """Release what requests cut short still hold; record the spending of an uncapped collection."""
        if self.capped:
            if self._reserved_tokens or self._reserved_dollars:
                self.store.settle(self.ledger, self._reserved_tokens, self._reserved_dollars, 0, 0.0)
        elif self.spent_tokens or self.spent_dollars:
            self.store.settle(self.ledger, 0, 0.0, self.spent_tokens, self.spent_dollars)
        self._reserved_tokens, self._reserved_dollars = 0, 0.0
