"""Manifests at a local path or a store URL: find, stream, resolve the files rows name, write back.

The commands that take a manifest (``export``, ``caption``, ``encode``, ``download``) accept

- a manifest file: ``OUT/manifest.parquet`` / ``.jsonl``, local or ``s3://bucket/runs/r1/manifest.parquet``;
- a run folder ``OUT`` (local or URL): its ``manifest.parquet``, else the Parquet dataset ``OUT/manifest/``
  (the parts its ``_index.json`` names, in order); the dataset folder or its ``_index.json`` themselves.

A row's ``path`` (and ``source``) is absolute, a URL, or relative to the folder the manifest describes:
the manifest file's folder, or ``OUT`` for the dataset form. :func:`resolve` turns it into a path or URL
usable from anywhere.

Reading goes through :mod:`soraprep.manifest_dataset` (the streaming reader of every manifest form, incl.
the dataset's ``_index.json``); this module keeps the commands' small API over it. Batches keep the
manifest's schema (no row dicts for the Parquet export); rows are dicts with escaped file names decoded
(:func:`soraprep.manifest.table_rows`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa

from soraprep.manifest import ManifestError, decode_path, table_rows, write_jsonl, write_manifest
from soraprep.manifest_dataset import ManifestSource
from soraprep.manifest_dataset import locate as _locate
from soraprep.storage.store import StorageError, is_remote, split_url

#: rows per streamed batch
BATCH_ROWS = 8192
MANIFEST_FILE = "manifest.parquet"
DATASET_DIR = "manifest"

#: where a manifest is: ``store`` (the folder its rows' relative paths are relative to) + ``key`` (the file or
#: the dataset folder) + ``kind`` (parquet | jsonl | dataset); ``.url``, ``.base``, ``.schema()``, ``.batches()``
ManifestRef = ManifestSource


def locate(manifest: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> ManifestRef:
    """The manifest named by ``manifest`` (a file, a run folder, a ``manifest/`` dataset or its ``_index.json``;
    local or URL); ManifestError if none (see :func:`soraprep.manifest_dataset.locate`)."""
    try:
        return _locate(manifest, storage_options)
    except StorageError as exc:
        raise ManifestError(str(exc)) from None


def iter_tables(ref: ManifestRef, batch_rows: int = BATCH_ROWS) -> Iterator[pa.Table]:
    """The manifest as Arrow tables of at most ``batch_rows`` rows, in manifest order, one schema (at least one
    table: an empty manifest gives one empty table with its schema)."""
    schema = ref.schema()
    empty = True
    for batch in ref.batches(batch_rows=batch_rows):
        empty = False
        table = pa.Table.from_batches([batch])
        yield table.replace_schema_metadata(schema.metadata) if table.schema.equals(schema) else \
            table.cast(schema)
    if empty:
        yield schema.empty_table()


def schema_of(ref: ManifestRef) -> pa.Schema:
    """The manifest's Arrow schema (with its metadata), without reading rows."""
    return ref.schema()


def iter_rows(ref: ManifestRef, batch_rows: int = BATCH_ROWS) -> Iterator[dict[str, Any]]:
    """The manifest's rows as dicts, streamed (one batch in memory)."""
    for table in iter_tables(ref, batch_rows):
        yield from table_rows(table)


def read_rows(manifest: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """All rows of a manifest (local or URL) as dicts."""
    return list(iter_rows(locate(manifest, storage_options)))


def read_meta(ref: ManifestRef) -> dict[str, str]:
    """The manifest's key-value metadata (``soraprep.*`` entries), decoded."""
    return ref.metadata()


def resolve(base: str, path: str) -> str:
    """A row's ``path`` usable from anywhere: URLs and absolute paths as they are, others joined to ``base``."""
    path = decode_path(path)
    if "://" in path or os.path.isabs(path):
        return path
    if is_remote(base):
        return base.rstrip("/") + "/" + PurePosixPath(path.replace(os.sep, "/")).as_posix().lstrip("/")
    return str(Path(base).resolve() / path)


def write_rows(url: str | os.PathLike, rows: list[dict[str, Any]], *, metadata: dict[str, str] | None = None,
               storage_options: dict[str, Any] | None = None) -> str:
    """Write ``rows`` as a manifest file (``.parquet``, or ``.jsonl`` by suffix) at a path or URL, atomically
    (locally temp + rename; on a store one PUT of the finished file). Returns where it went."""
    text = str(url)
    jsonl = PurePosixPath(text).suffix.lower() == ".jsonl"
    if not is_remote(text):
        if jsonl:
            from soraprep.manifest import rows_to_table

            write_jsonl(text, rows_to_table(rows, metadata).to_pylist())
        else:
            write_manifest(text, rows, metadata=metadata)
        return text
    store, name = split_url(text, storage_options)
    with tempfile.TemporaryDirectory(prefix="soraprep-manifest-") as tmp:
        local = Path(tmp) / name
        write_rows(local, rows, metadata=metadata)
        return store.put_file(local, name)


def put_file(local: str | os.PathLike, url: str, storage_options: dict[str, Any] | None = None) -> str:
    """Copy a finished local file to a path or URL atomically."""
    store, name = split_url(str(url), storage_options)
    return store.put_file(local, name)
