r"""The manifest: one row per clip, schema-versioned Parquet — the only contract between parts.

Curation writes it, dataset ingestion writes it, captioning adds columns to it, training reads it.
Known columns have fixed Arrow types (``COLUMNS``); any other column (scores, dataset metadata) is
carried through with an inferred type. Open-Sora's columns (``path, text, num_frames, height, width,
aspect_ratio, resolution, fps``) are always present, with Open-Sora's meanings: ``aspect_ratio`` is
height / width and ``resolution`` is height * width.

``path`` is absolute or relative to the manifest's folder; :func:`resolve_path` handles both.

File names that are not valid UTF-8 (bytes such as ``b"caf\xe9.mp4"``, which Python holds as lone
surrogates, ``"caf\udce9.mp4"``) cannot be Arrow strings. In the path columns (``PATH_COLUMNS``) such a
name is stored as ``fsbytes:`` + its bytes percent-encoded (``fsbytes:/videos/caf%E9.mp4``, ``%`` as ``%25``);
:func:`read_manifest` and :func:`resolve_path` turn it back into the exact name, so the file re-opens.
Names that are valid UTF-8 are stored unchanged. In other text columns (error messages, ids) such
characters are written as ``\xNN`` (display only).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes, unquote_to_bytes

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from soraprep.stages import error_dict

# TMP_PREFIX and temp_path live in storage/files.py; re-exported for callers written against this module
from soraprep.storage.files import TMP_PREFIX, atomic_write, temp_path  # noqa: F401

SCHEMA_VERSION = 1
META_VERSION = b"soraprep.schema_version"

ERROR_TYPE = pa.struct([("stage", pa.string()), ("kind", pa.string()), ("message", pa.string())])

#: Known columns, in manifest order, with their Arrow types.
COLUMNS: dict[str, pa.DataType] = {
    "clip_id": pa.string(),          # deterministic: f"{base}-{clip_index:04d}", base = the input's clip id or video id
    "video_id": pa.string(),         # stable id of the source video
    "source": pa.string(),           # input video path or URL
    "path": pa.string(),             # clip file (cut modes) or the source itself (--cut none)
    "text": pa.string(),             # caption (Open-Sora's column name)
    "num_frames": pa.int64(),        # frames a decoder returns from `path` within the span
    "height": pa.int64(),            # display size after rotation
    "width": pa.int64(),
    "aspect_ratio": pa.float64(),    # height / width (Open-Sora convention)
    "resolution": pa.int64(),        # height * width (Open-Sora convention)
    "fps": pa.float64(),             # nominal rate as a float (Open-Sora); in memory a Fraction (types.fps_columns)
    "fps_rational": pa.string(),     # exact rate, e.g. "30000/1001"
    "start_s": pa.float64(),         # span in the source video: seconds from its first frame (video.span) ...
    "end_s": pa.float64(),
    "start_frame": pa.int64(),       # ... and frames, half-open [start_frame, end_frame)
    "end_frame": pa.int64(),
    "duration_s": pa.float64(),
    "clip_index": pa.int64(),
    "codec": pa.string(),
    "cut_mode": pa.string(),         # how `path` was produced: none | copy | keyframe | exact
    "split_reason": pa.string(),     # whole scene or why split: scene | max_length | keyframe | keyframe+max_length
    "keep": pa.bool_(),
    "filter_reason": pa.string(),    # why keep is false ("; "-joined), null when kept
    "bucket": pa.string(),           # e.g. "480x854x49"
    "bucket_height": pa.int64(),
    "bucket_width": pa.int64(),
    "bucket_frames": pa.int64(),
    "damaged_frames": pa.int64(),    # frames of the span the decoder rejected (damaged packets)
    "provenance": pa.string(),       # JSON: score column -> {"by": scorer, "params": {...}}
    "error": ERROR_TYPE,             # null when the row is fine
    # captioning (soraprep.caption): failures go to caption_error, never to `error`
    "caption": pa.string(),          # cleaned caption (also written to `text`)
    "caption_model": pa.string(),
    "caption_backend": pa.string(),  # openai | transformers
    "caption_prompt_hash": pa.string(),
    "caption_frames": pa.int64(),    # frames the model saw
    "caption_tokens_in": pa.int64(),
    "caption_tokens_out": pa.int64(),
    "caption_latency_s": pa.float64(),
    "caption_error": ERROR_TYPE,     # {stage: "caption", kind, message} or null
}


#: Columns holding file paths: names that are not valid UTF-8 are stored escaped (see the module doc).
PATH_COLUMNS = ("source", "path", "source_url")
FSBYTES = "fsbytes:"


class ManifestError(ValueError):
    """A manifest that cannot be read or does not follow the schema."""


def encode_path(path: Any) -> Any:
    """Manifest text for an OS path string: unchanged unless it holds undecodable bytes (lone surrogates)."""
    if not isinstance(path, str) or path.isascii():
        return path
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return FSBYTES + quote_from_bytes(os.fsencode(path), safe="/ !$&'()+,;=@[]")


def decode_path(text: Any) -> Any:
    """The OS path for a manifest path text (inverse of :func:`encode_path`)."""
    if not isinstance(text, str) or not text.startswith(FSBYTES):
        return text
    raw = unquote_to_bytes(text[len(FSBYTES):])
    try:
        raw.decode("utf-8")
        return text  # valid UTF-8 was never escaped: a name that really starts with "fsbytes:"
    except UnicodeDecodeError:
        return os.fsdecode(raw)


def _text_safe(value: Any) -> Any:
    """Any str inside ``value`` with lone surrogates gets them as ``\\xNN`` (for non-path columns)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {k: _text_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_text_safe(v) for v in value]
    return value


def _storable(name: str, values: list[Any]) -> list[Any]:
    return [encode_path(v) for v in values] if name in PATH_COLUMNS else [_text_safe(v) for v in values]


def _field_type(name: str, values: Sequence[Any]) -> pa.DataType:
    if name in COLUMNS:
        return COLUMNS[name]
    non_null = [v for v in values if v is not None]
    if not non_null:
        return pa.string()
    try:
        return pa.array(non_null).type
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ManifestError(f"column {name!r} mixes value types ({exc}); give it one type in every row") from exc
    except UnicodeEncodeError:
        return pa.array(_storable(name, non_null)).type


def rows_to_table(rows: Sequence[dict[str, Any]], metadata: dict[str, str] | None = None) -> pa.Table:
    """Build a schema-versioned Arrow table from row dicts (missing cells become null)."""
    names: list[str] = [c for c in COLUMNS if any(c in r for r in rows) or c in _ALWAYS]
    extra = sorted({k for r in rows for k in r} - set(names))
    names += extra
    arrays, fields = [], []
    for name in names:
        values = [r.get(name) for r in rows]
        typ = _field_type(name, values)
        try:
            try:
                arrays.append(pa.array(values, type=typ))
            except UnicodeEncodeError:  # a file name that is not UTF-8 (rare: only then pay for the check)
                arrays.append(pa.array(_storable(name, values), type=typ))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ManifestError(f"column {name!r} cannot be stored as {typ}: {exc}") from exc
        fields.append(pa.field(name, typ))
    meta = {META_VERSION: str(SCHEMA_VERSION).encode()}
    for k, v in (metadata or {}).items():
        meta[k.encode() if isinstance(k, str) else k] = v.encode() if isinstance(v, str) else v
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=meta))


_ALWAYS = ("clip_id", "video_id", "source", "path", "text", "num_frames", "height", "width",
           "aspect_ratio", "resolution", "fps", "start_s", "end_s", "keep", "error")


def write_manifest(path: str | os.PathLike, rows: Sequence[dict[str, Any]],
                   metadata: dict[str, str] | None = None, jsonl: bool = False) -> Path:
    """Atomically write ``rows`` to Parquet at ``path`` (and ``.jsonl`` beside it when asked)."""
    path = Path(path)
    table = rows_to_table(rows, metadata)
    atomic_write(path, lambda p: pq.write_table(table, p))
    if jsonl:
        write_jsonl(path.with_suffix(".jsonl"), table.to_pylist())
    return path


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> Path:
    path = Path(path)

    def _w(p: Path) -> None:
        with open(p, "w", encoding="utf-8") as fh:
            for r in rows:
                try:
                    text = json.dumps(r, ensure_ascii=False, default=str)
                    text.encode("utf-8")
                except UnicodeEncodeError:  # a file name that is not UTF-8: escape it as in Parquet
                    text = json.dumps({k: _storable(k, [v])[0] for k, v in r.items()}, ensure_ascii=False,
                                      default=str)
                fh.write(text + "\n")

    atomic_write(path, _w)
    return path


def read_table(path: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> pa.Table:
    """Every row of a manifest as one Arrow table: a ``.parquet`` or ``.jsonl`` file, a ``manifest/`` dataset
    folder or its ``_index.json``, a curate output folder, or a store URL of any of these (see
    :func:`soraprep.manifest_dataset.locate`; stream big ones with ``iter_manifest``)."""
    from soraprep.manifest_dataset import locate

    return locate(path, storage_options).table()


# Python types a JSONL value may have for each Arrow type of a known column
_JSON_TYPES = {pa.string(): (str,), pa.int64(): (int, float), pa.float64(): (int, float), pa.bool_(): (bool,),
               ERROR_TYPE: (dict,)}


# exact Python types that need no closer look, per known column (the fast path of cell_problem)
_PLAIN = {name: {str} if typ == pa.string() else {float, int} if typ == pa.float64() else {bool}
          if typ == pa.bool_() else {dict} if typ == ERROR_TYPE else set() for name, typ in COLUMNS.items()}


def cell_problem(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be stored in known column ``name`` (None when it can)."""
    plain = _PLAIN.get(name)
    if value is None or plain is None or (type(value) in plain and type(value) is not dict):
        return None
    if type(value) is int and -2**63 <= value < 2**63 and COLUMNS[name] == pa.int64():
        return None
    want = _JSON_TYPES.get(COLUMNS[name], ())
    if isinstance(value, bool) and bool not in want:
        return f"column {name!r} must be {COLUMNS[name]}, got a boolean"
    if not isinstance(value, want):
        return f"column {name!r} must be {COLUMNS[name]}, got {type(value).__name__}"
    if COLUMNS[name] == ERROR_TYPE and not all(isinstance(value.get(k), str | None) for k in value):
        return f"column {name!r} must be {{stage, kind, message}} strings"
    if COLUMNS[name] == pa.int64() and isinstance(value, float) and not value.is_integer():
        return f"column {name!r} must be a whole number, got {value}"  # 50.0 (as pandas writes it) is fine
    if isinstance(value, int | float) and not isinstance(value, bool) and COLUMNS[name] == pa.int64() \
            and abs(value) >= 2**63:
        return f"column {name!r}: {value} is out of range"
    return None


#: ids longer than this are refused (``bad_id``); file names derived from ids are bounded anyway
MAX_ID_CHARS = 1000


def _seconds_problem(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{name} must be a number of seconds, got {type(value).__name__}"
    if not math.isfinite(value) or value < 0:
        return f"{name} is {value}: spans are finite seconds >= 0 (null for 'from the start' / 'to the end')"
    return None


def row_problem(row: dict[str, Any], source: Any, skip: Iterable[str] = ()) -> tuple[str, str] | None:
    """(kind, message) when an input row cannot be used as given, checked before any work; None when it can.

    Kinds: ``bad_source`` (a source that is not text, or holds a NUL), ``bad_id`` (a clip/video id that is not text or
    longer than ``MAX_ID_CHARS``), ``bad_span`` (``start_s``/``end_s`` not finite, negative or inverted),
    ``bad_value`` (a known column of the wrong type; columns in ``skip`` are not checked).
    """
    if source is not None and not isinstance(source, str):
        return "bad_source", f"source must be a path or URL (text), got {type(source).__name__}: {str(source)[:80]}"
    if source is not None and "\x00" in source:
        return "bad_source", f"source holds a NUL character, which no file name can: {source[:80]!r}"
    for col in ("clip_id", "video_id"):
        v = row.get(col)
        if v is not None and (isinstance(v, bool) or not isinstance(v, str | int)):
            return "bad_id", f"{col} must be text, got {type(v).__name__}"
        if v is not None and len(str(v)) > MAX_ID_CHARS:
            return "bad_id", f"{col} is {len(str(v))} characters long (at most {MAX_ID_CHARS})"
    start, end = row.get("start_s"), row.get("end_s")
    problem = _seconds_problem("start_s", start) or _seconds_problem("end_s", end)
    if problem:
        return "bad_span", problem
    if start is not None and end is not None and end <= start:
        return "bad_span", f"end_s {end} is not after start_s {start}"
    skip = set(skip)
    bad = [p for k, v in row.items() if k not in skip and (p := cell_problem(k, v))]
    if bad:  # e.g. an int `text` or a string `error`: it could not be stored on the output rows
        return "bad_value", "; ".join(bad)
    return None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON Lines manifest. A line that is not a JSON object, or whose known columns have the
    wrong type, becomes an error row (``{stage: "input", kind: "bad_json" | "bad_value", message:
    "FILE:LINE: ..."}``) so the run accounts for it; a file with no good line at all is refused."""
    rows: list[dict[str, Any]] = []
    good = 0
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                rows.append(_line_error(path, i, "bad_encoding", "bytes that are not UTF-8"))
                continue
            except json.JSONDecodeError as exc:
                rows.append(_line_error(path, i, "bad_json", f"not JSON: {exc.msg} (column {exc.colno})"))
                continue
            if not isinstance(value, dict):
                rows.append(_line_error(path, i, "bad_json", f"expected an object, got {type(value).__name__}"))
                continue
            problems = [p for k, v in value.items() if (p := cell_problem(k, v))]
            if problems:
                kept = {k: v for k, v in value.items() if k in ("clip_id", "video_id") and isinstance(v, str)}
                rows.append({**kept, **_line_error(path, i, "bad_value", "; ".join(problems))})
                continue
            rows.append(value)
            good += 1
    if rows and not good:
        first = rows[0]["error"]["message"]
        raise ManifestError(f"{path} is not a JSON Lines manifest (no line is a valid row; {first})")
    return rows


def _line_error(path: Path, line: int, kind: str, message: str) -> dict[str, Any]:
    return {"error": error_dict("input", kind, f"{path}:{line}: {message}")}


def table_rows(table: pa.Table) -> list[dict[str, Any]]:
    """A manifest table's rows as dicts, escaped file names (``fsbytes:``) decoded back to OS paths."""
    escaped = [name for name in PATH_COLUMNS if name in table.column_names
               and pa.types.is_string(table.schema.field(name).type)
               and pc.any(pc.starts_with(table[name], FSBYTES)).as_py()]
    rows = table.to_pylist()
    for name in escaped:
        for r in rows:
            r[name] = decode_path(r[name])
    return rows


def read_manifest(path: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows of a manifest (any form :func:`read_table` takes) as dicts; escaped file names (``fsbytes:``) are
    decoded. Holds every row: stream with :func:`soraprep.manifest_dataset.iter_manifest` instead."""
    return table_rows(read_table(path, storage_options))


def read_metadata(path: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> dict[str, str]:
    """The manifest's schema metadata (recipe, fingerprints, ...) without reading its rows (JSONL: reads it)."""
    from soraprep.manifest_dataset import locate

    return locate(path, storage_options).metadata()


def resolve_path(manifest_path: str | os.PathLike, path: str) -> str:
    """A row's ``path`` as usable here: URLs and absolute paths as-is, others relative to the manifest's
    folder; for a ``manifest/`` dataset (or a run folder) relative to the run folder, where the clips are."""
    from soraprep.manifest_dataset import resolve_row_path

    return resolve_row_path(manifest_path, path)


def export_opensora_csv(rows: Iterable[dict[str, Any]], out: str | os.PathLike, manifest_path: str | os.PathLike,
                        only_kept: bool = True, skipped: list[str] | None = None) -> int:
    """Write Open-Sora's CSV (``path,text,num_frames,height,width,aspect_ratio,resolution,fps``).

    Paths become absolute, so the CSV works from any directory. Returns the number of rows written. A
    row whose path is not valid UTF-8 cannot be a line of a UTF-8 CSV: it is left out and described in
    ``skipped`` (rename the file, or cut the clip: clip files have ASCII names).
    """
    cols = ["path", "text", "num_frames", "height", "width", "aspect_ratio", "resolution", "fps"]
    n = 0
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in rows:
            if only_kept and (not r.get("keep") or r.get("error")):
                continue
            rec = dict(r)
            rec["path"] = resolve_path(manifest_path, r["path"])
            if encode_path(rec["path"]) != rec["path"]:
                if skipped is not None:
                    skipped.append(f"{r.get('clip_id')}: path {encode_path(rec['path'])} is not valid UTF-8")
                continue
            w.writerow(["" if rec.get(c) is None else _text_safe(rec.get(c)) for c in cols])
            n += 1
    return n
