"""Seed tables: read the public seed formats, normalize, check, dedupe, id and shard.

The readers (:mod:`.seed_formats`) yield rows that remember their file and line, so a
bad row is reported (or quarantined) where a person can find it. A broken *file*
(missing, empty, wrong format or encoding) raises :class:`SeedFileError` naming the file
and line; inside a folder (one MedQuAD document of thousands) it is quarantined instead,
per the source's ``on_bad_file``. A bad *row* is quarantined with a reason and counted:
empty, too long, holding control characters, or holding text that would be read as
the chat format itself (a ``[|Human|]`` / ``[AI]`` marker, the self-chat prompt's
``[END]`` or the words closing its topic quote). Other prompt-injection wording stays:
it cannot break the format, and the corpus filters judge what the teacher made of it.
A source left with no seed at all fails, naming its files.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd
import pyarrow as pa

from ..config.pipeline import SourceConfig
from ..prompts import MARKER_ANYWHERE, SELF_CHAT_TEMPLATE
from ..storage import seed_id, shard_of
from .formats import RawSeed, SeedFileError, folder_files, loader, strip_html as strip_html

SEED_SCHEMA = pa.schema(
    [
        ("seed_id", pa.string()),
        ("seed", pa.string()),
        ("source", pa.string()),
        ("shard", pa.int32()),
        ("origin", pa.string()),
        ("context", pa.string()),
        ("response", pa.string()),
    ]
)
QUARANTINE_SCHEMA = pa.schema([("origin", pa.string()), ("reason", pa.string()), ("raw", pa.string())])

EMPTY_QUESTION = "empty question"
EMPTY_RESPONSE = "empty response"
SEED_TOO_LONG = "seed too long"
CONTROL_IN_SEED = "control character in seed"
CONTROL_IN_RESPONSE = "control character in response"
MARKER_IN_SEED = "chat marker in seed"
MARKER_IN_RESPONSE = "chat marker in response"
DELIMITER_IN_SEED = "prompt delimiter in seed"
# Counted under this reason; the file's quarantine row holds its parse error as reason.
BAD_FILE = "bad file"

# The quarantine keeps the start of a rejected text, enough to recognize it.
QUARANTINE_RAW_CHARS = 2000

_WHITESPACE = re.compile(r"\s+")
# C0 controls other than whitespace, and DEL: no question holds them (a NUL is binary junk).
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
# The v1.5 prompt's end-of-conversation marker, with the chat markers' tolerance.
_END_MARKER = re.compile(r"[\[［]\s*\|?\s*end\s*\|?\s*[\]］]", re.IGNORECASE)
# The self-chat prompt quotes the seed as '{seed}'; the words after the closing quote
# ("'. Every statement") in a seed would end the topic early and go on as prompt text.
_TOPIC_QUOTE_END = SELF_CHAT_TEMPLATE.partition("{seed}")[2].partition(" of the")[0].casefold()


@dataclass
class SeedTable:
    seeds: pd.DataFrame
    quarantine: pd.DataFrame
    duplicates_dropped: int
    rows_read: int
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    quarantined_files: int = 0


def normalize_text(text: str) -> str:
    """NFC, every run of whitespace to one space, trimmed."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def normalize_lines(text: str) -> str:
    """:func:`normalize_text` line by line, blank lines dropped: an instruction stays apart from its input."""
    lines = (normalize_text(line) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def _seed_problem(raw: RawSeed, text: str, source: SourceConfig) -> str | None:
    """The quarantine reason of a row whose seed is ``text`` (normalized), or None to keep it."""
    if not text:
        return EMPTY_QUESTION
    if _CONTROL.search(raw.text or ""):
        return CONTROL_IN_SEED
    if len(text) > source.max_seed_chars:
        return SEED_TOO_LONG
    if MARKER_ANYWHERE.search(text):
        return MARKER_IN_SEED
    if source.is_self_chat:
        if _END_MARKER.search(text):
            return MARKER_IN_SEED
        return DELIMITER_IN_SEED if _TOPIC_QUOTE_END in text.casefold() else None
    if not raw.response:
        return EMPTY_RESPONSE
    if _CONTROL.search(raw.response):
        return CONTROL_IN_RESPONSE
    return MARKER_IN_RESPONSE if MARKER_ANYWHERE.search(raw.response) else None


class _TableBuilder:
    """Checks, dedupes and shards rows into a :class:`SeedTable`."""

    def __init__(self, source: SourceConfig):
        self.source = source
        self.rows: list[dict] = []
        self.quarantine: list[dict] = []
        self.by_reason: Counter[str] = Counter()
        self.seen: set[str] = set()
        self.duplicates = self.rows_read = self.bad_files = 0

    def add(self, raws: Iterable[RawSeed]) -> None:
        # Self-chat seeds become one line inside the prompt; single-turn ones keep their lines.
        normalize = normalize_text if self.source.is_self_chat else normalize_lines
        for raw in raws:
            self.rows_read += 1
            text = normalize(raw.text) if isinstance(raw.text, str) else ""
            if problem := _seed_problem(raw, text, self.source):
                about_response = problem in (CONTROL_IN_RESPONSE, MARKER_IN_RESPONSE)
                self._quarantine(raw.origin, problem, raw.response if about_response else raw.text)
                continue
            identity = seed_id(text)
            if identity in self.seen:
                self.duplicates += 1
                continue
            self.seen.add(identity)
            self.rows.append(
                {
                    "seed_id": identity,
                    "seed": text,
                    "source": self.source.name,
                    "shard": shard_of(identity, self.source.shards),
                    "origin": raw.origin,
                    "context": normalize_text(raw.context) if raw.context else None,
                    "response": raw.response.strip() if raw.response else None,
                }
            )

    def add_bad_file(self, error: SeedFileError) -> None:
        where = f"line {error.line}: " if error.line is not None else ""
        self.bad_files += 1
        self._quarantine(str(error.path), where + error.message, None, counted_as=BAD_FILE)

    def _quarantine(self, origin: str, reason: str, raw: str | None, counted_as: str | None = None) -> None:
        self.by_reason[counted_as or reason] += 1
        self.quarantine.append({"origin": origin, "reason": reason, "raw": raw[:QUARANTINE_RAW_CHARS] if raw else raw})

    def no_seeds_error(self, paths: list[Path], first_bad_file: SeedFileError | None) -> SeedFileError:
        name = self.source.name
        if first_bad_file is not None and self.rows_read == 0:
            return SeedFileError(
                first_bad_file.path,
                f"every file of source '{name}' is broken ({self.bad_files}); this one: {first_bad_file.message}",
                first_bad_file.line,
            )
        counts = ", ".join(f"{count} {reason}" for reason, count in self.by_reason.most_common())
        example = f"; e.g. {self.quarantine[0]['origin']}: {self.quarantine[0]['reason']}" if self.quarantine else ""
        return SeedFileError(
            paths[0], f"source '{name}' has no usable seed: {self.rows_read} rows read, quarantined: {counts}{example}"
        )

    def table(self) -> SeedTable:
        return SeedTable(
            seeds=pa.Table.from_pylist(self.rows, schema=SEED_SCHEMA).to_pandas(),
            quarantine=pa.Table.from_pylist(self.quarantine, schema=QUARANTINE_SCHEMA).to_pandas(),
            duplicates_dropped=self.duplicates,
            rows_read=self.rows_read,
            quarantined_by_reason=dict(self.by_reason),
            quarantined_files=self.bad_files,
        )


def load_seed_table(source: SourceConfig, root: Path | None = None) -> SeedTable:
    """Read every file of a source into one normalized, checked, deduplicated, sharded table."""
    load = loader(source)
    builder = _TableBuilder(source)
    first_bad_file: SeedFileError | None = None
    paths = source.resolved_paths(root) if root else source.resolved_paths()
    for path in paths:
        if not path.exists():
            raise SeedFileError(path, f"seed file of source '{source.name}' not found")
        if not path.is_dir():
            builder.add(load(path))  # a file named in the configuration must be readable
            continue
        for file in folder_files(source, path):
            try:
                raws = list(load(file))  # whole, so that a file broken half-way adds no row
            except SeedFileError as exc:
                if source.on_bad_file == "fail":
                    raise
                first_bad_file = first_bad_file or exc
                builder.add_bad_file(exc)
                continue
            builder.add(raws)
    if not builder.rows:
        raise builder.no_seeds_error(paths, first_bad_file)
    return builder.table()
