"""Two adapters judged against the same reference on the same questions: is the second worse, or is it noise?

Each question's margin is the adapter's two scores (both orders) minus the reference's;
the paired difference of the two adapters' margins per question gives wins, ties and
losses, and a bootstrap confidence interval of its mean. The second adapter is worse only
when the whole interval is below zero: a judge's noise on a few questions decides nothing.
With a per-question spread of ``s`` points, telling a mean drop of ``d`` points from noise
takes about ``(1.96 * s / d) ** 2`` questions (:func:`questions_needed`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

CONFIDENCE = 0.95
_RESAMPLES = 10_000


@dataclass(frozen=True)
class JudgedComparison:
    questions: int  # questions both adapters have a readable verdict on
    wins: int  # questions where the second adapter's margin over the reference is larger
    ties: int
    losses: int
    mean_difference: float | None  # points on the two orders' summed 1-10 scores
    ci_low: float | None
    ci_high: float | None

    @property
    def worse(self) -> bool:
        """Whether the second adapter is worse beyond the noise: the whole interval is below zero."""
        return self.ci_high is not None and self.ci_high < 0

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def _margins(table: pd.DataFrame) -> pd.Series:
    """Each question's margin of the adapter over the reference (NaN where a verdict was unreadable)."""
    def margin(candidate, reference) -> float:
        scores = [*candidate, *reference]
        if any(s is None or (isinstance(s, float) and np.isnan(s)) for s in scores):
            return float("nan")
        return float(sum(candidate) - sum(reference))

    return pd.Series([margin(c, r) for c, r in zip(table["candidate_scores"], table["reference_scores"])],
                     index=table["question"])


def compare_judged(first: pd.DataFrame, second: pd.DataFrame, seed: int = 0) -> JudgedComparison:
    """The second adapter against the first, from their judge tables (``judge.judge_table``)."""
    paired = pd.concat([_margins(first).rename("first"), _margins(second).rename("second")], axis=1,
                       join="inner").dropna()
    difference = (paired["second"] - paired["first"]).to_numpy()
    n = len(difference)
    wins, ties = int((difference > 0).sum()), int((difference == 0).sum())
    if n == 0:
        return JudgedComparison(0, 0, 0, 0, None, None, None)
    means = np.random.default_rng(seed).choice(difference, size=(_RESAMPLES, n), replace=True).mean(axis=1)
    tail = (1 - CONFIDENCE) / 2
    return JudgedComparison(n, wins, ties, n - wins - ties, round(float(difference.mean()), 4),
                            round(float(np.quantile(means, tail)), 4), round(float(np.quantile(means, 1 - tail)), 4))


def questions_needed(spread: float, drop: float) -> int:
    """Questions needed to tell a mean drop of ``drop`` points from noise when a question's difference spreads by
    ``spread`` points (its standard deviation), at 95%."""
    return int(np.ceil((1.96 * spread / drop) ** 2))
