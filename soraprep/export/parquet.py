"""A plain Parquet dataset: ``part-00000.parquet`` ... of at most ``rows_per_part`` rows, usable anywhere.

``export_parquet(manifest, out)`` streams the manifest's rows (kept rows by default, ``include="all"``:
every row) into part files with the manifest's own columns and types, with ``path`` and ``source`` made
absolute (or URLs, when the manifest lives on a store), so the dataset can be moved or read from another
machine. ``pyarrow.dataset.dataset(out)`` (or Spark, DuckDB, Ray Data ``read_parquet``) reads it; rows
keep manifest order across parts (part names sort in order). ``_index.json`` (ignored by dataset readers,
which skip names starting with ``_``) lists the parts and their row counts. Each part is written whole
and moved into place (rename, or one upload); parts of an earlier, longer export are removed.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from soraprep.manifest import FSBYTES, PATH_COLUMNS, encode_path
from soraprep.manifest_store import iter_tables, locate, resolve
from soraprep.storage.store import Store, is_remote

INDEX = "_index.json"
PART = re.compile(r"^part-(\d{5,})\.parquet$")


@dataclass
class ParquetExportResult:
    out: str
    parts: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0              # rows written
    read: int = 0              # manifest rows read
    removed: int = 0
    seconds: float = 0.0


def _select(table: pa.Table, include: str) -> pa.Table:
    """``kept``: keep true and no error; ``all``: every row."""
    if include == "all" or not len(table):
        return table
    keep = table["keep"] if "keep" in table.column_names else pa.nulls(len(table), pa.bool_())
    mask = pc.fill_null(keep, False)
    if "error" in table.column_names:
        mask = pc.and_(mask, pc.is_null(table["error"]))
    return table.filter(mask)


def _absolute(table: pa.Table, base: str) -> pa.Table:
    """Path columns resolved against ``base`` (text; escaped names stay escaped). Vectorised: relative
    names are joined to the base in Arrow; only escaped (``fsbytes:``) names go through Python."""
    base = base.rstrip("/") if is_remote(base) else str(Path(base).resolve())
    for name in PATH_COLUMNS:
        if name not in table.column_names or not pa.types.is_string(table.schema.field(name).type) or not len(table):
            continue
        col = table[name]
        keep = pc.or_(pc.or_(pc.starts_with(col, "/"), pc.match_substring(col, "://")), pc.starts_with(col, FSBYTES))
        joined = pc.binary_join_element_wise(pa.scalar(base), col, "/")
        values = pc.if_else(pc.fill_null(keep, True), col, joined)
        if pc.any(pc.starts_with(col, FSBYTES)).as_py():
            values = pa.array([v if v is None or not v.startswith(FSBYTES) else encode_path(resolve(base, v))
                               for v in values.to_pylist()], pa.string())
        table = table.set_column(table.column_names.index(name), table.schema.field(name), values)
    return table


def _chunks(tables: Iterator[pa.Table], rows: int) -> Iterator[pa.Table]:
    """Re-cut a stream of tables into tables of exactly ``rows`` rows (the last one shorter)."""
    buf: list[pa.Table] = []
    n = 0
    for t in tables:
        while len(t):
            take = min(rows - n, len(t))
            buf.append(t.slice(0, take))
            n += take
            t = t.slice(take)
            if n == rows:
                yield pa.concat_tables(buf)
                buf, n = [], 0
    if buf:
        yield pa.concat_tables(buf)


def export_parquet(manifest: str | os.PathLike, out: str | os.PathLike, *, rows_per_part: int = 1_000_000,
                   include: str = "kept", storage_options: dict[str, Any] | None = None) -> ParquetExportResult:
    """Write ``manifest`` as a Parquet dataset into ``out`` (a folder or store URL); see the module doc."""
    import pyarrow.parquet as pq

    if include not in ("kept", "all"):
        raise ValueError(f"include must be kept or all, got {include!r}")
    if rows_per_part < 1:
        raise ValueError(f"rows per part must be >= 1, got {rows_per_part}")
    t0 = time.perf_counter()
    ref = locate(manifest, storage_options)
    store = Store(out, storage_options)
    result = ParquetExportResult(out=store.url(""))
    schema = None

    def selected_tables() -> Iterator[pa.Table]:
        nonlocal schema
        for table in iter_tables(ref, batch_rows=min(rows_per_part, 65536)):
            result.read += len(table)
            schema = schema or table.schema
            yield _absolute(_select(table, include), ref.base)

    with tempfile.TemporaryDirectory(prefix="soraprep-parquet-") as scratch:
        for i, part in enumerate(_chunks(selected_tables(), rows_per_part)):
            name = f"part-{i:05d}.parquet"
            local = Path(scratch) / name
            pq.write_table(part, local)
            store.put_file(local, name)
            local.unlink()
            result.parts.append({"file": name, "rows": len(part)})
            result.rows += len(part)
        if not result.parts and schema is not None:   # nothing selected: one empty part keeps the schema readable
            local = Path(scratch) / "part-00000.parquet"
            pq.write_table(schema.empty_table(), local)
            store.put_file(local, local.name)
            result.parts.append({"file": local.name, "rows": 0})
    keep = {p["file"] for p in result.parts}
    for key in store.list(""):
        if "/" not in key and PART.match(key) and key not in keep:
            store.delete(key)
            result.removed += 1
    result.seconds = time.perf_counter() - t0
    store.write_text(INDEX, json.dumps({"format": "parquet", "version": 1, "manifest": ref.url, "include": include,
                                        "rows_per_part": rows_per_part, "parts": result.parts,
                                        "num_rows": result.rows, "manifest_rows": result.read}, indent=1) + "\n")
    return result
