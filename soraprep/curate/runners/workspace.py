"""A unit's work on any OUT: run against a local scratch OUT, then published to the object store.

The stages, ``local.run_unit``, the ``cut`` stage and the thumbnails write local files under one OUT
folder. When OUT is an object store (``s3://bucket/runs/r1``, any fsspec URL) a worker runs each unit
against a local *scratch* OUT instead and publishes the result, in this order:

1. **fetch**: the unit's stored analysis (``.soraprep/analysis/<key>.parquet``) and its stale commit
   (``.soraprep/stale/<key>.parquet``, left by ``pipeline.reconcile``) into the scratch OUT, so a
   decision-only rerun skips decoding; a previous clip counts as reusable when one listing of its
   ``clips/<video_id>/`` prefix on the store shows it (nothing is downloaded).
2. **run**: ``local.run_unit`` exactly as for a local OUT (it commits into the scratch OUT).
3. **publish**: every file the unit wrote (clips, thumbnails, its analysis) is PUT; the previous commit's
   clips and thumbnails that the new rows no longer name are deleted; then the unit commit
   (``.soraprep/units/<key>.parquet``) in one PUT, **last**; then the stale commit is deleted.

A unit is done iff its commit object exists, and every file its rows name is on the store by then. A
worker killed anywhere before the commit PUT leaves the unit pending: the rerun redoes it and overwrites
the same keys (clip and thumbnail names derive from ids only), so the final manifest is the same.
Pending units are one listing of ``.soraprep/units/``.

API (runner-neutral: the local runner's supervised workers use it, a Ray actor can call the same):

    out = Store("s3://bucket/runs/r1", storage_options)     # a local folder works too (no scratch then)
    todo = pending_units(out, units)                        # one listing of .soraprep/units/
    # in a worker process, once:  state = WorkerState.open(sections, source, out.root, storage_options, scratch)
    summary = run_unit_on(state, out, unit, on_stage)       # fetch, run_unit, publish (commit last)
    # in the parent, for a unit its worker could not finish (died, out of memory, timeout):
    commit_error(out, unit, stage, kind, message, recipe_hash, fingerprints)
    is_committed(out, key) · summary_of(out, key) · read_unit(out, key) -> (rows, timings)
    read_units(out, keys) -> (key, rows, timings) ...       # many commits, fetched concurrently in chunks
    unit_fingerprints(out, key) · move_to_stale(out, key)   # reconcile()'s two operations
    put_many(out, [(local, key)]) · get_many(out, [(key, local)])   # concurrent whole-object PUTs / GETs
    # lower level, for a runner that drives run_unit itself:
    with UnitWorkspace(out, key, scratch_dir) as ws:       # ws.root: the scratch OUT, emptied, fetched
        ...                                                 # run the unit against ws.root (the out_dir the
                                                            # stages were built with: one per worker, reused)
        ws.publish()                                        # clips, thumbs, analysis; orphans; commit LAST

``clean_partials`` (lock.py) is for local OUTs only: an object store has no half-written objects (a PUT
lands whole or not at all); a killed worker's scratch folder is removed by its supervisor
(:func:`worker_scratch`).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from soraprep.storage import Store

UNITS = ".soraprep/units"
ANALYSIS = ".soraprep/analysis"
STALE = ".soraprep/stale"


def unit_key(key: str) -> str:
    return f"{UNITS}/{key}.parquet"


def analysis_key(key: str) -> str:
    return f"{ANALYSIS}/{key}.parquet"


def stale_key(key: str) -> str:
    return f"{STALE}/{key}.parquet"


def out_store(out: str | os.PathLike | Store, storage_options: dict[str, Any] | None = None) -> Store:
    """OUT as a Store (a local path or a store URL)."""
    return out if isinstance(out, Store) else Store(out, storage_options)


def worker_scratch(root: str | Path | None, pid: int) -> Path:
    """The scratch folder of worker ``pid`` under a run's scratch ``root`` (its supervisor removes it if
    the worker is killed)."""
    return Path(root or tempfile.gettempdir()) / f"soraprep-worker-{pid}"


#: scratch folders soraprep processes make in the temp dir, named with the pid that owns them
_OWNED = re.compile(r"^soraprep-(?:scratch|worker|ray-[a-z]+)-(\d+)(?:-|$)")


def scratch_prefix(kind: str) -> str:
    """The name prefix of a scratch folder this process makes (``kind``: ``scratch``, ``ray-analysis`` ...)."""
    return f"soraprep-{kind}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def sweep_scratch(root: str | Path | None = None) -> list[Path]:
    """Remove the scratch folders (staged sources, scratch OUTs) that soraprep processes left in ``root``
    (default: the temp dir) when they were killed before they could clean up (``kill -9`` of a run, a Ray
    actor killed with its node's raylet). Only folders whose owning pid no longer runs in this pid namespace
    (a temp dir shared by containers with separate pid namespaces must not hold soraprep scratch)."""
    removed = []
    base = Path(root or tempfile.gettempdir())
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _OWNED.match(p.name)
        if m and p.is_dir() and not p.is_symlink() and not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


# -- the parent's view of a store OUT -----------------------------------------------------------------

def committed_keys(out: Store) -> set[str]:
    """Keys of every committed unit: one listing of ``.soraprep/units/``."""
    return {k[len(UNITS) + 1:-len(".parquet")] for k in out.list(UNITS) if k.endswith(".parquet")}


def pending_units(out: Store, units: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The units not committed yet (what a resumed run still has to do)."""
    done = committed_keys(out)
    return [u for u in units if u["_key"] not in done]


def is_committed(out: Store, key: str) -> bool:
    return out.exists(unit_key(key))


def _read_table(out: Store, key: str):
    from soraprep.manifest import read_table

    if not out.remote:
        return read_table(out.local_path(key))
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(out.read_bytes(key)))


def read_unit(out: Store, key: str) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """A committed unit's rows and stage timings."""
    from soraprep.manifest import table_rows

    table = _read_table(out, unit_key(key))
    meta = table.schema.metadata or {}
    return table_rows(table), json.loads(meta.get(b"soraprep.unit_timings", b"{}"))


def summary_of(out: Store, key: str) -> dict[str, Any]:
    """The summary of a unit that is already committed."""
    rows, timings = read_unit(out, key)
    return {"key": key, "clips": len(rows), "errors": sum(1 for r in rows if r.get("error")), "timings": timings}


def unit_fingerprints(out: Store, key: str) -> tuple[dict[str, str] | None, str]:
    """(stage fingerprints, whole-recipe hash) a committed unit was written under (a footer read)."""
    import pyarrow.parquet as pq

    with out.open(unit_key(key)) as fh:
        meta = pq.read_schema(fh).metadata or {}
    raw = meta.get(b"soraprep.fingerprints")
    return (json.loads(raw) if raw else None), meta.get(b"soraprep.recipe_hash", b"").decode()


def move_to_stale(out: Store, key: str) -> None:
    """A committed unit goes back to pending, its commit kept as ``.soraprep/stale/<key>.parquet``.

    Copy, then delete: killed between the two, the unit is still committed and the next reconcile
    moves it again (the copy is overwritten)."""
    out.copy(unit_key(key), stale_key(key))
    out.delete(unit_key(key))


def commit_error(out: Store, unit: dict[str, Any], stage: str, kind: str, message: str,
                 recipe_hash: str, fingerprints: dict[str, str] | None = None) -> dict[str, Any]:
    """Commit ``unit`` as one error row from the parent (its worker died or was stopped)."""
    from soraprep.curate.runners import local

    if not out.remote:
        return local.commit_error(out.local_path(), unit, stage, kind, message, recipe_hash, fingerprints)
    with tempfile.TemporaryDirectory(prefix="soraprep-commit-") as tmp:
        summary = local.commit_error(Path(tmp), unit, stage, kind, message, recipe_hash, fingerprints)
        out.put_file(local.unit_path(Path(tmp), unit["_key"]), unit_key(unit["_key"]))  # one PUT
    return summary


def put_many(out: Store, files: list[tuple[Path, str]]) -> None:
    """PUT local files as keys, concurrently on an object store (fsspec's batched ``put``: each file is
    still its own whole-object PUT, so none is ever seen half-written)."""
    if not files:
        return
    if not out.remote:
        for local, key in files:
            out.put_file(local, key)
        return
    out.fs.put([str(local) for local, _ in files], [out.url(key) for _, key in files])


def get_many(out: Store, files: list[tuple[str, Path]]) -> list[Path]:
    """Fetch keys to local files, concurrently on an object store; missing keys are skipped. Returns the
    local files that were written."""
    if out.remote and files:
        for _, local in files:
            local.parent.mkdir(parents=True, exist_ok=True)
        try:
            out.fs.get([out.url(key) for key, _ in files], [str(local) for _, local in files])
            return [local for _, local in files]
        except Exception:  # noqa: BLE001 - one missing key fails the batch: drop what it wrote, go one by one
            for _, local in files:
                local.unlink(missing_ok=True)
    got = []
    for key, local in files:
        try:
            got.append(out.get_file(key, local))
        except (OSError, ValueError):
            pass
    return got


def read_units(out: Store, keys: list[str], chunk: int = 256):
    """Committed units' (key, rows, timings), in ``keys`` order; on an object store fetched ``chunk`` at a
    time concurrently (one GET each)."""
    from soraprep.manifest import table_rows

    if not out.remote:
        for key in keys:
            yield (key, *read_unit(out, key))
        return
    import pyarrow.parquet as pq

    for i in range(0, len(keys), chunk):
        part = keys[i:i + chunk]
        urls = [out.url(unit_key(k)) for k in part]
        out.fs.invalidate_cache()
        blobs = out.fs.cat(urls)
        for key, url in zip(part, urls):
            data = blobs.get(url)
            if data is None:  # the filesystem may name it without its scheme
                data = next(v for u, v in blobs.items() if url.endswith(u))
            table = pq.read_table(io.BytesIO(data))
            meta = table.schema.metadata or {}
            yield key, table_rows(table), json.loads(meta.get(b"soraprep.unit_timings", b"{}"))


# -- a worker's unit --------------------------------------------------------------------------------

class UnitWorkspace:
    """A scratch OUT for one unit of a store OUT: fetched on entry, published by :meth:`publish`, removed
    on exit. ``root`` is the scratch folder (it is emptied first: a worker reuses one per unit)."""

    def __init__(self, out: Store, key: str, scratch: str | Path):
        self.out, self.key, self.root = out, key, Path(scratch)
        self._fetched: dict[str, tuple[int, int]] = {}  # key -> (size, mtime_ns) as fetched
        self.previous: list[dict[str, Any]] = []  # the stale commit's rows
        self._listed: dict[str, set[str]] = {}

    def __enter__(self) -> UnitWorkspace:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        for key in (analysis_key(self.key), stale_key(self.key)):
            try:
                local = self.out.get_file(key, self.root / key)
            except FileNotFoundError:
                continue
            st = local.stat()
            self._fetched[key] = (st.st_size, st.st_mtime_ns)
        if stale_key(self.key) in self._fetched:
            from soraprep.manifest import read_table, table_rows

            try:
                self.previous = table_rows(read_table(self.root / stale_key(self.key)))
            except (OSError, ValueError):
                self.previous = []
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def has(self, key: str) -> bool:
        """Whether the store holds ``key`` (e.g. a previous clip): one listing per folder, cached."""
        key = key.replace(os.sep, "/").lstrip("/")
        folder = key.rsplit("/", 1)[0] if "/" in key else ""
        if folder not in self._listed:
            try:
                self._listed[folder] = set(self.out.list(folder)) if folder else set()
            except (OSError, ValueError):
                self._listed[folder] = set()
        return key in self._listed[folder]

    def _written(self) -> list[str]:
        """Keys of the files the unit wrote into the scratch OUT (fetched, unchanged files excluded)."""
        keys = []
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                p = Path(dirpath, f)
                key = p.relative_to(self.root).as_posix()
                if key.startswith((UNITS + "/", STALE + "/")):
                    continue
                st = p.stat()
                if self._fetched.get(key) == (st.st_size, st.st_mtime_ns):
                    continue
                keys.append(key)
        # clips and thumbnails before the analysis (any order works: only the commit marks the unit done)
        return sorted(keys, key=lambda k: (k.startswith(".soraprep/"), k))

    def _orphans(self, rows: list[dict[str, Any]]) -> list[str]:
        """Keys of the previous commit's clips and thumbnails that ``rows`` no longer name."""
        from soraprep.curate.cutting import thumb_path

        paths = {str(r.get("path")) for r in rows}
        ids = {r.get("clip_id") for r in rows}
        keys = []
        for r in self.previous:
            p = r.get("path")
            if p and r.get("cut_mode") not in (None, "none") and p not in paths:
                key = str(p).replace(os.sep, "/")
                if key.startswith("clips/") and ".." not in key.split("/"):  # only files runs write
                    keys.append(key)
            if r.get("clip_id") and r["clip_id"] not in ids:
                keys.append(thumb_path(self.root, r["clip_id"]).relative_to(self.root.resolve()).as_posix())
        return keys

    def publish(self) -> list[str]:
        """PUT what the unit wrote, delete its orphans, PUT its commit (last), drop its stale commit.
        Returns the keys written."""
        from soraprep.manifest import read_table, table_rows

        commit = self.root / unit_key(self.key)
        if not commit.is_file():
            raise RuntimeError(f"unit {self.key} wrote no commit into {self.root}")
        written = self._written()
        put_many(self.out, [(self.root / key, key) for key in written])
        for key in self._orphans(table_rows(read_table(commit))):
            self.out.delete(key)
        self.out.put_file(commit, unit_key(self.key))  # the unit is done from here on
        if stale_key(self.key) in self._fetched:
            self.out.delete(stale_key(self.key))
        return written + [unit_key(self.key)]


def run_unit_on(state, out: Store, unit: dict[str, Any],
                on_stage: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``unit`` in this worker (``state``: its :class:`~.state.WorkerState`, opened for ``out``) and
    publish it to ``out``.

    For a local OUT this is ``local.run_unit`` itself (the unit commits in place)."""
    from soraprep.curate.runners import local

    if not out.remote:
        return local.run_unit(state, unit, on_stage)
    with UnitWorkspace(out, unit["_key"], state.out) as ws:
        state.workspace = ws
        try:
            summary = local.run_unit(state, unit, on_stage)
        finally:
            state.workspace = None
        if not summary.get("fatal"):
            ws.publish()
    return summary


__all__ = ["UnitWorkspace", "commit_error", "committed_keys", "get_many", "is_committed", "move_to_stale",
           "out_store", "pending_units", "put_many", "read_units", "read_unit", "run_unit_on", "summary_of", "unit_fingerprints",
           "worker_scratch"]
