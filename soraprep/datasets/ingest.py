"""Run a dataset parser and write its rows as a clip manifest, with a summary of what happened.

``ingest(dataset=..., path=..., out=...)`` is what ``soraprep ingest`` calls. The split rule: a dataset
whose records carry a split (MSR-VTT) is *filtered* by ``split``; for the others the whole file is one
split, so ``split`` labels the rows (default: guessed from the file name, e.g. ``panda70m_validation.csv``
-> ``val``). ``limit`` keeps the first N rows (error rows included, so a bad file cannot hide behind
the limit). Clip ids must be unique: a repeated one becomes a ``duplicate_clip`` error row.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import pyarrow as pa

from soraprep.datasets.common import SPLITS, MetadataError, ParseContext, split_from_filename
from soraprep.datasets.registry import get_spec
from soraprep.manifest import rows_to_table, write_manifest
from soraprep.stages import error_dict
from soraprep.storage.files import publish, temp_path
from soraprep.types import fps_fraction

#: rows per Parquet row group when streaming a manifest out
CHUNK_ROWS = 50_000


@dataclass
class IngestReport:
    """Rows read / clips produced / errors by kind, for the CLI and for tests."""

    dataset: str
    metadata: str
    records_read: int = 0
    clips: int = 0
    errors: Counter = field(default_factory=Counter)
    filtered_by_split: int = 0
    limited: bool = False
    output: str | None = None
    examples: list[str] = field(default_factory=list)   # the first few error messages, for the summary

    @property
    def num_errors(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "metadata": self.metadata, "records_read": self.records_read,
                "clips": self.clips, "errors": dict(self.errors), "filtered_by_split": self.filtered_by_split,
                "limited": self.limited, "output": self.output}


def _check_args(split: str | None, limit: int | None, fps: Any) -> Fraction | None:
    if split is not None and split not in SPLITS:
        raise MetadataError(f"--split {split!r} is not one of {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise MetadataError(f"--limit must be at least 1, got {limit}")
    if fps is None:
        return None
    try:
        rate = fps_fraction(fps)
    except (ValueError, ZeroDivisionError):
        raise MetadataError(f"--fps {fps!r} is not a frame rate (try 30, 29.97 or 30000/1001)") from None
    if rate is None or rate <= 0:
        raise MetadataError(f"--fps must be positive, got {fps!r}")
    return rate


def _iter_rows(dataset: str, path: str | os.PathLike, split: str | None, limit: int | None, fps: Any,
               report: IngestReport) -> Iterator[dict[str, Any]]:
    rate = _check_args(split, limit, fps)
    try:
        spec = get_spec(dataset)
    except KeyError as exc:
        raise MetadataError(str(exc.args[0])) from None
    path = Path(path)
    if not path.exists():
        raise MetadataError(f"{path} does not exist")
    if dataset != "folder" and path.is_dir():
        raise MetadataError(f"{path} is a folder; --dataset {dataset} reads a metadata file "
                            "(use --dataset folder for a folder of videos)")
    ctx = ParseContext(path=path, dataset=dataset, fps=rate, license=spec.license)
    file_split = split_from_filename(path) if path.is_file() else None
    seen: dict[str, int] = {}
    n = 0
    for row in spec.parse(ctx):
        report.records_read = ctx.records_read
        row_split = row.get("split")
        if split is not None and row_split is not None and row_split != split and row.get("error") is None:
            report.filtered_by_split += 1
            continue
        if row_split is None and row.get("error") is None:
            row["split"] = split or file_split
        cid = row.get("clip_id")
        if cid in seen:
            seen[cid] += 1
            row = dict(row, clip_id=f"{cid}-dup{seen[cid]}",
                       error=error_dict("ingest", "duplicate_clip",
                                        f"{path}:{row.get('meta_line')}: clip {cid!r} appears more than once"))
        else:
            seen[cid] = 0
        if row.get("error"):
            report.errors[row["error"]["kind"]] += 1
            if len(report.examples) < 5:
                report.examples.append(row["error"]["message"])
        else:
            report.clips += 1
        yield row
        n += 1
        if limit is not None and n >= limit:
            report.limited = True
            break
    report.records_read = ctx.records_read


def ingest_rows(*, dataset: str, path: str | os.PathLike, split: str | None = None, limit: int | None = None,
                fps: Any = None) -> tuple[list[dict[str, Any]], IngestReport]:
    """Parse ``path`` with the ``dataset`` parser; return (manifest rows, report). Raises MetadataError."""
    report = IngestReport(dataset=dataset, metadata=str(path))
    rows = list(_iter_rows(dataset, path, split, limit, fps, report))
    return rows, report


class _Incompatible(Exception):
    pass


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Give a later chunk the first chunk's schema; raise _Incompatible where that would change data."""
    if set(table.column_names) - set(schema.names):
        raise _Incompatible
    cols = []
    for f in schema:
        if f.name not in table.column_names:
            cols.append(pa.nulls(len(table), f.type))
            continue
        col = table[f.name]
        if col.type != f.type:
            if col.null_count == len(col):
                col = pa.nulls(len(table), f.type)
            elif pa.types.is_integer(col.type) and pa.types.is_floating(f.type):
                col = col.cast(f.type)
            else:
                raise _Incompatible
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=schema)


def _write_streaming(out: Path, rows: Iterator[dict[str, Any]], metadata: dict[str, str]) -> None:
    """Write rows in chunks of CHUNK_ROWS (memory stays flat for Panda-70M-sized files).

    The first chunk fixes the schema; a later chunk whose types cannot be matched without changing
    data (rare: a column that was all null in the first chunk) makes the writer fall back to one
    in-memory write of everything.
    """
    import pyarrow.parquet as pq

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(out)
    writer = schema = None
    try:
        while True:
            chunk = list(itertools.islice(rows, CHUNK_ROWS))
            if not chunk:
                break
            table = rows_to_table(chunk, metadata)
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(tmp, schema)
            else:
                try:
                    table = _conform(table, schema)
                except _Incompatible:
                    writer.close()
                    writer = None
                    done = pq.read_table(tmp).to_pylist()
                    write_manifest(out, done + chunk + list(rows), metadata=metadata)
                    return
            writer.write_table(table)
        if writer is None:
            write_manifest(out, [], metadata=metadata)
            return
        writer.close()
        writer = None
        publish(tmp, out)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)


def ingest(*, dataset: str, path: str | os.PathLike, out: str | os.PathLike, split: str | None = None,
           limit: int | None = None, fps: Any = None, storage_options: dict[str, Any] | None = None) -> IngestReport:
    """Parse ``path`` and write the manifest ``out`` (Parquet), streaming. Returns the report.

    ``out`` may be a store URL (``s3://bucket/manifests/panda.parquet``): the manifest is streamed to local
    scratch and uploaded whole when complete (one PUT: readers never see a partial manifest)."""
    from soraprep.storage import is_remote

    remote = is_remote(str(out))
    name = str(out).rstrip("/").rsplit("/", 1)[-1] if remote else Path(out).name
    if Path(name).suffix.lower() != ".parquet":
        raise MetadataError(f"-o {out} must be a .parquet path")
    report = IngestReport(dataset=dataset, metadata=str(path))
    params = {"dataset": dataset, "metadata": str(path), "split": split, "limit": limit,
              "fps": None if fps is None else str(fps)}
    rows = _iter_rows(dataset, path, split, limit, fps, report)
    if not remote:
        _write_streaming(Path(out), rows, {"soraprep.ingest": json.dumps(params)})
        report.output = str(out)
        return report
    import tempfile

    from soraprep.manifest_store import put_file

    with tempfile.TemporaryDirectory(prefix="soraprep-ingest-") as tmp:
        local = Path(tmp) / name
        _write_streaming(local, rows, {"soraprep.ingest": json.dumps(params)})
        report.output = put_file(local, str(out), storage_options)
    return report
