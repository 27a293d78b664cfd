"""Read metadata files record by record, keeping the 1-based line where each record starts.

CSV/TSV and JSON Lines are streamed; JSON documents are read whole but decoded element by element, so a
record deep inside a pretty-printed list (or inside MSR-VTT's ``{"videos": [...]}``) still knows its
line, and a syntax error keeps every record before it. Undecodable bytes are kept (surrogateescape) so
the record holding them becomes a ``bad_encoding`` error row instead of aborting the file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soraprep.datasets.common import MetadataError, RecordError

csv.field_size_limit(2**31 - 1)


@dataclass
class Record:
    """One metadata record: its 1-based starting line, its fields, or why it could not be read."""

    line: int
    data: dict[str, Any] | None
    error: RecordError | None = None


def read_records(path: Path) -> Iterator[Record]:
    """Records of a CSV/TSV, JSON list, JSON Lines or Parquet file, each with its starting line.

    CSV and JSON Lines are streamed (constant memory); a JSON document is read whole. For a JSON
    object (not a list) the whole object is yielded once as line 1's record: the parser decides what
    its keys mean (see :func:`json_object_arrays`).
    """
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _read_parquet(path)
        return
    with _open_text(path) as fh:
        head = fh.read(4096).lstrip()[:1]
    if suffix in (".jsonl", ".ndjson"):
        yield from _read_jsonl(path)
    elif suffix == ".json" or head in ("[", "{"):
        yield from _read_json(_read_text(path))
    else:
        yield from _read_csv(path)


def _open_text(path: Path):
    try:
        # surrogateescape keeps undecodable bytes visible so the record holding them becomes an error row
        return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as exc:
        raise MetadataError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_text(path: Path) -> str:
    with _open_text(path) as fh:
        return fh.read()


def has_bad_bytes(data: dict[str, Any]) -> bool:
    for v in data.values():
        if isinstance(v, str) and any("\udc80" <= ch <= "\udcff" for ch in v):
            return True
    return False


def _read_csv(path: Path) -> Iterator[Record]:
    with _open_text(path) as fh:
        first = fh.readline()
        fh.seek(0)
        delim = "\t" if path.suffix.lower() == ".tsv" or ("\t" in first and "," not in first) else ","
        reader = csv.reader(fh, delimiter=delim)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            return
        except csv.Error as exc:
            raise MetadataError(f"{path}:1: header is not CSV: {exc}") from None
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Record(start, None, RecordError("bad_csv", f"not valid CSV: {exc}"))
                continue
            if not cells or all(not c.strip() for c in cells):
                continue  # blank line
            if len(cells) != len(header):
                yield Record(start, None, RecordError(
                    "bad_columns", f"{len(cells)} fields, the header has {len(header)}"))
                continue
            data = dict(zip(header, cells, strict=True))
            if has_bad_bytes(data):
                yield Record(start, None, RecordError("bad_encoding", "bytes that are not UTF-8"))
                continue
            yield Record(start, data)


def _read_jsonl(path: Path) -> Iterator[Record]:
    with _open_text(path) as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield _json_record(i, json.loads(line))
            except json.JSONDecodeError as exc:
                yield Record(i, None, RecordError("bad_json", f"not JSON: {exc.msg} (column {exc.colno})"))


def _read_json(text: str) -> Iterator[Record]:
    dec = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if pos >= len(text):
        return
    if text[pos] == "[":
        for line, value in iter_json_array(text, pos):
            yield _json_record(line, value)
        return
    # One object -> a JSON document or JSON Lines; decide by what follows the first value
    try:
        value, end = dec.raw_decode(text, pos)
    except json.JSONDecodeError:
        value, end = None, -1
    if end >= 0 and _skip_ws(text, end) >= len(text):
        yield _json_record(1, value, whole=True)
        return
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield _json_record(i, json.loads(line))
        except json.JSONDecodeError as exc:
            yield Record(i, None, RecordError("bad_json", f"not JSON: {exc.msg} (column {exc.colno})"))


def _json_record(line: int, value: Any, whole: bool = False) -> Record:
    if isinstance(value, RecordError):
        return Record(line, None, value)
    if not isinstance(value, dict):
        return Record(line, None, RecordError("bad_json", f"expected an object, got {type(value).__name__}"))
    if has_bad_bytes(value):
        return Record(line, None, RecordError("bad_encoding", "bytes that are not UTF-8"))
    return Record(line, value)


def _skip_ws(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in " \t\r\n":
        pos += 1
    return pos


class _LineCounter:
    """Offsets -> 1-based line numbers, for offsets visited in increasing order."""

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.line = text, 0, 1

    def __call__(self, offset: int) -> int:
        self.line += self.text.count("\n", self.pos, offset)
        self.pos = offset
        return self.line


def iter_json_array(text: str, pos: int, lines: _LineCounter | None = None) -> Iterator[tuple[int, Any]]:
    """Elements of the JSON array starting at ``text[pos] == '['`` with their lines.

    A syntax error yields one ``(line, RecordError)`` and stops: JSON cannot be resynchronised.
    """
    dec = json.JSONDecoder()
    lines = lines or _LineCounter(text)
    pos = _skip_ws(text, pos + 1)
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        try:
            value, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield exc.lineno, RecordError(
                "bad_json", f"JSON syntax error: {exc.msg}; the rest of the file is not read")
            return
        yield lines(pos), value
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            return
        yield lines(min(pos, len(text))), RecordError(
            "bad_json", "JSON syntax error: expected ',' or ']'; the rest of the file is not read")
        return


def json_object_arrays(path: Path, keys: tuple[str, ...]) -> dict[str, list[tuple[int, Any]]]:
    """For a top-level JSON object, the arrays under ``keys`` as ``(line, element)`` lists.

    Used for MSR-VTT's original ``{"videos": [...], "sentences": [...]}`` so each element keeps its line.
    """
    text = _read_text(path)
    dec = json.JSONDecoder()
    lines = _LineCounter(text)
    out: dict[str, list[tuple[int, Any]]] = {k: [] for k in keys}
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "{":
        raise MetadataError(f"{path}: expected a JSON object")
    pos = _skip_ws(text, pos + 1)
    while pos < len(text) and text[pos] != "}":
        try:
            key, pos = dec.raw_decode(text, pos)
            pos = _skip_ws(text, pos)
            if text[pos] != ":":
                raise json.JSONDecodeError("expected ':'", text, pos)
            pos = _skip_ws(text, pos + 1)
            if key in out and text[pos] == "[":
                items = list(iter_json_array(text, pos, lines))
                out[key] = items
                if items and isinstance(items[-1][1], RecordError):
                    return out
                _, pos = dec.raw_decode(text, pos)
            else:
                _, pos = dec.raw_decode(text, pos)
        except (json.JSONDecodeError, IndexError) as exc:
            line = exc.lineno if isinstance(exc, json.JSONDecodeError) else text.count("\n", 0, pos) + 1
            out[keys[0]].append((line, RecordError(
                "bad_json", "JSON syntax error; the rest of the file is not read")))
            return out
        pos = _skip_ws(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
    return out


def _read_parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for unreadable files
        raise MetadataError(f"{path} is not a readable Parquet file: {exc}") from None
    # Parquet has no lines: the record number (1-based, header-free) stands in for one
    for i, row in enumerate(table.to_pylist(), start=1):
        yield Record(i, row)
