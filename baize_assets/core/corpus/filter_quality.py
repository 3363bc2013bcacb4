"""Precision and recall of the text filters on labelled cases, synthetic and real.

The synthetic cases (core/corpus/labelled_cases.py) score the two text-only checks, each
run exactly as the corpus runs it, with the corpus settings in force: the unfinished-turn
check on final AI turns, the role-voice check on turns with their speaker. Precision is
the share of flagged cases that are defects, recall the share of defects flagged, and
``clean_kept`` the share of clean look-alikes left alone. With ``real_text_quality`` the
table also scores every text filter on hand-labelled real conversations
(core/corpus/real_text.py, which needs the realtext extra).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from ..config.corpus import CorpusConfig
from . import real_text
from .labelled_cases import ROLE_VOICE_CASES, UNFINISHED_CASES
from .role_voice import voice_mismatch
from .unfinished import unfinished_cause

SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class FilterQuality:
    cases: str
    filter: str
    target: str
    defective: int
    clean: int
    true_positives: int
    false_positives: int
    precision: float
    recall: float
    clean_kept: float


def _quality(name: str, target: str, flagged: np.ndarray, defective: np.ndarray) -> FilterQuality:
    true_positives = int((flagged & defective).sum())
    false_positives = int((flagged & ~defective).sum())
    flagged_count = true_positives + false_positives
    return FilterQuality(
        SYNTHETIC, name, target, int(defective.sum()), int((~defective).sum()), true_positives, false_positives,
        round(true_positives / flagged_count, 3) if flagged_count else 0.0,
        round(true_positives / int(defective.sum()), 3),
        round(1 - false_positives / int((~defective).sum()), 3),
    )  # fmt: skip


def unfinished_flags(config: CorpusConfig) -> np.ndarray:
    settings = config.unfinished_turns
    return np.array([settings.enabled and unfinished_cause(t, settings) is not None for t, _ in UNFINISHED_CASES])


def role_voice_flags(config: CorpusConfig) -> np.ndarray:
    if not config.role_voice.enabled:
        return np.zeros(len(ROLE_VOICE_CASES), dtype=bool)
    texts = pa.array([text for _, text, _ in ROLE_VOICE_CASES], type=pa.large_string())
    is_ai = np.array([role == "ai" for role, _, _ in ROLE_VOICE_CASES])
    return voice_mismatch(texts, is_ai, config.role_voice)


def filter_quality(config: CorpusConfig) -> list[FilterQuality]:
    """Both checks scored on their labelled cases under ``config``."""
    return [
        _quality("unfinished_turns", "cut", unfinished_flags(config), np.array([d for _, d in UNFINISHED_CASES])),
        _quality("role_voice", "other voice", role_voice_flags(config), np.array([d for _, _, d in ROLE_VOICE_CASES])),
    ]


def quality_table(config: CorpusConfig) -> pd.DataFrame:
    """Both checks on their labelled cases; with ``real_text_quality``, every text filter on real conversations too."""
    table = pd.DataFrame([asdict(q) for q in filter_quality(config)])
    if config.real_text_quality:
        table = pd.concat([table, real_text.real_text_quality(config)[0]], ignore_index=True)
    return table


def misjudged(config: CorpusConfig) -> dict[str, list[str]]:
    """The labelled cases each check gets wrong, as "missed: ..." / "false alarm: ..." lines."""
    cases = {
        "unfinished_turns": (unfinished_flags(config), [(t, d) for t, d in UNFINISHED_CASES]),
        "role_voice": (role_voice_flags(config), [(f"[{r}] {t}", d) for r, t, d in ROLE_VOICE_CASES]),
    }
    return {
        name: [f"{'missed' if defect else 'false alarm'}: {text!r}" for flag, (text, defect) in zip(flags, labelled)
               if flag != defect]
        for name, (flags, labelled) in cases.items()
    }  # fmt: skip
