"""From raw teacher transcripts to the training corpus: parse, filter, record why.

Every transcript ends either as a kept conversation (its turns and its Baize training
text) or as a reject with exactly one reason code. Nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from .prompts import Turn, render_conversation

# Bump when parsing or filtering changes what is kept: it is the conversations'
# code_version, so Dagster marks every corpus partition stale.
CORPUS_LOGIC_VERSION = "1"

# Reason codes of the rejects table.
TEACHER_FAILURE = "teacher_failure"
EMPTY_TRANSCRIPT = "empty_transcript"
NO_TURNS = "no_parsable_turns"
EMPTY_TURN = "empty_turn"
ROLE_CONFUSION = "role_confusion"
REFUSAL = "refusal"
OPENAI_MENTION = "openai_mention"

TURN_TYPE = pa.struct([("role", pa.string()), ("text", pa.string())])
CONVERSATION_SCHEMA = pa.schema(
    [
        ("seed_id", pa.string()),
        ("seed", pa.string()),
        ("source", pa.string()),
        ("shard", pa.int32()),
        ("turns", pa.list_(TURN_TYPE)),
        ("n_exchanges", pa.int32()),
        ("text", pa.string()),
    ]
)
REJECT_SCHEMA = pa.schema(
    [
        ("seed_id", pa.string()),
        ("seed", pa.string()),
        ("source", pa.string()),
        ("shard", pa.int32()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("transcript", pa.string()),
    ]
)

# A marker: "[Human]" / "[AI]", tolerant of case and inner spaces, with an optional colon.
_MARKER = re.compile(r"\[\s*(human|ai)\s*\]\s*:?", re.IGNORECASE)
# A speaker label written inside a turn ("Human: ...", "AI: ...") at a line start.
_INNER_SPEAKER = re.compile(r"(?im)^\s*(human|ai|assistant|user)\s*:")
# The one-exchange example that ends the self-chat prompt; teachers often echo it.
_EXAMPLE_EXCHANGE = (("human", "hello!"), ("ai", "hi! how can i help you?"))

_REFUSAL = re.compile(
    r"as an ai language model|as a language model|as an ai(?: assistant)?,|i am an ai language model"
    r"|i'm (?:just )?an ai(?: language model)?|i(?:'m| am) sorry, but i (?:cannot|can't|am unable)"
    r"|i cannot (?:fulfill|comply|provide assistance)|i'm not able to (?:help|assist) with that",
    re.IGNORECASE,
)
_OPENAI_MENTION = re.compile(r"\bopen\s?ai\b|\bchat\s?gpt\b|\bgpt-?(?:3(?:\.5)?|4)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Parsed:
    turns: list[Turn]
    reason: str | None = None
    detail: str | None = None


def parse_transcript(transcript: str | None) -> Parsed:
    """Split a raw ``[Human]`` / ``[AI]`` transcript into alternating turns.

    Text before the first marker is dropped, an echoed prompt example is dropped, and
    (unlike Baize's parser) the last exchange is kept. A trailing human turn with no
    answer is dropped, since training needs complete exchanges.
    """
    if transcript is None or not transcript.strip():
        return Parsed([], EMPTY_TRANSCRIPT)
    text = transcript.replace("\r\n", "\n").replace("\r", "\n")
    matches = list(_MARKER.finditer(text))
    if not matches:
        return Parsed([], NO_TURNS, "no [Human]/[AI] marker")
    turns: list[Turn] = []
    for match, following in zip(matches, matches[1:] + [None]):
        role = "human" if match.group(1).lower() == "human" else "ai"
        body = text[match.end() : following.start() if following else len(text)].strip()
        turns.append(Turn(role, body))
    if turns and turns[0].role == "ai":
        return Parsed(turns, ROLE_CONFUSION, "transcript starts with an AI turn")
    if tuple((t.role, t.text.lower()) for t in turns[:2]) == _EXAMPLE_EXCHANGE:
        turns = turns[2:]
    if turns and turns[-1].role == "human":
        turns = turns[:-1]
    if not turns:
        return Parsed([], NO_TURNS, "no complete exchange")
    for index, turn in enumerate(turns):
        if not turn.text:
            return Parsed(turns, EMPTY_TURN, f"turn {index} ({turn.role}) is empty")
        expected = "human" if index % 2 == 0 else "ai"
        if turn.role != expected:
            return Parsed(turns, ROLE_CONFUSION, f"turn {index} is {turn.role}, expected {expected}")
        if _INNER_SPEAKER.search(turn.text):
            return Parsed(turns, ROLE_CONFUSION, f"turn {index} ({turn.role}) speaks for another role")
    return Parsed(turns)


def content_rejection(turns: list[Turn]) -> tuple[str, str] | None:
    """The first content filter a parsed conversation fails, as (reason, detail)."""
    for index, turn in enumerate(turns):
        if turn.role == "ai" and (match := _REFUSAL.search(turn.text)):
            return REFUSAL, f"turn {index}: '{match.group(0)}'"
    for index, turn in enumerate(turns):
        if match := _OPENAI_MENTION.search(turn.text):
            return OPENAI_MENTION, f"turn {index}: '{match.group(0)}'"
    return None


def _conversation_row(base: dict, turns: list[Turn]) -> dict:
    return {
        **base,
        "turns": [t.as_dict() for t in turns],
        "n_exchanges": sum(t.role == "ai" for t in turns),
        "text": render_conversation(turns),
    }


@dataclass
class Corpus:
    conversations: pd.DataFrame
    rejects: pd.DataFrame

    def reason_counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.rejects["reason"].value_counts().sort_index().items()}


def _frames(kept: list[dict], rejected: list[dict]) -> Corpus:
    return Corpus(
        pa.Table.from_pylist(kept, schema=CONVERSATION_SCHEMA).to_pandas(),
        pa.Table.from_pylist(rejected, schema=REJECT_SCHEMA).to_pandas(),
    )


def build_corpus(transcripts: pd.DataFrame) -> Corpus:
    """Parse and filter a transcripts table (see ``selfchat.TRANSCRIPT_SCHEMA``)."""
    kept: list[dict] = []
    rejected: list[dict] = []
    for row in transcripts.to_dict("records"):
        base = {k: row[k] for k in ("seed_id", "seed", "source")} | {"shard": int(row["shard"])}
        transcript = row.get("transcript")
        transcript = transcript if isinstance(transcript, str) else None
        if isinstance(row.get("failure_kind"), str):
            reason, detail = TEACHER_FAILURE, f"{row['failure_kind']}: {row.get('failure_message') or ''}"
        else:
            parsed = parse_transcript(transcript)
            reason, detail = parsed.reason, parsed.detail
            if reason is None and (rejection := content_rejection(parsed.turns)):
                reason, detail = rejection
        if reason is None:
            kept.append(_conversation_row(base, parsed.turns))
        else:
            rejected.append({**base, "reason": reason, "detail": detail, "transcript": transcript})
    return _frames(kept, rejected)


def single_turn_corpus(seeds: pd.DataFrame) -> Corpus:
    """Instruction/response seeds (Alpaca) as one-exchange conversations, content-filtered."""
    kept: list[dict] = []
    rejected: list[dict] = []
    for row in seeds.to_dict("records"):
        base = {k: row[k] for k in ("seed_id", "seed", "source")} | {"shard": int(row["shard"])}
        turns = [Turn("human", row["seed"]), Turn("ai", row["response"])]
        if rejection := content_rejection(turns):
            rejected.append({**base, "reason": rejection[0], "detail": rejection[1], "transcript": None})
        else:
            kept.append(_conversation_row(base, turns))
    return _frames(kept, rejected)


def turns_of(conversations: pd.DataFrame) -> list[list[Turn]]:
    """The turns column of a conversations table as :class:`Turn` lists."""
    return [[Turn(t["role"], t["text"]) for t in turns] for turns in conversations["turns"]]


def data_version(conversations: pd.DataFrame) -> str:
    """Fingerprint of a training set: changes when any kept conversation changes."""
    digest = hashlib.sha256()
    for seed_id, text in sorted(zip(conversations["seed_id"], conversations["text"])):
        digest.update(f"{seed_id}\0{text}\0".encode())
    return digest.hexdigest()[:16]
