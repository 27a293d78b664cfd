"""Manifests at a local path or a store URL: find, stream, resolve the files rows name, write back.

The commands that take a manifest (``export``, ``caption``, ``encode``, ``download``) accept

- a manifest file: ``OUT/manifest.parquet`` / ``.jsonl``, local or ``s3://bucket/runs/r1/manifest.parquet``;
- a run folder ``OUT`` (local or URL): its ``manifest.parquet``, else the Parquet dataset ``OUT/manifest/``
  (part files, read in name order).

A row's ``path`` (and ``source``) is absolute, a URL, or relative to the folder the manifest describes:
the manifest file's folder, or ``OUT`` for the dataset form. :func:`resolve` turns it into a path or URL
usable from anywhere.

Reading is isolated here (``iter_tables`` / ``iter_rows`` / ``read_rows``) so that the streaming reader
of the manifest dataset can take its place without touching the commands. Batches keep the Parquet
file's own schema (no row dicts for the Parquet export); rows are dicts with escaped file names decoded
(:func:`soraprep.manifest.table_rows`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa

from soraprep.manifest import (
    META_VERSION,
    SCHEMA_VERSION,
    ManifestError,
    decode_path,
    read_table,
    table_rows,
    write_jsonl,
    write_manifest,
)
from soraprep.storage.store import StorageError, Store, is_remote, join, local_copy, split_url

#: rows per streamed batch
BATCH_ROWS = 8192
MANIFEST_FILE = "manifest.parquet"
DATASET_DIR = "manifest"


@dataclass(frozen=True)
class ManifestRef:
    """Where a manifest is: ``store`` + ``key`` of a file (``kind`` parquet | jsonl) or of a dataset folder."""

    store: Store          # the folder the manifest's relative paths are relative to
    key: str              # the manifest file (or dataset folder) inside ``store``
    kind: str             # "parquet" | "jsonl" | "dataset"

    @property
    def url(self) -> str:
        return self.store.url(self.key)

    @property
    def base(self) -> str:
        """The folder relative paths of rows are relative to (a local path or a URL)."""
        return self.store.url("")


def locate(manifest: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> ManifestRef:
    """The manifest named by ``manifest`` (a file or a run folder, local or URL); ManifestError if none."""
    text = str(manifest).rstrip("/") if is_remote(str(manifest)) else str(manifest)
    suffix = PurePosixPath(text).suffix.lower()
    if suffix in (".parquet", ".jsonl"):
        try:
            folder, name = split_url(text, storage_options)
        except StorageError as exc:
            raise ManifestError(str(exc)) from None
        if not folder.isfile(name):
            raise ManifestError(f"manifest not found: {text}")
        return ManifestRef(folder, name, suffix[1:])
    store = Store(text, storage_options)
    if store.isfile(MANIFEST_FILE):
        return ManifestRef(store, MANIFEST_FILE, "parquet")
    if any(k.endswith(".parquet") for k in store.list(DATASET_DIR)):
        return ManifestRef(store, DATASET_DIR, "dataset")
    if not store.remote and Path(text).is_file():
        raise ManifestError(f"{text} is not a manifest: give a .parquet or .jsonl file, or a run folder")
    raise ManifestError(f"no manifest in {text}: expected {join(text, MANIFEST_FILE)} or {join(text, DATASET_DIR)}/")


def _check_version(schema: pa.Schema, where: str) -> None:
    version = int((schema.metadata or {}).get(META_VERSION, b"0"))
    if version > SCHEMA_VERSION:
        raise ManifestError(f"{where} has manifest schema v{version}; this soraprep reads up to v{SCHEMA_VERSION}. "
                            "Upgrade soraprep.")


def iter_tables(ref: ManifestRef, batch_rows: int = BATCH_ROWS) -> Iterator[pa.Table]:
    """The manifest as Arrow tables of at most ``batch_rows`` rows, in manifest order, one schema."""

    if ref.kind == "jsonl":
        with local_copy(ref.url, ref.store.storage_options) as local:
            table = read_table(local)
        yield from (table.slice(i, batch_rows) for i in range(0, max(len(table), 1), batch_rows))
        return
    if ref.kind == "dataset":
        parts = sorted(k for k in ref.store.list(ref.key) if k.endswith(".parquet")
                       and not PurePosixPath(k).name.startswith(("_", ".")))
        schema = None
        for part in parts:
            for table in _parquet_batches(ref.store, part, batch_rows):
                schema = schema or table.schema
                yield table if table.schema == schema else table.cast(schema)
        return
    yield from _parquet_batches(ref.store, ref.key, batch_rows)


def _parquet_batches(store: Store, key: str, batch_rows: int) -> Iterator[pa.Table]:
    import pyarrow.parquet as pq

    where = store.url(key)
    try:
        with store.open(key) as fh:
            pf = pq.ParquetFile(fh)
            schema = pf.schema_arrow
            _check_version(schema, where)
            empty = True
            for batch in pf.iter_batches(batch_size=batch_rows):
                empty = False
                yield pa.Table.from_batches([batch], schema=schema)
            if empty:
                yield schema.empty_table()
    except (pa.ArrowException, OSError) as exc:
        raise ManifestError(f"{where} is not a readable Parquet manifest: {str(exc).splitlines()[0]}") from exc


def schema_of(ref: ManifestRef) -> pa.Schema:
    """The manifest's Arrow schema (first batch)."""
    return next(iter_tables(ref, batch_rows=1)).schema


def iter_rows(ref: ManifestRef, batch_rows: int = BATCH_ROWS) -> Iterator[dict[str, Any]]:
    """The manifest's rows as dicts, streamed (one batch in memory)."""
    for table in iter_tables(ref, batch_rows):
        yield from table_rows(table)


def read_rows(manifest: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """All rows of a manifest (local or URL) as dicts."""
    return list(iter_rows(locate(manifest, storage_options)))


def read_meta(ref: ManifestRef) -> dict[str, str]:
    """The manifest's key-value metadata (``soraprep.*`` entries), decoded."""
    meta = schema_of(ref).metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items()}


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
