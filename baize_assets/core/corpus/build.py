"""From raw teacher transcripts to the training corpus: parse, filter, record why.

Every transcript ends either as a kept conversation (its turns and its Baize training
text) or as a reject with exactly one reason code (:mod:`.reasons`). Nothing is dropped
silently: the reason of a reject is the first check it fails, parsing (:mod:`.parse`)
before the content filters (:mod:`.filters`), and the parts of a kept transcript that
were trimmed are counted. Filters are configured by ``corpus:`` in ``baize.yaml`` (see
``CorpusConfig``); the tables written follow :mod:`.schema`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from ..config.pipeline import CorpusConfig
from ..prompts import MARKER_ANYWHERE, Turn
from .filters import Candidates, apply_filters
from .parse import clean_text, parse_transcript
from .reasons import CONTENT_FILTER, EMPTY_TURN, INVALID_ROW, MARKER_IN_TURN, REASONS, TEACHER_FAILURE, TRIMS
from .schema import CONVERSATION_SCHEMA, REJECT_SCHEMA

# Bump when parsing or filtering changes what is kept: it is the conversations'
# code_version, so Dagster marks every corpus partition stale.
CORPUS_LOGIC_VERSION = "5"


@dataclass
class Corpus:
    conversations: pd.DataFrame
    rejects: pd.DataFrame
    # Every reason code and trim/scrub counter, zeros included, so each filter shows a count.
    counts: dict[str, int] = field(default_factory=dict)

    def reason_counts(self) -> dict[str, int]:
        return {reason: self.counts.get(reason, 0) for reason in REASONS}

    def adjustment_counts(self) -> dict[str, int]:
        return {k: v for k, v in self.counts.items() if k not in REASONS}


def _base(row: dict) -> tuple[dict, str | None]:
    """The identifying columns of a row, and what is wrong with them (None when nothing)."""
    base = {k: row.get(k) if isinstance(row.get(k), str) else None for k in ("seed_id", "seed", "source")}
    shard = row.get("shard")
    base["shard"] = (
        int(shard)
        if isinstance(shard, (int, np.integer)) or (isinstance(shard, float) and shard.is_integer())
        else None
    )
    missing = [k for k in ("seed_id", "source", "shard") if base[k] is None]
    return base, f"missing or invalid {', '.join(missing)}" if missing else None


def _filtered(candidates: Candidates, config: CorpusConfig, language: str | None, self_chat: bool) -> Corpus:
    rows = apply_filters(candidates, config, language, self_chat)
    rejects = [{k: v for k, v in r.items() if k != "_raw"} for r in candidates.rejects]
    return Corpus(
        pa.Table.from_pylist(rows, schema=CONVERSATION_SCHEMA).to_pandas(),
        pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA).to_pandas(),
        {**dict.fromkeys(REASONS + TRIMS, 0), **candidates.counts},
    )


def build_corpus(transcripts: pd.DataFrame, config: CorpusConfig, language: str | None = None) -> Corpus:
    """Parse and filter a transcripts table (see ``collect.transcript.TRANSCRIPT_SCHEMA``)."""
    candidates = Candidates()
    columns = {c: transcripts[c].tolist() if c in transcripts else [None] * len(transcripts) for c in (
        "seed_id", "seed", "source", "shard", "transcript", "finish_reason", "failure_kind", "failure_message"
    )}  # fmt: skip
    for position in range(len(transcripts)):
        row = {c: values[position] for c, values in columns.items()}
        base, invalid = _base(row)
        transcript = row["transcript"] if isinstance(row["transcript"], str) else None
        if isinstance(row["failure_kind"], str):
            candidates.reject(
                base, TEACHER_FAILURE, f"{row['failure_kind']}: {row['failure_message'] or ''}", transcript
            )
            continue
        if invalid:
            candidates.reject(base, INVALID_ROW, invalid, transcript)
            continue
        if row["finish_reason"] == CONTENT_FILTER:
            candidates.reject(base, CONTENT_FILTER, "finish_reason=content_filter", transcript)
            continue
        parsed = parse_transcript(
            transcript,
            truncated=row["finish_reason"] == "length",
            check_roles=config.role_confusion,
            keep_truncated=config.truncated == "keep_complete",
            unfinished=config.unfinished_turns,
        )
        if parsed.reason is not None:
            candidates.reject(base, parsed.reason, parsed.detail, transcript)
            continue
        for trim in parsed.trimmed:
            candidates.count(trim)
        candidates.bases.append({**base, "_raw": transcript})
        candidates.turns.append(parsed.turns)
    return _filtered(candidates, config, language, self_chat=True)


def single_turn_corpus(seeds: pd.DataFrame, config: CorpusConfig, language: str | None = None) -> Corpus:
    """Instruction/response seeds (Alpaca) as one-exchange conversations, through the same filters."""
    candidates = Candidates()
    for row in seeds.to_dict("records"):
        base, invalid = _base(row)
        seed, response = row.get("seed"), row.get("response")
        if invalid:
            candidates.reject(base, INVALID_ROW, invalid, None)
        elif not isinstance(seed, str) or not isinstance(response, str) or not seed.strip() or not response.strip():
            candidates.reject(base, EMPTY_TURN, "empty instruction or response", None)
        else:
            turns = [Turn("human", clean_text(seed).strip()), Turn("ai", clean_text(response).strip())]
            # The seed table quarantines these already; a table written by other means must not slip one through.
            marked = next(((i, t, m) for i, t in enumerate(turns) if (m := MARKER_ANYWHERE.search(t.text))), None)
            if marked:
                index, turn, match = marked
                candidates.reject(base, MARKER_IN_TURN, f"turn {index} ({turn.role}) contains '{match.group(0)}'", None)
                continue
            candidates.bases.append({**base, "_raw": None})
            candidates.turns.append(turns)
    return _filtered(candidates, config, language, self_chat=False)
