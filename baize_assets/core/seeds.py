"""Seed tables: read the public seed formats, normalize, dedupe, id and shard.

Each loader yields :class:`RawSeed` rows that remember their file and line, so a bad
row is reported (or quarantined) where a person can find it. A broken *file* (missing,
empty, wrong format or encoding) raises :class:`SeedFileError` naming the file and line;
a bad *row* (empty question) is quarantined and counted instead of failing the run.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import unicodedata
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .config import SourceConfig
from .storage import seed_id, shard_of

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

csv.field_size_limit(1 << 28)  # StackOverflow bodies can be long


class SeedFileError(ValueError):
    """A seed file cannot be read as its declared format."""

    def __init__(self, path: Path, message: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path, self.line = path, line


@dataclass(frozen=True)
class RawSeed:
    text: str | None
    origin: str  # "file:line" (or "file#row" for Parquet)
    context: str | None = None
    response: str | None = None


@dataclass
class SeedTable:
    seeds: pd.DataFrame
    quarantine: pd.DataFrame
    duplicates_dropped: int
    rows_read: int


_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFC, every run of whitespace to one space, trimmed."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


class _TextExtractor(HTMLParser):
    _BLOCK_TAGS = {"p", "br", "div", "li", "pre", "tr", "h1", "h2", "h3", "h4", "blockquote"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self._BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def strip_html(markup: str) -> str:
    """Plain text of an HTML fragment such as a StackOverflow body."""
    extractor = _TextExtractor()
    extractor.feed(markup)
    extractor.close()
    return html.unescape("".join(extractor.parts))


def _read_text(path: Path) -> str:
    if not path.exists():
        raise SeedFileError(path, "seed file not found")
    if path.is_dir():
        raise SeedFileError(path, "expected a file, found a directory")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SeedFileError(path, f"not valid UTF-8 (byte 0x{data[exc.start]:02x})", line) from None
    if not text.strip():
        raise SeedFileError(path, "file is empty")
    return text


def _find_column(path: Path, header: list[str], wanted: str, line: int = 1) -> str:
    by_lower = {name.strip().lower(): name for name in header}
    if wanted.lower() not in by_lower:
        raise SeedFileError(
            path, f"missing column '{wanted}' (found: {', '.join(map(str, header)) or 'none'})", line
        )
    return by_lower[wanted.lower()]


def _csv_rows(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a delimited file with the line each starts on; the header is required."""
    text = _read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    if not reader.fieldnames:
        raise SeedFileError(path, "no header row", 1)
    start = reader.line_num + 1
    for row in reader:
        if None in row:  # more fields than the header names
            fields = len(reader.fieldnames) + len(row[None])
            raise SeedFileError(path, f"row has {fields} fields, the header names {len(reader.fieldnames)}", start)
        yield start, row
        start = reader.line_num + 1


def _delimited(path: Path, delimiter: str, text_column: str, context_column: str | None = None) -> Iterator[RawSeed]:
    rows = _csv_rows(path, delimiter)
    first = next(rows, None)
    if first is None:
        raise SeedFileError(path, "file has a header but no rows", 2)
    header = list(first[1].keys())
    column = _find_column(path, header, text_column)
    has_context = context_column is not None and context_column.lower() in {h.lower() for h in header}
    context = _find_column(path, header, context_column) if has_context else None
    for line, row in [first, *rows]:
        yield RawSeed(
            text=row.get(column),
            origin=f"{path.name}:{line}",
            context=strip_html(row[context]) if context and row.get(context) else None,
        )


def _parquet(path: Path, text_column: str, context_column: str | None = None) -> Iterator[RawSeed]:
    if not path.exists():
        raise SeedFileError(path, "seed file not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SeedFileError(path, f"not a readable Parquet file ({exc})") from None
    if table.num_rows == 0:
        raise SeedFileError(path, "file has no rows")
    column = _find_column(path, table.column_names, text_column, line=None)
    context = next((c for c in table.column_names if context_column and c.lower() == context_column.lower()), None)
    texts = table.column(column).to_pylist()
    bodies = table.column(context).to_pylist() if context else [None] * len(texts)
    for row, (text, body) in enumerate(zip(texts, bodies)):
        yield RawSeed(text=text, origin=f"{path.name}#row{row}", context=strip_html(body) if body else None)


def _medquad_xml(path: Path) -> Iterator[RawSeed]:
    files = sorted(path.glob("**/*.xml")) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise SeedFileError(path, "directory holds no .xml MedQuAD documents")
    for file in files:
        text = _read_text(file)
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            raise SeedFileError(file, f"not well-formed XML ({exc})", exc.position[0]) from None
        pairs = root.findall(".//QAPair")
        if root.tag != "Document" or not pairs:
            raise SeedFileError(file, "not a MedQuAD document (expected <Document> with <QAPair> elements)", 1)
        for number, pair in enumerate(pairs, start=1):
            question = pair.find("Question")
            yield RawSeed(
                text=question.text if question is not None else None,
                origin=f"{file.name}#QAPair{pair.get('pid', number)}",
            )


def _alpaca_json(path: Path) -> Iterator[RawSeed]:
    text = _read_text(path)
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SeedFileError(path, f"not valid JSON ({exc.msg})", exc.lineno) from None
    if not isinstance(records, list):
        raise SeedFileError(path, "expected a JSON array of {instruction, input, output} objects", 1)
    for index, record in enumerate(records):
        origin = f"{path.name}[{index}]"
        if not isinstance(record, dict) or "instruction" not in record or "output" not in record:
            yield RawSeed(text=None, origin=origin)
            continue
        instruction = str(record.get("instruction") or "")
        extra = str(record.get("input") or "").strip()
        output = str(record.get("output") or "")
        yield RawSeed(
            text=f"{instruction}\n\n{extra}" if extra and instruction.strip() else instruction,
            origin=origin,
            response=output if output.strip() else None,
        )


def _jsonl(path: Path, field: str) -> Iterator[RawSeed]:
    for line_no, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SeedFileError(path, f"not valid JSON ({exc.msg})", line_no) from None
        if not isinstance(record, dict):
            raise SeedFileError(path, "each line must be a JSON object", line_no)
        value = record.get(field)
        yield RawSeed(text=value if isinstance(value, str) else None, origin=f"{path.name}:{line_no}")


def _plain_text(path: Path) -> Iterator[RawSeed]:
    for line_no, line in enumerate(_read_text(path).splitlines(), start=1):
        if line.strip():
            yield RawSeed(text=line, origin=f"{path.name}:{line_no}")


def _stackoverflow(path: Path) -> Iterator[RawSeed]:
    """StackOverflow ships as the StackSample CSV or as Parquet; the title is the seed."""
    if path.suffix == ".parquet":
        return _parquet(path, "title", "body")
    return _delimited(path, ",", "Title", "Body")


def _medquad(path: Path) -> Iterator[RawSeed]:
    """MedQuAD ships as XML documents (a file or a folder of them) or as a CSV."""
    if path.suffix == ".csv":
        return _delimited(path, ",", "question")
    return _medquad_xml(path)


def _loader(source: SourceConfig) -> Callable[[Path], Iterator[RawSeed]]:
    field = source.text_field or ""
    loaders: dict[str, Callable[[Path], Iterator[RawSeed]]] = {
        "quora_tsv": lambda path: _delimited(path, "\t", "question1"),
        "stackoverflow": _stackoverflow,
        "medquad": _medquad,
        "alpaca_json": _alpaca_json,
        "csv": lambda path: _parquet(path, field) if path.suffix == ".parquet" else _delimited(path, ",", field),
        "jsonl": lambda path: _jsonl(path, field),
        "text": _plain_text,
    }
    return loaders[source.format]


def load_seed_table(source: SourceConfig, root: Path | None = None) -> SeedTable:
    """Read every file of a source into one normalized, deduplicated, sharded table."""
    load = _loader(source)
    rows: list[dict] = []
    quarantine: list[dict] = []
    seen: set[str] = set()
    duplicates = rows_read = 0
    paths = source.resolved_paths(root) if root else source.resolved_paths()
    for path in paths:
        if not path.exists():
            raise SeedFileError(path, f"seed file of source '{source.name}' not found")
        for raw in load(path):
            rows_read += 1
            text = normalize_text(raw.text) if isinstance(raw.text, str) else ""
            if not text:
                quarantine.append({"origin": raw.origin, "reason": "empty question", "raw": raw.text})
                continue
            if not source.is_self_chat and not raw.response:
                quarantine.append({"origin": raw.origin, "reason": "empty response", "raw": raw.text})
                continue
            identity = seed_id(text)
            if identity in seen:
                duplicates += 1
                continue
            seen.add(identity)
            rows.append(
                {
                    "seed_id": identity,
                    "seed": text,
                    "source": source.name,
                    "shard": shard_of(identity, source.shards),
                    "origin": raw.origin,
                    "context": normalize_text(raw.context) if raw.context else None,
                    "response": raw.response.strip() if raw.response else None,
                }
            )
    seeds = pa.Table.from_pylist(rows, schema=SEED_SCHEMA).to_pandas()
    return SeedTable(
        seeds=seeds,
        quarantine=pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA).to_pandas(),
        duplicates_dropped=duplicates,
        rows_read=rows_read,
    )
