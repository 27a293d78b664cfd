"""``curate()``: inputs -> clips, manifest and report, on one machine. The library behind ``soraprep curate``.

    from soraprep.curate.pipeline import curate
    result = curate(["videos/"], "out", workers=2)        # out/manifest.parquet, out/clips/, out/report.html
    result = rethreshold("out", recipe="strict.yaml")     # new thresholds, no decoding

The manifest is assembled from the committed units in input order, so it is the same whatever the
number of workers and however often the run was interrupted.

Rerunning into an OUT made with another recipe never returns stale rows (:func:`reconcile`): videos whose
decision settings (filter, cut, bucket) changed are re-decided from their stored analysis, without
decoding; videos whose analysis settings (probe, analyze, split, score, model scorers) changed stop the
run (exit 2) unless ``force=True`` re-analyses them.
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soraprep.curate.inputs import collect_units
from soraprep.curate.lock import clean_partials, out_lock
from soraprep.curate.recipe import Recipe, RecipeError, check_filter_columns, load_recipe
from soraprep.curate.runners.local import (
    attach_indexes,
    pending_units,
    run_local,
    stale_path,
    unit_path,
)
from soraprep.manifest import read_manifest, read_metadata
from soraprep.storage import Store, is_remote

MANIFEST = "manifest.parquet"


@dataclass
class CurateResult:
    """A finished run. ``manifest`` is ``OUT/manifest.parquet`` (or the ``OUT/manifest/`` dataset with
    ``single_file=False``); ``totals`` are the index's counts. ``rows`` reads the manifest on first access:
    the run itself never holds every row."""

    out: Path
    manifest: Path
    report: Path | None
    totals: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    redone: dict[str, int] = field(default_factory=dict)  # {"redecided": n, "reanalysed": m} videos
    storage_options: dict[str, Any] | None = field(default=None, repr=False)  # a store OUT's options
    _rows: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every row of the manifest (read on first access; stream big runs with ``iter_manifest(result.manifest)``)."""
        if self._rows is None:
            self._rows = read_manifest(self.manifest, self.storage_options)
        return self._rows

    @property
    def summary(self):
        """The run's counts (:class:`soraprep.curate.report.RunSummary`), streamed from the manifest."""
        from soraprep.curate.report_stats import collect
        from soraprep.manifest_dataset import locate

        return collect(locate(self.manifest, self.storage_options), histograms=False).summary()

    @property
    def errors(self) -> int:
        return self.totals.get("errors", 0)

    @property
    def kept(self) -> int:
        return self.totals.get("kept", 0)

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0


def _progress(total: int, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]curate"), BarColumn(), MofNCompleteColumn(), TextColumn("videos"),
                    TimeRemainingColumn(), disable=not enabled, transient=False)


class StaleOutError(RecipeError):
    """OUT holds videos analysed with other settings and ``force`` was not given (exit code 2)."""


STATE_KEY = ".soraprep/recipe.json"


def reconcile(units: list[dict[str, Any]], out: Path | Store, rec: Recipe, *, force: bool = False) -> dict[str, int]:
    """Make every committed unit of ``units`` one that ``rec`` would have produced, before the run.

    A unit committed under other decision settings goes back to pending with its analysis kept (the
    runner re-filters, re-cuts, re-buckets it without decoding); one committed under other analysis
    settings is re-analysed when ``force``, else :class:`StaleOutError` says what to do. Cheap when
    nothing changed: ``OUT/.soraprep/recipe.json`` records the fingerprints every commit was made under.
    ``out`` may be a store (one listing of the commits, a footer read per commit, copy-then-delete moves).
    """
    from soraprep.curate.runners import workspace

    fps = rec.fingerprints()
    store = workspace.out_store(out)
    try:
        if json.loads(store.read_text(STATE_KEY)) == fps:
            return {}
    except (OSError, ValueError):
        pass
    redecide, reanalyse, changed = [], [], set()
    done = workspace.committed_keys(store)
    for u in units:
        if u["_key"] not in done:
            continue
        have, old_hash = workspace.unit_fingerprints(store, u["_key"])
        if have is None:  # committed by an older soraprep: only its whole-recipe hash is known
            if old_hash != rec.hash:
                reanalyse.append(u)
                changed.add("recipe, committed by an older soraprep")
        elif have.get("analysis") != fps["analysis"]:
            reanalyse.append(u)
            changed |= {n for n in rec.analysis_stage_names() if have.get(n) != fps[n]}
            changed |= {n for n in have if n not in fps and n not in ("analysis", "decision")}
        elif have.get("decision") != fps["decision"]:
            redecide.append(u)
    if "split" in changed:
        changed = (changed - {"split"}) | {"split, which follows cut.mode/max_snap_s and filter.duration_s.min"}
    if reanalyse and not force:
        raise StaleOutError(
            f"{out}: {len(reanalyse)} of its videos were analysed with other settings "
            f"({', '.join(sorted(changed)) or 'analysis'} changed): rerun with --force to re-analyse them "
            "(their clips are replaced), or curate into a new --out")
    for u in redecide + reanalyse:
        if store.remote:
            workspace.move_to_stale(store, u["_key"])  # copy, then delete: safe if killed between
        else:
            stale = stale_path(store.local_path(), u["_key"])
            stale.parent.mkdir(parents=True, exist_ok=True)
            os.replace(unit_path(store.local_path(), u["_key"]), stale)  # pending; its clips reused or removed
    for u in reanalyse:
        store.delete(workspace.analysis_key(u["_key"]))
    store.write_text(STATE_KEY, json.dumps(fps, indent=2, sort_keys=True))
    return {k: v for k, v in (("redecided", len(redecide)), ("reanalysed", len(reanalyse))) if v}


def _locked(position: int):
    """Run the function holding the lock of its OUT argument (``out=`` or the ``position``-th argument):
    one run per OUT, see lock.py. OUT and OUT/.soraprep are removed again when the call created them and
    left them empty (e.g. a usage error)."""
    return functools.partial(_locked_fn, position)


def _locked_fn(position: int, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        out = kwargs["out"] if "out" in kwargs else args[position]
        if is_remote(out):  # an object store: nothing to tidy up (no folders)
            with out_lock(out, kwargs.get("storage_options")):
                return fn(*args, **kwargs)
        out = Path(out)
        fresh = [d for d in (out, out / ".soraprep") if not d.exists()]
        try:
            with out_lock(out):
                return fn(*args, **kwargs)
        finally:
            for d in reversed(fresh):
                try:
                    d.rmdir()
                except OSError:  # not empty: the run wrote something
                    pass

    return wrapper


@_locked(1)
def curate(inputs: list[str], out: str | Path, *, recipe: str | Path | Recipe | None = None, workers: int = 1,
           cut: str | None = None, progress: bool = False, report: bool = True, runner: str = "local",
           ray_address: str | None = None, force: bool = False, max_worker_memory: int | str | None = "auto",
           unit_timeout_s: float | None = None, storage_options: dict[str, Any] | None = None,
           single_file: bool = True) -> CurateResult:
    """Curate ``inputs`` (files, folders, manifests) into ``out``; resumes a previous run in ``out``.

    Inputs and ``out`` may be object-store URLs (``s3://bucket/videos/``, ``gs://...``; any fsspec URL),
    read and written with ``storage_options`` on top of the standard environment (``AWS_ENDPOINT_URL``...):
    sources are staged to local scratch per video; with a store OUT each video runs against a local
    scratch OUT and is published to the store, its commit last (see runners/workspace.py).

    ``runner="ray"`` runs the same stages on a Ray cluster (``ray_address``; a local one when None).
    A previous run with another recipe is brought up to date (see :func:`reconcile`; ``force``
    re-analyses videos whose analysis settings changed).
    A worker over ``max_worker_memory`` (bytes or e.g. ``"4GiB"``; ``"auto"``: 80 % of the machine's memory
    shared by the workers; None/0: no bound) or a unit running past ``unit_timeout_s`` is stopped and its
    unit committed as an error row (``out_of_memory``, ``timeout``); a unit whose worker dies twice becomes
    ``worker_died``. OUT is locked while it runs (a second run raises ``OutInUseError``).
    The manifest is assembled from the unit commits as ``OUT/manifest/`` (parts + index, see
    :mod:`.assemble`); ``single_file`` also streams ``OUT/manifest.parquet`` and ``OUT/manifest.jsonl``.
    """
    from soraprep.curate.runners.supervisor import Limits, parse_size

    if runner not in ("local", "ray"):
        raise ValueError(f"runner must be 'local' or 'ray', got {runner!r}")
    t0 = time.perf_counter()
    remote = is_remote(out)
    store = Store(out, storage_options)
    out = store if remote else Path(out)
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if cut is not None:
        rec = rec.with_overrides(cut={"mode": cut})
    limits = Limits(max_memory_bytes=parse_size(max_worker_memory, workers), unit_timeout_s=unit_timeout_s)
    units = collect_units([str(i) for i in inputs], skip_dirs=(store.root,), storage_options=storage_options)
    check_filter_columns(rec, {k for u in units for k in u if not k.startswith("_")})
    if not remote:
        out.mkdir(parents=True, exist_ok=True)
        clean_partials(out)  # half-written files of a killed run: soraprep's own temp names only (see lock.py)
    redone = reconcile(units, out, rec, force=force)
    with _progress(len(units), progress) as bar:
        task = bar.add_task("curate", total=len(units))
        done_before = len(units) - len(pending_units(units, out))
        bar.advance(task, done_before)
        if runner == "ray":
            from soraprep.curate.runners.ray import run_ray

            summaries = run_ray(units, recipe=rec, out=out, workers=workers, address=ray_address, limits=limits,
                                auto_memory=str(max_worker_memory).strip().lower() == "auto",
                                storage_options=storage_options)
        else:
            summaries = run_local(units, recipe=rec, out=out, workers=workers, limits=limits,
                                  storage_options=storage_options)
        for _summary in summaries:
            bar.advance(task, 1)
    return _finish(out, None, rec, {}, t0, report, inputs=[str(i) for i in inputs], redone=redone,
                   keys=[u["_key"] for u in units], single_file=single_file, workers=workers, runner=runner)


def apply_global(rows: list[dict[str, Any]], rec: Recipe, timings: dict[str, float], *,
                 refilter: bool) -> list[dict[str, Any]]:
    """Run the recipe's global stages (``phase = "global"``, e.g. ``dedup``) once over every row, in
    manifest order, so their columns can be thresholded like any other.

    In ``curate`` the units were already filtered without these columns: ``refilter`` re-applies the
    same (pure) filter, which can only drop clips (they keep their files; their bucket labels go, as
    bucket labels only kept clips). Deterministic over committed units, so resume still yields the
    same manifest. ``rethreshold`` calls this before its own filter instead (``refilter=False``).
    """
    from soraprep.stages import STAGES

    names = rec.global_stage_names()
    if not names:
        return rows
    t = time.perf_counter()
    for name in names:
        stage = STAGES[name](**rec.stage_kwargs(name))
        stage.setup()
        rows = stage(rows)
    if refilter:
        was_kept = [bool(r.get("keep")) for r in rows]
        rows = STAGES["filter"](**rec.stage_kwargs("filter"))(rows)
        for r, before in zip(rows, was_kept):
            if before and not r.get("keep"):
                for col in ("bucket", "bucket_height", "bucket_width", "bucket_frames"):
                    if col in r:
                        r[col] = None
    timings["global"] = timings.get("global", 0.0) + time.perf_counter() - t
    return rows


def _part_map(workers: int, units: int, runner: str = "local"):
    """The ``map`` for the assembly's tasks: this process for small runs, else Ray tasks (``--runner ray``)
    or a process pool."""
    import contextlib

    from soraprep.curate.assemble import SCAN_CHUNK

    if units <= SCAN_CHUNK:
        return contextlib.nullcontext(map)
    if runner == "ray":
        from soraprep.curate.runners.ray import ray_running, task_map

        if ray_running():
            return contextlib.nullcontext(task_map)
    if workers <= 1:
        return contextlib.nullcontext(map)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    @contextlib.contextmanager
    def pool():
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            yield ex.map

    return pool()


def _finish(out: Path | Store, rows, rec: Recipe, timings, t0, report: bool, inputs: list[str],
            redone: dict[str, int] | None = None, rethreshold_of: str | None = None, *,
            keys: list[str] | None = None, single_file: bool = True, workers: int = 1,
            runner: str = "local") -> CurateResult:
    """Write the manifest (dataset + index, single-file copies), run.json and the report into OUT (a folder
    or a :class:`Store`: every file is written whole, the index after the parts).

    ``keys``: assemble from those unit commits (curate: no row is held here); ``rows``: a manifest held in
    memory (``--rethreshold``)."""
    from soraprep.curate.assemble import DATASET, assemble, finish_single_files, manifest_metadata
    from soraprep.manifest import rows_to_table
    from soraprep.manifest_dataset import ManifestSource
    from soraprep.manifest_parts import write_rows_dataset

    store = out if isinstance(out, Store) else Store(out)
    meta = manifest_metadata(rec, rethreshold_of)
    if keys is not None:
        with _part_map(workers, len(keys), runner) as map_fn:
            asm = assemble(store, keys, rec, map_fn, metadata=meta, single_file=single_file)
        index = asm.index
        for k, v in asm.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    else:
        index = write_rows_dataset(store, rows_to_table(rows, meta))
        del rows
        finish_single_files(store, ManifestSource("dataset", store, DATASET, store.url(DATASET)), single_file)
    name = MANIFEST if single_file else DATASET
    manifest = store.url(name) if store.remote else Path(out) / name
    wall = time.perf_counter() - t0
    run = {"inputs": inputs, "recipe": rec.source, "recipe_hash": rec.hash, "fingerprints": rec.fingerprints(),
           "redone": redone or {}, "stage_time_s": timings, "wall_time_s": wall, "rows": index["totals"]["rows"]}
    if rethreshold_of:
        run["rethreshold_of"] = rethreshold_of
    store.write_text("run.json", json.dumps(run, indent=2))
    report_path = None
    if report:
        from soraprep.curate.report import write_report

        try:  # the manifest is written: a report bug must not turn a finished run into a crash
            report_path = write_report(store if store.remote else out)
        except Exception as exc:  # noqa: BLE001 - recorded in run.json; the CLI prints it as a warning
            run["report_error"] = f"{type(exc).__name__}: {exc}"
            store.write_text("run.json", json.dumps(run, indent=2))
    totals = {k: index["totals"][k] for k in ("rows", "kept", "errors")}
    return CurateResult(store.root if store.remote else out, manifest, report_path, totals, timings, wall,
                        redone=redone or {}, storage_options=store.storage_options or None)


def _cut_settings(section: dict[str, Any] | None) -> dict[str, Any]:
    from dataclasses import asdict

    from soraprep.curate.cutting import CutStage

    return {k: v for k, v in asdict(CutStage(**(section or {}))).items() if k != "out_dir"}


@_locked(0)
def rethreshold(out: str | Path, *, recipe: str | Path | Recipe | None = None, cut: str | None = None,
                report: bool = True, single_file: bool = True) -> CurateResult:
    """Re-apply the recipe's filters (and cut/bucket newly kept clips) to a finished run, without decoding.

    Scores are read from ``out/manifest.parquet``; only the ``filter``, ``cut`` and ``bucket`` sections of
    the new recipe matter. Clips that become kept are cut now; clips that become dropped keep their files.
    Holds the run's rows in memory (the in-memory path of the global stages, ``apply_global``).
    """
    t0 = time.perf_counter()
    out = Path(out)
    manifest = out  # its manifest.parquet, else its manifest/ dataset
    rows = read_manifest(manifest)
    import yaml

    text = read_metadata(manifest).get("soraprep.recipe")
    data = (yaml.safe_load(text) if text else None) or {}
    data.pop("version", None)
    if recipe is None:
        from soraprep.curate.recipe import validate

        rec = validate(data, "previous run") if data else load_recipe()
    else:
        rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if cut is not None:
        rec = rec.with_overrides(cut={"mode": cut})
    check_filter_columns(rec, {k for r in rows for k in r})
    if data and _cut_settings(data.get("cut")) != _cut_settings(rec.sections.get("cut")):
        raise RecipeError(f"--rethreshold keeps the clips as they were cut ({_cut_settings(data.get('cut'))}); "
                          f"to cut with other settings, rerun `soraprep curate` on the same inputs into {out} "
                          "with this recipe instead")
    stages = {s.name: s for s in rec.build(out) if s.name in ("filter", "cut", "bucket")}
    timings: dict[str, float] = {}
    for r in rows:
        r.pop("bucket", None), r.pop("bucket_height", None), r.pop("bucket_width", None), r.pop("bucket_frames", None)
    rows = apply_global(rows, rec, timings, refilter=False)  # e.g. dedup with a new max_hamming, then filter
    t = time.perf_counter()
    rows = stages["filter"](rows)
    timings["filter"] = time.perf_counter() - t
    to_cut = [r for r in rows if r.get("keep") and not r.get("error") and r.get("cut_mode") in (None, "none")]
    t = time.perf_counter()
    if stages["cut"].mode != "none":
        attach_indexes(to_cut)  # packet indexes for cutting (a demux, no decoding)
        stages["cut"](to_cut)
        for r in to_cut:
            r.pop("_index", None)
    timings["cut"] = time.perf_counter() - t
    rows = stages["bucket"](rows)
    previous = read_metadata(manifest)
    from soraprep.manifest_dataset import locate

    return _finish(out, rows, rec, timings, t0, report, inputs=[locate(manifest).name], single_file=single_file,
                   rethreshold_of=previous.get("soraprep.rethreshold_of") or previous.get("soraprep.recipe_hash"))
