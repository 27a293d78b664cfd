r"""The manifest as a Parquet dataset: part files plus a small index, written and read without holding all rows.

A curate run keeps its manifest as ``OUT/manifest/part-00000.parquet ...`` and ``OUT/manifest/_index.json``
(parts written by workers, the index last; see :mod:`soraprep.curate.assemble`). Every part has the same
Arrow schema (the run's unified schema), so any Parquet reader can open the folder; the index says which
parts belong to the manifest, their row counts, the run's totals and the recipe metadata::

    {"format": "soraprep.manifest", "schema_version": 1, "metadata": {"soraprep.recipe": ...},
     "columns": [{"name": "clip_id", "type": "string"}, ...],
     "parts": [{"file": "part-00000.parquet", "rows": 500000, "kept": 1234, "errors": 5, "units": 5000,
                "first_unit": "...", "last_unit": "...", "bytes": ...}, ...],
     "totals": {"rows": ..., "kept": ..., "errors": ..., "units": ..., "parts": ...}}

``OUT/manifest.parquet`` and ``OUT/manifest.jsonl`` are single-file copies streamed from the parts
(:func:`write_single_files`; the writers live in :mod:`soraprep.manifest_parts`). Readers (:func:`locate`, :func:`iter_manifest`, and ``read_manifest`` in
:mod:`soraprep.manifest`) accept a ``.parquet``, a ``.jsonl``, a dataset folder, its ``_index.json``, a run
folder (its ``manifest.parquet`` when there is one, else its dataset), and store URLs of each. Clip paths
in a dataset are relative to the run folder (:func:`manifest_base`).
"""

from __future__ import annotations

import base64
import functools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from soraprep.manifest import META_VERSION, SCHEMA_VERSION, ManifestError, decode_path
from soraprep.manifest_parts import (
    _PART,
    DATASET,
    INDEX,
    ROW_GROUP_ROWS,
    SINGLE_JSONL,
    SINGLE_PARQUET,
    _join,
    schema_from_bytes,
)
from soraprep.storage.store import Store, is_remote, url_scheme

# --- reading -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ManifestSource:
    """Where a manifest lives: ``kind`` ``parquet`` / ``jsonl`` (``key`` is the file) or ``dataset``
    (``key`` is the dataset folder), inside ``store`` — the folder its rows' relative paths are relative to
    (a file's folder; OUT for a dataset)."""

    kind: str
    store: Store
    key: str
    name: str = ""  # as the user gave it (messages)

    @property
    def url(self) -> str:
        return self.store.url(self.key)

    @property
    def base(self) -> str:
        """The folder (path or URL) relative ``path`` cells are relative to."""
        return self.store.url("")

    def index(self) -> dict[str, Any]:
        """The dataset's ``_index.json``; for a folder of part files without one (written by another tool),
        its ``*.parquet`` files in name order (names starting with ``_`` or ``.`` skipped)."""
        if self.kind != "dataset":
            raise ValueError("only a dataset has an index")
        try:
            return _read_index(self.store, self._k(INDEX), self.name or self.url)
        except ManifestError:
            files = sorted(k.rsplit("/", 1)[-1] for k in self.store.list(self.key) if k.endswith(".parquet")
                           and k.count("/") == self._k("x").count("/"))
            files = [f for f in files if not f.startswith(("_", "."))]
            if not files:
                raise
            return {"parts": [{"file": f} for f in files]}  # no (usable) index: the folder's part files

    def _k(self, name: str) -> str:
        return _join(self.key, name)

    def _open(self, key: str):
        return str(self.store.local_path(key)) if not self.store.remote else self.store.open(key, "rb")

    def _parquet(self, key: str) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self._open(key))
        except (pa.ArrowException, OSError) as exc:
            where = self.store.url(key)
            raise ManifestError(f"{where} is not a readable Parquet manifest: {str(exc).splitlines()[0]}") from exc

    def schema(self) -> pa.Schema:
        """The manifest's Arrow schema (with its metadata) without reading rows (JSONL: reads the file)."""
        if self.kind == "parquet":
            return _checked(self._parquet(self.key).schema_arrow, self.name)
        if self.kind == "jsonl":
            return self.table().schema
        index = self.index()
        if index.get("arrow_schema"):
            schema = schema_from_bytes(base64.b64decode(index["arrow_schema"]))
        elif index["parts"]:
            schema = self._parquet(self._k(index["parts"][0]["file"])).schema_arrow
        else:
            from soraprep.manifest import rows_to_table

            schema = rows_to_table([]).schema
        meta = dict(schema.metadata or {})
        if "schema_version" in index:
            meta[META_VERSION] = str(index["schema_version"]).encode()
        meta.update({k.encode(): str(v).encode() for k, v in (index.get("metadata") or {}).items()})
        return _checked(schema.with_metadata(meta), self.name or self.url)

    def metadata(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in (self.schema().metadata or {}).items()}

    def batches(self, columns: list[str] | None = None, batch_rows: int = ROW_GROUP_ROWS) -> Iterator[pa.RecordBatch]:
        """The rows as Arrow record batches, in manifest order (``columns``: a projection; names the manifest
        lacks are skipped)."""
        if self.kind == "jsonl":
            table = self.table()
            if columns is not None:
                table = table.select([c for c in columns if c in table.column_names])
            yield from table.to_batches(max_chunksize=batch_rows)
            return
        if self.kind == "parquet":
            files = [self.key]
        else:
            files = [self._k(p["file"]) for p in self.index()["parts"]]
        for key in files:
            pf = self._parquet(key)
            if self.kind == "parquet":
                _checked(pf.schema_arrow, self.name)
            cols = None if columns is None else [c for c in columns if c in pf.schema_arrow.names]
            yield from pf.iter_batches(batch_size=batch_rows, columns=cols)

    def table(self) -> pa.Table:
        """Every row in one Arrow table (the in-memory readers; prefer :meth:`batches`)."""
        if self.kind == "jsonl":
            from soraprep.manifest import _read_jsonl, rows_to_table

            if self.store.remote:
                from soraprep.storage.store import local_copy

                with local_copy(self.url, self.store.storage_options) as local:
                    return rows_to_table(_read_jsonl(local))
            return rows_to_table(_read_jsonl(self.store.local_path(self.key)))
        if self.kind == "parquet":
            pf = self._parquet(self.key)
            try:
                table = pf.read()
            except (pa.ArrowException, OSError) as exc:
                raise ManifestError(f"{self.name} is not a readable Parquet manifest: "
                                    f"{str(exc).splitlines()[0]}") from exc
            return table.replace_schema_metadata(_checked(table.schema, self.name).metadata)
        schema = self.schema()
        batches = list(self.batches())
        return pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()


def _checked(schema: pa.Schema, name: str) -> pa.Schema:
    version = int((schema.metadata or {}).get(META_VERSION, b"0"))
    if version > SCHEMA_VERSION:
        raise ManifestError(f"{name} has manifest schema v{version}; this soraprep reads up to "
                            f"v{SCHEMA_VERSION}. Upgrade soraprep.")
    return schema


def _read_index(store: Store, key: str, name: str) -> dict[str, Any]:
    try:
        index = json.loads(store.read_text(key))
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {store.url(key)}") from None
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{store.url(key)} is not a manifest index: {exc}") from exc
    if not isinstance(index, dict) or not isinstance(index.get("parts"), list):
        raise ManifestError(f"{store.url(key)} is not a manifest index (no parts list)")
    if int(index.get("schema_version", 0)) > SCHEMA_VERSION:
        raise ManifestError(f"{name} has manifest schema v{index['schema_version']}; this soraprep reads up to "
                            f"v{SCHEMA_VERSION}. Upgrade soraprep.")
    return index


def locate(path: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> ManifestSource:
    """Which manifest ``path`` names: a ``.parquet``/``.jsonl`` file, a dataset folder or its ``_index.json``,
    or a run folder (its ``manifest.parquet`` if present, else ``manifest/``, else ``manifest.jsonl``);
    local paths and store URLs alike. Raises :class:`ManifestError` when there is none."""
    text = str(path)
    remote = is_remote(text)
    if not remote and url_scheme(text) in ("file", "local"):
        text = text.split("://", 1)[1]
    if remote:
        return _locate_remote(text.rstrip("/"), storage_options)
    p = Path(text)
    if not p.exists():
        raise ManifestError(f"manifest not found: {path}")
    if p.is_file():
        if p.name == INDEX:
            return _dataset(Store(p.parent, storage_options), text)
        store = Store(p.parent, storage_options)
        return ManifestSource("jsonl" if p.suffix == ".jsonl" else "parquet", store, p.name, text)
    if not p.is_dir():
        raise ManifestError(f"{path} is not a file: give a manifest (.parquet or .jsonl)")
    store = Store(p, storage_options)
    if (p / INDEX).is_file():
        return _dataset(store, text)
    if (p / SINGLE_PARQUET).is_file():
        return ManifestSource("parquet", store, SINGLE_PARQUET, str(p / SINGLE_PARQUET))
    if (p / DATASET / INDEX).is_file() or any((p / DATASET).glob("*.parquet")):
        return ManifestSource("dataset", store, DATASET, str(p / DATASET))
    if (p / SINGLE_JSONL).is_file():
        return ManifestSource("jsonl", store, SINGLE_JSONL, str(p / SINGLE_JSONL))
    raise ManifestError(f"{path} is not a file: give a manifest (.parquet or .jsonl), a manifest/ dataset "
                        "folder or a curate output folder")


def _dataset(folder: Store, name: str) -> ManifestSource:
    """The dataset in ``folder``, rooted at the folder above it (where its clips' relative paths start)."""
    root = folder.url().rstrip("/")
    if folder.remote:
        parent, _, key = root.rpartition("/")
        if "://" not in parent or parent.endswith(":/"):  # a dataset at a bucket's root: paths relative to it
            return ManifestSource("dataset", folder, "", name)
    else:
        p = Path(root).resolve()
        parent, key = str(p.parent), p.name
        if p.parent == p:
            return ManifestSource("dataset", folder, "", name)
    return ManifestSource("dataset", Store(parent, folder.storage_options), key, name)


def _locate_remote(url: str, storage_options: dict[str, Any] | None) -> ManifestSource:
    parent, _, name = url.rpartition("/")
    if name.endswith((".parquet", ".jsonl")) or name == INDEX:
        store = Store(parent, storage_options)
        if not store.isfile(name):
            raise ManifestError(f"manifest not found: {url}")
        if name == INDEX:
            return _dataset(store, url)
        return ManifestSource("jsonl" if name.endswith(".jsonl") else "parquet", store, name, url)
    store = Store(url, storage_options)
    listing = store.list("")  # one listing call
    if INDEX in listing:
        return _dataset(store, url)
    if SINGLE_PARQUET in listing:
        return ManifestSource("parquet", store, SINGLE_PARQUET, f"{url}/{SINGLE_PARQUET}")
    if f"{DATASET}/{INDEX}" in listing or any(k.startswith(f"{DATASET}/") and k.endswith(".parquet")
                                               and k.count("/") == 1 for k in listing):
        return ManifestSource("dataset", store, DATASET, f"{url}/{DATASET}")
    if SINGLE_JSONL in listing:
        return ManifestSource("jsonl", store, SINGLE_JSONL, f"{url}/{SINGLE_JSONL}")
    raise ManifestError(f"manifest not found: {url} (no manifest.parquet, manifest/_index.json or "
                        "manifest.jsonl there)")


def iter_manifest(path: str | os.PathLike | ManifestSource, columns: list[str] | None = None,
                  batch_rows: int = ROW_GROUP_ROWS, *, batches: bool = False,
                  storage_options: dict[str, Any] | None = None) -> Iterator[Any]:
    """Stream a manifest in manifest order: row dicts (escaped file names decoded, as ``read_manifest``
    gives them) or, with ``batches=True``, Arrow record batches as stored. One batch in memory at a time
    (a JSONL manifest is read whole: its column types are inferred over every line)."""
    source = path if isinstance(path, ManifestSource) else locate(path, storage_options)
    for batch in source.batches(columns=columns, batch_rows=batch_rows):
        if batches:
            yield batch
            continue
        from soraprep.manifest import table_rows

        yield from table_rows(pa.Table.from_batches([batch]))


def manifest_base(manifest_path: str) -> str:
    """The folder relative ``path`` cells of ``manifest_path``'s rows are relative to: a file's folder; for a
    dataset (its folder, its ``_index.json`` or a part file) and a run folder, the run folder (OUT)."""
    text = str(manifest_path).rstrip("/") or "/"
    if not is_remote(text) and os.path.exists(text):
        return _local_base(text)  # cached: export resolves one path per row
    return _base(text)


@functools.lru_cache(maxsize=256)
def _local_base(text: str) -> str:
    return _base(text)


def _base(text: str) -> str:
    if is_remote(text):
        parent, _, name = text.rpartition("/")
        if name == INDEX or _PART.match(name):
            return parent.rpartition("/")[0]
        if name.endswith((".parquet", ".jsonl")) or name == DATASET:
            return parent
        return text
    p = Path(text).resolve()
    if p.name == INDEX or (_PART.match(p.name) and (p.parent / INDEX).is_file()):
        return str(p.parent.parent)
    if p.is_dir():
        dataset = (p / INDEX).is_file() or (p.name == DATASET and any(p.glob("*.parquet")))
        return str(p.parent) if dataset else str(p)
    return str(p.parent)


def resolve_row_path(manifest_path: str | os.PathLike, path: str) -> str:
    """A row's ``path`` as usable here: URLs and absolute paths as-is, others joined to :func:`manifest_base`."""
    path = decode_path(path)
    if "://" in path or os.path.isabs(path):
        return path
    base = manifest_base(str(manifest_path))
    if is_remote(base):
        return base.rstrip("/") + "/" + path.replace(os.sep, "/").lstrip("/")
    return str(Path(base) / path)
