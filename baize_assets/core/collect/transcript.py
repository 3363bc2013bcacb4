"""The raw transcript a teacher writes: its table's schema, and the guards over its text.

A transcripts row holds the raw ``[Human]``/``[AI]`` text as the teacher wrote it (cut
only by the loop guards below), or a failure kind and message; the corpus parses it.
"""

from __future__ import annotations

import re

import pandas as pd
import pyarrow as pa

from ..prompts import RAW_AI, RAW_HUMAN

TRANSCRIPT_SCHEMA = pa.schema(
    [
        ("seed_id", pa.string()),
        ("seed", pa.string()),
        ("source", pa.string()),
        ("shard", pa.int32()),
        ("prompt_version", pa.string()),
        ("model", pa.string()),
        ("temperature", pa.float64()),
        ("max_tokens", pa.int64()),
        ("transcript", pa.string()),
        ("finish_reason", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("reasoning_tokens", pa.int64()),  # part of completion_tokens: the hidden reasoning of the answer(s)
        ("total_tokens", pa.int64()),
        ("failure_kind", pa.string()),
        ("failure_message", pa.string()),
        ("generation_mode", pa.string()),
        ("ended_by", pa.string()),
        ("api_calls", pa.int64()),
        ("dollars", pa.float64()),
        ("cached", pa.bool_()),
        ("cache_key", pa.string()),
    ]
)

_RAW_MARKER = re.compile(f"{re.escape(RAW_HUMAN)}|{re.escape(RAW_AI)}", re.IGNORECASE)


def transcripts_frame(rows: list[dict]) -> pd.DataFrame:
    """A collection's rows as the transcripts table, in seed-id order (the order does not depend on timing)."""
    frame = pa.Table.from_pylist(rows, schema=TRANSCRIPT_SCHEMA).to_pandas()
    return frame.sort_values("seed_id", kind="stable").reset_index(drop=True)


def same_text(text: str) -> str:
    """Text compared for repetition: lower case, whitespace collapsed."""
    return " ".join(text.lower().split())


def guard_transcript(text: str, max_rounds: int) -> tuple[str, str | None]:
    """Cut a v1 transcript before its first repeated turn or its ``max_rounds + 1``-th human turn.

    Returns the (possibly cut) raw text and why it was cut, or None.
    """
    seen: set[tuple[str, str]] = set()
    humans = 0
    matches = list(_RAW_MARKER.finditer(text))
    for match, following in zip(matches, matches[1:] + [None]):
        role = "human" if match.group(0).lower() == RAW_HUMAN.lower() else "ai"
        body = same_text(text[match.end() : following.start() if following else len(text)])
        if role == "human":
            humans += 1
            if humans > max_rounds:
                return text[: match.start()].rstrip(), "max_turns"
        if (role, body) in seen:
            return text[: match.start()].rstrip(), "repeated_turn"
        seen.add((role, body))
    return text, None


def has_markers(text: str) -> bool:
    """Whether a v1 answer has both markers, as a transcript must."""
    lowered = text.lower()
    return RAW_HUMAN.lower() in lowered and RAW_AI.lower() in lowered


def human_statement(text: str) -> str:
    """The first human statement of a v1.5 human-turn answer, without its marker."""
    text = text.strip()
    if text.lower().startswith(RAW_HUMAN.lower()):
        text = text[len(RAW_HUMAN) :]
    return _RAW_MARKER.split(text, maxsplit=1)[0].strip()
