"""Assemble a run's manifest dataset from its unit commits without holding all rows anywhere.

Three passes over ``OUT/.soraprep/units/<key>.parquet``, each a list of small picklable tasks run through
``map_fn`` (builtin ``map`` in this process, a process pool's ``map``, or a Ray runner's task map):

1. :func:`scan_units` reads unit *footers* in chunks: row counts, stage timings, the schema with every
   all-null extra column typed ``null`` (so the run's schema is what one ``pa.array`` over all values
   would infer), and, when the recipe has global stages, the few columns those stages read (a column
   projection: ``clip_id``, ``phash``, ``error`` for dedup — compact Arrow arrays, never row dicts).
2. The driver unifies the schemas, runs each global stage's ``results(columns)`` over the projection
   (per-row output columns, in manifest order), and plans contiguous unit ranges of about
   ``rows_per_part`` rows.
3. :func:`write_part` writes one part from one unit range: units are read one at a time and streamed
   into the part in row groups; with global stages, each unit's rows get their slice of the results
   (``stage.apply``) and the recipe's filter again (clips can only become dropped; bucket labels of
   newly dropped clips go) — the same semantics as ``pipeline.apply_global``.

The index is written last (it names the parts), then the single-file copies are streamed from the parts.

A global stage (``phase = "global"``) offers, besides ``__call__(rows)`` (kept for ``--rethreshold``):
``reads`` (the columns it needs), ``results(columns: dict[str, pa.ChunkedArray]) -> pa.Table`` (its
output columns, one row per manifest row) and ``apply(rows, results)`` (sets them on row dicts).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from soraprep.curate.runners.workspace import unit_key
from soraprep.manifest import COLUMNS
from soraprep.manifest_dataset import ManifestSource
from soraprep.manifest_parts import (
    DATASET,
    ParquetSink,
    conform,
    manifest_schema,
    null_typed,
    part_counts,
    part_name,
    schema_bytes,
    schema_from_bytes,
    unify_schemas,
    write_index,
    write_single_files,
)
from soraprep.storage.store import Store

ROWS_PER_PART = 500_000
SCAN_CHUNK = 1000          # unit footers per scan task
_BUCKET_COLUMNS = ("bucket", "bucket_height", "bucket_width", "bucket_frames")


def manifest_metadata(rec, rethreshold_of: str | None = None) -> dict[str, str]:
    """The manifest's schema metadata for a run made with recipe ``rec``."""
    meta = {"soraprep.recipe": rec.to_yaml(), "soraprep.recipe_hash": rec.hash,
            "soraprep.fingerprints": json.dumps(rec.fingerprints(), sort_keys=True)}
    if rethreshold_of:  # rows re-filtered from a run made with this recipe (its analysis and cut spans)
        meta["soraprep.rethreshold_of"] = rethreshold_of
    return meta


def _unit_files(store: Store, keys, chunk: int = 256):
    """``(key, source)`` of each unit commit, in order: a local path, or the object's bytes fetched ``chunk``
    at a time concurrently (one GET each) from an object store."""
    if not store.remote:
        for key in keys:
            yield key, str(store.local_path(unit_key(key)))
        return
    import io

    keys = list(keys)
    for i in range(0, len(keys), chunk):
        part = keys[i:i + chunk]
        paths = [store._full(unit_key(k)) for k in part]
        blobs = store.fs.cat(paths)
        for key, path in zip(part, paths):
            data = blobs.get(path)
            if data is None:  # the filesystem may name it with or without its scheme
                data = next(v for u, v in blobs.items() if u.endswith(path) or path.endswith(u))
            yield key, io.BytesIO(data)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


# --- pass 1: footers (and the global stages' columns) --------------------------------------------------

@dataclass(frozen=True)
class ScanTask:
    store: Store
    keys: tuple[str, ...]
    reads: tuple[str, ...] = ()  # columns the global stages read


def _has_values(pf: pq.ParquetFile, names: list[str]) -> dict[str, bool]:
    """Whether each column holds any value, from the row-group statistics (the column itself when a
    writer left no null counts, or for nested columns)."""
    md = pf.metadata
    leaf = {md.schema.column(j).path: j for j in range(md.num_columns)}
    out = {}
    for name in names:
        if md.num_rows == 0:
            out[name] = False
            continue
        j, nulls = leaf.get(name), 0
        for g in range(md.num_row_groups if j is not None else 0):
            st = md.row_group(g).column(j).statistics
            if st is None or not st.has_null_count:
                j = None
                break
            nulls += st.null_count
        if j is None:
            col = pf.read(columns=[name]).column(0)
            nulls = col.null_count
        out[name] = nulls < md.num_rows
    return out


def scan_units(task: ScanTask) -> dict[str, Any]:
    """Row counts, summed stage timings and the unified (null-typed) schema of ``task.keys``' unit
    commits, plus the projection of ``task.reads`` (Arrow IPC bytes) when asked."""
    rows, timings, schemas, projected = [], {}, {}, []
    for _key, src in _unit_files(task.store, task.keys):
        pf = pq.ParquetFile(src)
        schema = pf.schema_arrow
        rows.append(pf.metadata.num_rows)
        for k, v in json.loads((schema.metadata or {}).get(b"soraprep.unit_timings", b"{}")).items():
            timings[k] = timings.get(k, 0.0) + v
        extras = [f.name for f in schema if f.name not in COLUMNS]
        typed = null_typed(schema.remove_metadata(), _has_values(pf, extras))
        schemas.setdefault(typed.to_string(), typed)
        if task.reads:
            have = [c for c in task.reads if c in schema.names]
            t = pf.read(columns=have, use_threads=False) if have else pa.table({})
            cols = {c: t.column(c) if c in have else pa.nulls(pf.metadata.num_rows, COLUMNS.get(c, pa.null()))
                    for c in task.reads}
            projected.append(pa.table(cols))
    return {"rows": rows, "timings": timings, "schema": schema_bytes(unify_schemas(schemas.values())),
            "projection": _ipc(pa.concat_tables(projected, promote_options="permissive")) if projected else None}


# --- pass 3: one part per unit range -------------------------------------------------------------------

@dataclass(frozen=True)
class PartTask:
    store: Store
    keys: tuple[str, ...]
    part_no: int
    schema: bytes                                  # the manifest schema (schema_bytes)
    stages: tuple[tuple[str, dict, str], ...] = ()  # global stages: (name, kwargs, module that registers it)
    results: tuple[bytes, ...] = ()                # each stage's results for this part's rows (IPC)
    refilter: dict | None = None                   # filter kwargs, re-applied when there are global stages
    prefix: str = DATASET


def write_part(task: PartTask) -> dict[str, Any]:
    """Write ``<prefix>/part-NNNNN.parquet`` from the unit commits ``task.keys`` (in order). Returns the
    part's index entry: file, rows, kept, errors, units, first/last unit, bytes, global_s."""
    import importlib

    from soraprep.curate.catalogue import STAGES  # the built-in stages (a fresh worker process)

    for _name, _kw, module in task.stages:
        importlib.import_module(module)  # a stage defined outside soraprep registers on import
    schema = schema_from_bytes(task.schema)
    stages = [STAGES[name](**kw) for name, kw, _module in task.stages]
    results = [_from_ipc(b) for b in task.results]
    filt = STAGES["filter"](**(task.refilter or {})) if stages else None
    counts = {"rows": 0, "kept": 0, "errors": 0}
    global_s, offset = 0.0, 0
    key = f"{task.prefix}/{part_name(task.part_no)}"
    with ParquetSink(task.store, key, schema) as sink:
        for _key, src in _unit_files(task.store, task.keys):
            raw = pq.ParquetFile(src).read(use_threads=False)  # small files: ~8x faster than with threads
            if stages:
                t = time.perf_counter()
                rows = raw.to_pylist()
                for stage, res in zip(stages, results):
                    stage.apply(rows, res.slice(offset, len(rows)))
                was_kept = [bool(r.get("keep")) for r in rows]
                rows = filt(rows)
                for r, before in zip(rows, was_kept):
                    if before and not r.get("keep"):
                        for col in _BUCKET_COLUMNS:
                            if col in r:
                                r[col] = None
                table = pa.Table.from_pylist(rows, schema=schema)
                global_s += time.perf_counter() - t
            else:
                table = conform(raw, schema)
            offset += len(raw)
            for k, v in part_counts(table).items():
                counts[k] += v
            sink.write(table)
    return {"file": part_name(task.part_no), **counts, "units": len(task.keys),
            "first_unit": task.keys[0] if task.keys else None, "last_unit": task.keys[-1] if task.keys else None,
            "bytes": task.store.size(key), "global_s": round(global_s, 6)}


def plan_parts(unit_rows: list[int], rows_per_part: int = ROWS_PER_PART) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` unit ranges of about ``rows_per_part`` rows (a unit is never split)."""
    ranges, start, n = [], 0, 0
    for i, r in enumerate(unit_rows):
        if n and n + r > rows_per_part:
            ranges.append((start, i))
            start, n = i, 0
        n += r
    if start < len(unit_rows):
        ranges.append((start, len(unit_rows)))
    return ranges


# --- the driver ------------------------------------------------------------------------------------------

@dataclass
class Assembly:
    index: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    source: ManifestSource | None = None


def assemble(store: Store, keys: list[str], recipe, map_fn: Callable[[Callable, Iterable], Iterable] = map, *,
             metadata: dict[str, str] | None = None, rows_per_part: int = ROWS_PER_PART,
             single_file: bool = True, scan_chunk: int = SCAN_CHUNK) -> Assembly:
    """Write ``OUT/manifest/`` (parts + ``_index.json``) from the unit commits ``keys`` (manifest order),
    running the recipe's global stages over a column projection; then, when ``single_file``, stream
    ``OUT/manifest.parquet`` and ``OUT/manifest.jsonl`` from the parts (else remove stale copies).
    ``map_fn(fn, tasks)`` runs the scan and part tasks (results in task order; e.g. a Ray runner's
    ``lambda fn, xs: ray.get([ray.remote(fn).remote(x) for x in xs])``). ``metadata`` defaults to
    :func:`manifest_metadata` of ``recipe``. Returns the index and the stage timings summed over the units
    (plus ``global``)."""
    from soraprep.stages import STAGES

    if metadata is None:
        metadata = manifest_metadata(recipe)
    if store.remote:
        store.fs.invalidate_cache()  # listings cached before the units were committed
    names = recipe.global_stage_names()
    stages = [(n, dict(recipe.stage_kwargs(n)), STAGES[n].__module__) for n in names]
    reads = tuple(dict.fromkeys(c for n in names for c in STAGES[n].reads))
    chunks = [tuple(keys[i:i + scan_chunk]) for i in range(0, len(keys), scan_chunk)]
    unit_rows: list[int] = []
    timings: dict[str, float] = {}
    schemas, projections = [], []
    for res in map_fn(scan_units, [ScanTask(store, c, reads) for c in chunks]):
        unit_rows += res["rows"]
        for k, v in res["timings"].items():
            timings[k] = timings.get(k, 0.0) + v
        schemas.append(schema_from_bytes(res["schema"]))
        if res["projection"] is not None:
            projections.append(_from_ipc(res["projection"]))
    t = time.perf_counter()
    results: list[pa.Table] = []
    if stages:
        proj = pa.concat_tables(projections, promote_options="permissive") if projections else None
        for name, kw, _module in stages:
            stage = STAGES[name](**kw)
            stage.setup()
            cols = {c: proj.column(c) if proj is not None else pa.chunked_array([], pa.null()) for c in stage.reads}
            res = stage.results(cols)
            results.append(res)
            schemas.append(null_typed(res.schema, res))
            if proj is not None:  # a later global stage may read what an earlier one wrote
                for c in res.column_names:
                    proj = proj.set_column(proj.column_names.index(c), c, res.column(c)) \
                        if c in proj.column_names else proj.append_column(c, res.column(c))
        del proj, projections
    schema = manifest_schema(unify_schemas(schemas), metadata)
    ranges = plan_parts(unit_rows, rows_per_part)
    offsets = [0]
    for r in unit_rows:
        offsets.append(offsets[-1] + r)
    refilter = dict(recipe.stage_kwargs("filter")) if stages else None
    sb = schema_bytes(schema)
    tasks = [PartTask(store, tuple(keys[a:b]), no, sb, tuple(stages),
                      tuple(_ipc(res.slice(offsets[a], offsets[b] - offsets[a])) for res in results), refilter)
             for no, (a, b) in enumerate(ranges)]
    del results
    global_s = time.perf_counter() - t
    parts = []
    for info in map_fn(write_part, tasks):
        global_s += info.pop("global_s", 0.0)
        parts.append(info)
    if stages:
        timings["global"] = timings.get("global", 0.0) + global_s
    index = write_index(store, schema=schema, parts=parts, units=len(keys))
    source = ManifestSource("dataset", store, DATASET, store.url(DATASET))
    finish_single_files(store, source, single_file)
    return Assembly(index, timings, source)


def finish_single_files(store: Store, source: ManifestSource, single_file: bool) -> None:
    """Stream the single-file copies from the dataset, or remove stale ones (``--no-single-file``) so no
    reader takes an old copy for the run's manifest."""
    from soraprep.manifest_parts import SINGLE_JSONL, SINGLE_PARQUET

    if single_file:
        write_single_files(store, source)
    else:
        store.delete(SINGLE_PARQUET)
        store.delete(SINGLE_JSONL)
