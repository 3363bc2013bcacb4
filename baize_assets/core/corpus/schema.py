"""The conversation and reject tables the corpus writes: what training, checks and exports read.

Readers of a conversations table take its schema, its turns and its fingerprint from
here, never from the builder, so none of them depends on how the corpus is built.
"""

import hashlib

import pandas as pd
import pyarrow as pa

from ..prompts import Turn

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
        # MinHash signature of the turns' word shingles and the scheme that made it
        # (``dedup.signature_version``); the training set compares them.
        ("minhash", pa.list_(pa.uint32())),
        ("minhash_version", pa.string()),
    ]
)
REJECT_SCHEMA = pa.schema(
    [
        ("seed_id", pa.string()),
        ("seed", pa.string()),
        ("source", pa.string()),
        ("shard", pa.int32()),
        ("reason", pa.string()),  # one of ``reasons.REASONS``
        ("detail", pa.string()),
        ("transcript", pa.string()),
    ]
)


def turns_of(conversations: pd.DataFrame) -> list[list[Turn]]:
    """The turns column of a conversations table as :class:`Turn` lists."""
    return [[Turn(t["role"], t["text"]) for t in turns] for turns in conversations["turns"]]


def data_version(conversations: pd.DataFrame) -> str:
    """Fingerprint of a training set: changes when any kept conversation changes."""
    digest = hashlib.sha256()
    for seed_id, text in sorted(zip(conversations["seed_id"], conversations["text"])):
        digest.update(f"{seed_id}\0{text}\0".encode())
    return digest.hexdigest()[:16]


def schema_problems(table: pa.Table) -> list[str]:
    """What keeps a written conversations table from being training input: schema, empty turns."""
    present = {f.name: f.type for f in table.schema}
    problems = [
        f"column '{f.name}' is {present[f.name]}, expected {f.type}" if f.name in present else f"no column '{f.name}'"
        for f in CONVERSATION_SCHEMA
        if not present.get(f.name, pa.null()).equals(f.type)
    ]
    if problems:
        return problems
    for row, (seed_id, turns, text) in enumerate(
        zip(table["seed_id"].to_pylist(), table["turns"].to_pylist(), table["text"].to_pylist())
    ):
        where = f"row {row} (seed_id {seed_id})"
        if not turns or len(turns) % 2:
            problems.append(f"{where}: {len(turns or [])} turns, expected complete exchanges")
        elif any(not (t["text"] or "").strip() for t in turns):
            problems.append(f"{where}: empty turn")
        elif [t["role"] for t in turns] != ["human", "ai"] * (len(turns) // 2):
            problems.append(f"{where}: roles do not alternate human/ai")
        elif not text:
            problems.append(f"{where}: empty training text")
        if len(problems) >= 20:
            break
    return problems
