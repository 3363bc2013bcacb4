"""Readers of the public seed formats, one file at a time.

Each reader yields :class:`RawSeed` rows that remember their file and line. Delimited,
JSON-lines and text files are read line by line, so a file of any size is parsed in
bounded memory; JSON arrays, XML documents and Parquet are read whole, as their
formats require. A file that cannot be read as its format raises :class:`SeedFileError`
with its path and line.
"""

from __future__ import annotations

import codecs
import csv
import html
import itertools
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..config.pipeline import SourceConfig

csv.field_size_limit(1 << 28)  # StackOverflow bodies can be long
# A text file has no NUL byte in its first bytes; a binary one, or UTF-16 read as UTF-8, has.
_SNIFF_BYTES = 8192


class SeedFileError(ValueError):
    """A seed file cannot be read as its declared format."""

    def __init__(self, path: Path, message: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.message = path, line, message


@dataclass(frozen=True)
class RawSeed:
    text: str | None
    origin: str  # "file:line" (or "file#row" for Parquet)
    context: str | None = None
    response: str | None = None


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


def _decode_error(path: Path, source: SourceConfig, byte: int, line: int) -> SeedFileError:
    if source.is_utf8:
        hint = f"; set `encoding: latin-1` on source '{source.name}' if the file is ISO-8859-1 (cp1252 for Windows)"
        return SeedFileError(path, f"not valid UTF-8 (byte 0x{byte:02x}){hint}", line)
    return SeedFileError(path, f"not valid {source.encoding} (byte 0x{byte:02x}); check `encoding` of source "
                               f"'{source.name}'", line)  # fmt: skip


def text_lines(path: Path, source: SourceConfig) -> Iterator[tuple[int, str]]:
    """``(line number, line with its line end)`` of a text file, decoded as the source says.

    Reads one line at a time. A UTF-8 byte-order mark is dropped; a decoding error, NUL
    bytes at the start (a binary file) or a file of only blank lines raise SeedFileError.
    """
    if not path.exists():
        raise SeedFileError(path, "seed file not found")
    if path.is_dir():
        raise SeedFileError(path, "expected a file, found a directory")
    decoder = codecs.getincrementaldecoder(source.encoding)("strict")
    seen_text, number, pending = False, 0, ""
    with path.open("rb") as stream:
        _refuse_binary(path, source, stream.read(_SNIFF_BYTES))
        stream.seek(0)
        # Split after decoding: in UTF-16 a newline's bytes are not one b"\n".
        for raw in iter(stream.readline, b""):
            try:
                pending += decoder.decode(raw)
            except UnicodeDecodeError as exc:
                raise _decode_error(path, source, exc.object[exc.start], number + 1) from None
            *complete, pending = pending.split("\n")
            for line in complete:
                number += 1
                seen_text = seen_text or bool(line.strip())
                yield number, (line.removeprefix("\ufeff") if number == 1 else line) + "\n"
        try:
            pending += decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise _decode_error(path, source, exc.object[exc.start], number + 1) from None
    if pending:
        number += 1
        seen_text = seen_text or bool(pending.strip())
        yield number, pending.removeprefix("\ufeff") if number == 1 else pending
    if not seen_text:
        raise SeedFileError(path, "file is empty")


def _refuse_binary(path: Path, source: SourceConfig, head: bytes) -> None:
    if "\n".encode(source.encoding) != b"\n":  # UTF-16 and UTF-32 text is full of NUL bytes
        return
    if (position := head.find(b"\x00")) >= 0:
        raise SeedFileError(
            path, "holds NUL bytes, so it is not a text file (if it is UTF-16, "
                  f"set `encoding: utf-16` on source '{source.name}')", head[:position].count(b"\n") + 1,
        )  # fmt: skip


def whole_text(path: Path, source: SourceConfig) -> str:
    """The decoded text of a file a format must read whole (JSON array, XML document)."""
    return "".join(line for _, line in text_lines(path, source))


def find_column(path: Path, header: list[str], wanted: str, line: int | None = 1) -> str:
    by_lower = {name.strip().lower(): name for name in header}
    if wanted.lower() not in by_lower:
        raise SeedFileError(
            path, f"missing column '{wanted}' (found: {', '.join(map(str, header)) or 'none'})", line
        )
    return by_lower[wanted.lower()]


def _csv_rows(path: Path, source: SourceConfig, delimiter: str) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a delimited file with the line each starts on; the header is required."""
    lines = (line for _, line in text_lines(path, source))
    reader = csv.DictReader(lines, delimiter=delimiter)
    if not reader.fieldnames:
        raise SeedFileError(path, "no header row", 1)
    start = reader.line_num + 1
    for row in reader:
        if None in row:  # more fields than the header names
            fields = len(reader.fieldnames) + len(row[None])
            raise SeedFileError(path, f"row has {fields} fields, the header names {len(reader.fieldnames)}", start)
        yield start, row
        start = reader.line_num + 1


def delimited(
    path: Path, source: SourceConfig, delimiter: str, text_column: str, context_column: str | None = None
) -> Iterator[RawSeed]:
    rows = _csv_rows(path, source, delimiter)
    first = next(rows, None)
    if first is None:
        raise SeedFileError(path, "file has a header but no rows", 2)
    header = list(first[1].keys())
    column = find_column(path, header, text_column)
    has_context = context_column is not None and context_column.lower() in {h.lower() for h in header}
    context = find_column(path, header, context_column) if has_context else None
    for line, row in itertools.chain([first], rows):
        yield RawSeed(
            text=row.get(column),
            origin=f"{path.name}:{line}",
            context=strip_html(row[context]) if context and row.get(context) else None,
        )


def parquet(path: Path, text_column: str, context_column: str | None = None) -> Iterator[RawSeed]:
    if not path.exists():
        raise SeedFileError(path, "seed file not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SeedFileError(path, f"not a readable Parquet file ({exc})") from None
    if table.num_rows == 0:
        raise SeedFileError(path, "file has no rows")
    column = find_column(path, table.column_names, text_column, line=None)
    context = next((c for c in table.column_names if context_column and c.lower() == context_column.lower()), None)
    texts = table.column(column).to_pylist()
    bodies = table.column(context).to_pylist() if context else [None] * len(texts)
    for row, (text, body) in enumerate(zip(texts, bodies)):
        yield RawSeed(text=text, origin=f"{path.name}#row{row}", context=strip_html(body) if body else None)


def medquad_xml(path: Path, source: SourceConfig) -> Iterator[RawSeed]:
    """The questions of one MedQuAD XML document."""
    try:
        root = ET.fromstring(whole_text(path, source))
    except ET.ParseError as exc:
        raise SeedFileError(path, f"not well-formed XML ({exc})", exc.position[0]) from None
    pairs = root.findall(".//QAPair")
    if root.tag != "Document" or not pairs:
        raise SeedFileError(path, "not a MedQuAD document (expected <Document> with <QAPair> elements)", 1)
    for number, pair in enumerate(pairs, start=1):
        question = pair.find("Question")
        yield RawSeed(
            text=question.text if question is not None else None,
            origin=f"{path.name}#QAPair{pair.get('pid', number)}",
        )


def alpaca_json(path: Path, source: SourceConfig) -> Iterator[RawSeed]:
    """Alpaca records; the instruction and its input stay on separate lines, as Alpaca's prompt has them."""
    try:
        records = json.loads(whole_text(path, source))
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
        extra = str(record.get("input") or "")
        output = str(record.get("output") or "")
        yield RawSeed(
            text=f"{instruction}\n{extra}" if extra.strip() and instruction.strip() else instruction,
            origin=origin,
            response=output if output.strip() else None,
        )


def jsonl(path: Path, source: SourceConfig, field: str) -> Iterator[RawSeed]:
    for line_no, line in text_lines(path, source):
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


def plain_text(path: Path, source: SourceConfig) -> Iterator[RawSeed]:
    for line_no, line in text_lines(path, source):
        if line.strip():
            yield RawSeed(text=line.rstrip("\r\n"), origin=f"{path.name}:{line_no}")


def loader(source: SourceConfig) -> Callable[[Path], Iterator[RawSeed]]:
    """The reader of one file of ``source``'s format."""
    field = source.text_field or ""

    def stackoverflow(path: Path) -> Iterator[RawSeed]:
        # The StackSample CSV or Parquet; the title is the seed, the HTML body its context.
        if path.suffix == ".parquet":
            return parquet(path, "title", "body")
        return delimited(path, source, ",", "Title", "Body")

    def medquad(path: Path) -> Iterator[RawSeed]:
        # XML documents (a file, or a folder of them, see folder_files) or a CSV.
        return delimited(path, source, ",", "question") if path.suffix == ".csv" else medquad_xml(path, source)

    def generic_csv(path: Path) -> Iterator[RawSeed]:
        return parquet(path, field) if path.suffix == ".parquet" else delimited(path, source, ",", field)

    loaders: dict[str, Callable[[Path], Iterator[RawSeed]]] = {
        "quora_tsv": lambda path: delimited(path, source, "\t", "question1"),
        "stackoverflow": stackoverflow,
        "medquad": medquad,
        "alpaca_json": lambda path: alpaca_json(path, source),
        "csv": generic_csv,
        "jsonl": lambda path: jsonl(path, source, field),
        "text": lambda path: plain_text(path, source),
    }
    return loaders[source.format]


def folder_files(source: SourceConfig, folder: Path) -> list[Path]:
    """The files a folder path of ``source`` stands for (MedQuAD ships a folder of XML documents)."""
    if source.format != "medquad":
        raise SeedFileError(folder, f"expected a file, found a directory (format '{source.format}' reads files)")
    files = sorted(folder.glob("**/*.xml"))
    if not files:
        raise SeedFileError(folder, "directory holds no .xml MedQuAD documents")
    return files
