r"""Writing the manifest dataset (layout in :mod:`soraprep.manifest_dataset`): one schema for every part, parts
streamed into whole objects (temp + rename locally, one upload to a store), the index last, single-file copies.

A run's units were typed one by one (an extra column all null in a unit is ``string`` there, an integer
column in one unit may be a float in another): :func:`unify_schemas` + :func:`manifest_schema` give the
schema one ``rows_to_table`` over every row would have given, and :func:`conform` casts each unit to it.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from soraprep.manifest import _ALWAYS, COLUMNS, META_VERSION, SCHEMA_VERSION, ManifestError
from soraprep.storage.files import publish, temp_path
from soraprep.storage.store import Store

if TYPE_CHECKING:
    from soraprep.manifest_dataset import ManifestSource

DATASET = "manifest"                 # the dataset folder inside OUT
INDEX = "_index.json"
SINGLE_PARQUET = "manifest.parquet"  # the single-file copies inside OUT
SINGLE_JSONL = "manifest.jsonl"
ROW_GROUP_ROWS = 65_536              # rows buffered per Parquet row group (bounds a writer's memory)
_JSONL_ROWS = 4096                   # rows turned into dicts at a time for manifest.jsonl
_PART = re.compile(r"^part-\d{5,}\.parquet$")


def part_name(part_no: int) -> str:
    return f"part-{part_no:05d}.parquet"


# --- schema ------------------------------------------------------------------------------------------

def unify_schemas(schemas: Iterable[pa.Schema]) -> pa.Schema:
    """One schema for tables whose extra columns were typed per table: ``null`` fields (a column that was
    all null there) take the other tables' type, ``int64`` and ``double`` become ``double`` (what one
    ``pa.array`` over all values would infer). Field order is left to :func:`manifest_schema`."""
    schemas = [s for s in schemas if s is not None]
    if not schemas:
        return pa.schema([])
    try:
        return pa.unify_schemas([s.remove_metadata() for s in schemas], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ManifestError(f"a column mixes value types across units ({str(exc).splitlines()[0]}); "
                            "give it one type in every row") from exc


def manifest_schema(schema: pa.Schema, metadata: dict[str, str] | None = None) -> pa.Schema:
    """The manifest's column order and types for the fields of ``schema``: known columns in ``COLUMNS``
    order with their fixed types (the always-present ones even when absent), then the others sorted by
    name, a column with no value anywhere (``null``) as ``string`` — exactly what ``rows_to_table`` makes
    of the same rows."""
    have = {f.name: f.type for f in schema}
    fields = [pa.field(c, t) for c, t in COLUMNS.items() if c in have or c in _ALWAYS]
    for name in sorted(set(have) - set(COLUMNS)):
        t = have[name]
        fields.append(pa.field(name, pa.string() if pa.types.is_null(t) else t))
    meta = {META_VERSION: str(SCHEMA_VERSION).encode()}
    for k, v in (metadata or {}).items():
        meta[k.encode()] = v.encode()
    return pa.schema(fields, metadata=meta)


def null_typed(schema: pa.Schema, table_or_counts) -> pa.Schema:
    """``schema`` with every extra (not a known) column that holds no value typed ``null``.

    ``table_or_counts``: the table itself, or ``{column: has_values}``."""
    fields = []
    for f in schema:
        if f.name in COLUMNS:
            fields.append(f)
            continue
        if isinstance(table_or_counts, dict):
            empty = not table_or_counts.get(f.name, True)
        else:
            col = table_or_counts.column(f.name)
            empty = col.null_count == len(col)
        fields.append(pa.field(f.name, pa.null()) if empty else f)
    return pa.schema(fields)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns, order and types (absent columns null)."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            c = table.column(f.name)
            if c.type != f.type:
                try:
                    c = c.cast(f.type)
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                    c = pa.array(c.to_pylist(), type=f.type)  # e.g. ints past 2**53 into double, as pa.array does
        else:
            c = pa.nulls(len(table), f.type)
        cols.append(c)
    return pa.Table.from_arrays(cols, schema=schema)


def schema_bytes(schema: pa.Schema) -> bytes:
    return schema.serialize().to_pybytes()


def schema_from_bytes(data: bytes) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(data))


# --- atomic streamed writers ---------------------------------------------------------------------------

class _Staged:
    """A local file that becomes ``key`` of ``store`` on :meth:`commit`: a temp name beside the target and a
    rename (local store), or a scratch file and one upload (object store). Nothing is visible before."""

    def __init__(self, store: Store, key: str):
        self.store, self.key = store, key
        if store.remote:
            self._dir = tempfile.mkdtemp(prefix="soraprep-part-")
            self.path = Path(self._dir) / Path(key).name
        else:
            self._dir = None
            target = store.local_path(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            self.path = temp_path(target)

    def commit(self) -> None:
        try:
            if self.store.remote:
                self.store.put_file(self.path, self.key)
            else:
                publish(self.path, self.store.local_path(self.key))
        finally:
            self.discard()

    def discard(self) -> None:
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
        else:
            self.path.unlink(missing_ok=True)


class ParquetSink:
    """Rows written to one Parquet object in row groups of ``row_group_rows``, streamed (bounded memory)."""

    def __init__(self, store: Store, key: str, schema: pa.Schema, row_group_rows: int = ROW_GROUP_ROWS):
        self.schema, self.row_group_rows = schema, row_group_rows
        self._staged = _Staged(store, key)
        self._writer = pq.ParquetWriter(str(self._staged.path), schema)
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self._buffer.append(table)
        self._buffered += len(table)
        self.rows += len(table)
        if self._buffered >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._writer.write_table(pa.concat_tables(self._buffer), row_group_size=self.row_group_rows)
        self._buffer, self._buffered = [], 0

    def close(self) -> None:
        try:
            self._flush()
            self._writer.close()
        except BaseException:
            self._staged.discard()
            raise
        self._staged.commit()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self._writer.close()
            self._staged.discard()


def write_single_files(store: Store, source: ManifestSource, *, parquet: bool = True, jsonl: bool = True,
                       batch_rows: int = ROW_GROUP_ROWS) -> None:
    """``OUT/manifest.parquet`` and ``OUT/manifest.jsonl`` streamed from the dataset ``source`` (one batch of
    rows in memory at a time); the same rows, columns, types and metadata as the parts."""
    schema = source.schema()
    sink = ParquetSink(store, SINGLE_PARQUET, schema) if parquet else None
    lines = _Staged(store, SINGLE_JSONL) if jsonl else None
    fh = open(lines.path, "w", encoding="utf-8") if lines else None  # noqa: SIM115 - closed below
    try:
        for batch in source.batches(batch_rows=batch_rows):
            if sink:
                sink.write(pa.Table.from_batches([batch], schema=schema))
            for start in range(0, len(batch) if fh else 0, _JSONL_ROWS):  # row dicts: a few thousand at a time
                for row in batch.slice(start, _JSONL_ROWS).to_pylist():
                    fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        if fh:
            fh.close()
            lines.commit()
        if sink:
            sink.close()
    except BaseException:
        if fh and not fh.closed:
            fh.close()
        if lines:
            lines.discard()
        if sink:
            sink._writer.close()
            sink._staged.discard()
        raise


def write_index(store: Store, *, schema: pa.Schema, parts: list[dict[str, Any]], units: int | None = None,
                prefix: str = DATASET) -> dict[str, Any]:
    """Write ``<prefix>/_index.json`` (last: it names the parts) and remove part files it does not name
    (a previous run's extra parts). Returns the index."""
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items() if k != META_VERSION}
    index = {
        "format": "soraprep.manifest", "schema_version": SCHEMA_VERSION, "metadata": meta,
        "columns": [{"name": f.name, "type": str(f.type)} for f in schema],
        "arrow_schema": base64.b64encode(schema_bytes(schema)).decode(),  # exact types, for readers
        "parts": parts,
        "totals": {"rows": sum(p["rows"] for p in parts), "kept": sum(p["kept"] for p in parts),
                   "errors": sum(p["errors"] for p in parts), "parts": len(parts),
                   "units": units if units is not None else sum(p.get("units", 0) for p in parts)},
    }
    store.write_text(_join(prefix, INDEX), json.dumps(index, indent=1, ensure_ascii=False))
    named = {p["file"] for p in parts}
    for key in store.list(prefix):
        folder, _, name = key.rpartition("/")
        if _PART.match(name) and name not in named and folder == prefix.strip("/"):
            store.delete(key)
    return index


def _join(prefix: str, name: str) -> str:
    return f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name


def part_counts(table: pa.Table) -> dict[str, int]:
    """Rows, kept rows and error rows of a manifest table (the index's counts)."""
    import pyarrow.compute as pc

    kept = int(pc.sum(pc.fill_null(table.column("keep"), False).cast(pa.int64())).as_py() or 0) \
        if "keep" in table.column_names else 0
    errors = int(table.column("error").is_valid().cast(pa.int64()).to_numpy().sum()) \
        if "error" in table.column_names else 0
    return {"rows": len(table), "kept": kept, "errors": errors}


def write_rows_dataset(store: Store, table: pa.Table, *, rows_per_part: int = 500_000,
                       prefix: str = DATASET) -> dict[str, Any]:
    """A manifest held in memory (``--rethreshold``, captioning in place) written as the dataset form."""
    parts = []
    n = len(table)
    for part_no, start in enumerate(range(0, max(n, 1), rows_per_part)):
        chunk = table.slice(start, rows_per_part)
        with ParquetSink(store, _join(prefix, part_name(part_no)), table.schema) as sink:
            sink.write(chunk)
        parts.append({"file": part_name(part_no), **part_counts(chunk)})
    return write_index(store, schema=table.schema, parts=parts, prefix=prefix)
