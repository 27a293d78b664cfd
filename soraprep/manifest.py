"""The manifest: one row per clip, schema-versioned Parquet — the only contract between parts.

Curation writes it, dataset ingestion writes it, captioning adds columns to it, training reads it.
Known columns have fixed Arrow types (``COLUMNS``); any other column (scores, dataset metadata) is
carried through with an inferred type. Open-Sora's columns (``path, text, num_frames, height, width,
aspect_ratio, resolution, fps``) are always present, with Open-Sora's meanings: ``aspect_ratio`` is
height / width and ``resolution`` is height * width.

``path`` is absolute or relative to the manifest's folder; :func:`resolve_path` handles both.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
META_VERSION = b"soraprep.schema_version"
META_RECIPE = b"soraprep.recipe"

ERROR_TYPE = pa.struct([("stage", pa.string()), ("kind", pa.string()), ("message", pa.string())])

#: Known columns, in manifest order, with their Arrow types.
COLUMNS: dict[str, pa.DataType] = {
    "clip_id": pa.string(),          # deterministic: f"{video_id}-{clip_index:04d}" (or the dataset's id)
    "video_id": pa.string(),         # stable id of the source video
    "source": pa.string(),           # input video path or URL
    "path": pa.string(),             # clip file (cut modes) or the source itself (--cut none)
    "text": pa.string(),             # caption (Open-Sora's column name)
    "num_frames": pa.int64(),        # frames a decoder returns from `path` within the span
    "height": pa.int64(),            # display size after rotation
    "width": pa.int64(),
    "aspect_ratio": pa.float64(),    # height / width (Open-Sora convention)
    "resolution": pa.int64(),        # height * width (Open-Sora convention)
    "fps": pa.float64(),
    "fps_rational": pa.string(),     # exact rate, e.g. "30000/1001"
    "start_s": pa.float64(),         # span in the source video: seconds ...
    "end_s": pa.float64(),
    "start_frame": pa.int64(),       # ... and frames, half-open [start_frame, end_frame)
    "end_frame": pa.int64(),
    "duration_s": pa.float64(),
    "clip_index": pa.int64(),
    "codec": pa.string(),
    "cut_mode": pa.string(),         # how `path` was produced: none | copy | keyframe | exact
    "keep": pa.bool_(),
    "filter_reason": pa.string(),    # why keep is false ("; "-joined), null when kept
    "bucket": pa.string(),           # e.g. "480x854x49"
    "bucket_height": pa.int64(),
    "bucket_width": pa.int64(),
    "bucket_frames": pa.int64(),
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


class ManifestError(ValueError):
    """A manifest that cannot be read or does not follow the schema."""


def _field_type(name: str, values: Sequence[Any]) -> pa.DataType:
    if name in COLUMNS:
        return COLUMNS[name]
    non_null = [v for v in values if v is not None]
    if not non_null:
        return pa.string()
    return pa.array(non_null).type


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
            arrays.append(pa.array(values, type=typ))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ManifestError(f"column {name!r} cannot be stored as {typ}: {exc}") from exc
        fields.append(pa.field(name, typ))
    meta = {META_VERSION: str(SCHEMA_VERSION).encode()}
    for k, v in (metadata or {}).items():
        meta[k.encode() if isinstance(k, str) else k] = v.encode() if isinstance(v, str) else v
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=meta))


_ALWAYS = ("clip_id", "video_id", "source", "path", "text", "num_frames", "height", "width",
           "aspect_ratio", "resolution", "fps", "start_s", "end_s", "keep", "error")


#: Prefix of every temporary file soraprep writes. A run's start-up clean-up deletes only names with this
#: prefix, and only in the folders soraprep itself writes in OUT: never a user's ``.partial-*`` or ``*.tmp``.
TMP_PREFIX = ".soraprep-tmp-"


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary name under which ``path`` is written before an atomic rename onto it."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    write(tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_manifest(path: str | os.PathLike, rows: Sequence[dict[str, Any]],
                   metadata: dict[str, str] | None = None, jsonl: bool = False) -> Path:
    """Atomically write ``rows`` to Parquet at ``path`` (and ``.jsonl`` beside it when asked)."""
    path = Path(path)
    table = rows_to_table(rows, metadata)
    _atomic_write(path, lambda p: pq.write_table(table, p))
    if jsonl:
        write_jsonl(path.with_suffix(".jsonl"), table.to_pylist())
    return path


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> Path:
    path = Path(path)

    def _w(p: Path) -> None:
        with open(p, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")

    _atomic_write(path, _w)
    return path


def read_table(path: str | os.PathLike) -> pa.Table:
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"manifest not found: {path}")
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as fh:
            return rows_to_table([json.loads(line) for line in fh if line.strip()])
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"{path} is not a readable Parquet manifest: {exc}") from exc
    version = int((table.schema.metadata or {}).get(META_VERSION, b"0"))
    if version > SCHEMA_VERSION:
        raise ManifestError(f"{path} has manifest schema v{version}; this soraprep reads up to v{SCHEMA_VERSION}. "
                            "Upgrade soraprep.")
    return table


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a manifest (Parquet or JSONL) as dicts."""
    return read_table(path).to_pylist()


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    meta = read_table(path).schema.metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items()}


def resolve_path(manifest_path: str | os.PathLike, path: str) -> str:
    """A row's ``path`` as usable here: URLs and absolute paths as-is, others relative to the manifest."""
    if "://" in path or os.path.isabs(path):
        return path
    return str(Path(manifest_path).resolve().parent / path)


def export_opensora_csv(rows: Iterable[dict[str, Any]], out: str | os.PathLike, manifest_path: str | os.PathLike,
                        only_kept: bool = True) -> int:
    """Write Open-Sora's CSV (``path,text,num_frames,height,width,aspect_ratio,resolution,fps``).

    Paths become absolute, so the CSV works from any directory. Returns the number of rows written.
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
            w.writerow(["" if rec.get(c) is None else rec.get(c) for c in cols])
            n += 1
    return n
