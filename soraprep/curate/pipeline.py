"""``curate()``: inputs -> clips, manifest and report, on one machine. The library behind ``soraprep curate``.

    from soraprep.curate.pipeline import curate
    result = curate(["videos/"], "out", workers=2)        # out/manifest.parquet, out/clips/, out/report.html
    result = rethreshold("out", recipe="strict.yaml")     # new thresholds, no decoding

The manifest is assembled from the committed units in input order, so it is the same whatever the
number of workers and however often the run was interrupted.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soraprep.curate.inputs import collect_units
from soraprep.curate.lock import clean_partials, out_lock
from soraprep.curate.recipe import Recipe, load_recipe
from soraprep.curate.runners.local import pending_units, read_unit, run_local
from soraprep.manifest import read_manifest, read_metadata, write_manifest

MANIFEST = "manifest.parquet"


@dataclass
class CurateResult:
    out: Path
    manifest: Path
    report: Path | None
    rows: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def errors(self) -> int:
        return sum(1 for r in self.rows if r.get("error"))

    @property
    def kept(self) -> int:
        return sum(1 for r in self.rows if r.get("keep"))

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0


def _progress(total: int, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]curate"), BarColumn(), MofNCompleteColumn(), TextColumn("videos"),
                    TimeRemainingColumn(), disable=not enabled, transient=False)


def _clean_partials(out: Path) -> None:
    clean_partials(out)  # half-written files of a killed run: soraprep's own temp names only (see lock.py)


def _locked(position: int):
    """Run the function holding the lock of its OUT argument (``out=`` or the ``position``-th argument):
    one run per OUT, see lock.py. OUT and OUT/.soraprep are removed again when the call created them and
    left them empty (e.g. a usage error)."""
    return functools.partial(_locked_fn, position)


def _locked_fn(position: int, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        out = Path(kwargs["out"] if "out" in kwargs else args[position])
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
           ray_address: str | None = None, max_worker_memory: int | str | None = "auto",
           unit_timeout_s: float | None = None) -> CurateResult:
    """Curate ``inputs`` (files, folders, manifests) into ``out``; resumes a previous run in ``out``.

    ``runner="ray"`` runs the same stages on a Ray cluster (``ray_address``; a local one when None).
    A worker over ``max_worker_memory`` (bytes or e.g. ``"4GiB"``; ``"auto"``: 80 % of the machine's memory
    shared by the workers; None/0: no bound) or a unit running past ``unit_timeout_s`` is stopped and its
    unit committed as an error row (``out_of_memory``, ``timeout``); a unit whose worker dies twice becomes
    ``worker_died``. OUT is locked while it runs (a second run raises ``OutInUseError``).
    """
    from soraprep.curate.runners.supervisor import Limits, parse_size

    if runner not in ("local", "ray"):
        raise ValueError(f"runner must be 'local' or 'ray', got {runner!r}")
    t0 = time.perf_counter()
    out = Path(out)
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if cut is not None:
        rec = rec.with_overrides(cut={"mode": cut})
    limits = Limits(max_memory_bytes=parse_size(max_worker_memory, workers), unit_timeout_s=unit_timeout_s)
    units = collect_units([str(i) for i in inputs], skip_dirs=(out,))
    out.mkdir(parents=True, exist_ok=True)
    _clean_partials(out)
    with _progress(len(units), progress) as bar:
        task = bar.add_task("curate", total=len(units))
        done_before = len(units) - len(pending_units(units, out))
        bar.advance(task, done_before)
        if runner == "ray":
            from soraprep.curate.runners.ray import run_ray

            summaries = run_ray(units, recipe=rec, out=out, workers=workers, address=ray_address, limits=limits,
                                auto_memory=str(max_worker_memory).strip().lower() == "auto")
        else:
            summaries = run_local(units, recipe=rec, out=out, workers=workers, limits=limits)
        for _summary in summaries:
            bar.advance(task, 1)
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    for u in units:
        unit_rows, unit_t = read_unit(out, u["_key"])
        rows += unit_rows
        for k, v in unit_t.items():
            timings[k] = timings.get(k, 0.0) + v
    rows = apply_global(rows, rec, timings, refilter=True)
    return _finish(out, rows, rec, timings, t0, report, inputs=[str(i) for i in inputs])


def apply_global(rows: list[dict[str, Any]], rec: Recipe, timings: dict[str, float], *,
                 refilter: bool) -> list[dict[str, Any]]:
    """Run the recipe's global stages (``phase = "global"``, e.g. ``dedup``) once over every row, in
    manifest order, so their columns can be thresholded like any other.

    In ``curate`` the units were already filtered without these columns: ``refilter`` re-applies the
    same (pure) filter, which can only drop clips (they keep their files; their bucket labels go, as
    bucket labels only kept clips). Deterministic over committed units, so resume still yields the
    same manifest. ``rethreshold`` calls this before its own filter instead (``refilter=False``).
    """
    from soraprep.curate.registry import STAGES

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


def _finish(out: Path, rows, rec: Recipe, timings, t0, report: bool, inputs: list[str]) -> CurateResult:
    meta = {"soraprep.recipe": rec.to_yaml(), "soraprep.recipe_hash": rec.hash}
    manifest = write_manifest(out / MANIFEST, rows, metadata=meta, jsonl=True)
    rows = read_manifest(manifest)  # every row with every column, as readers will see them
    wall = time.perf_counter() - t0
    run = {"inputs": inputs, "recipe": rec.source, "recipe_hash": rec.hash, "stage_time_s": timings,
           "wall_time_s": wall, "rows": len(rows)}
    (out / "run.json").write_text(json.dumps(run, indent=2))
    report_path = None
    if report:
        from soraprep.curate.report import write_report

        report_path = write_report(out)
    return CurateResult(out, manifest, report_path, rows, timings, wall)


@_locked(0)
def rethreshold(out: str | Path, *, recipe: str | Path | Recipe | None = None, cut: str | None = None,
                report: bool = True) -> CurateResult:
    """Re-apply the recipe's filters (and cut/bucket newly kept clips) to a finished run, without decoding.

    Scores are read from ``out/manifest.parquet``; only the ``filter``, ``cut`` and ``bucket`` sections of
    the new recipe matter. Clips that become kept are cut now; clips that become dropped keep their files.
    """
    from soraprep.video.io import scan_packets

    t0 = time.perf_counter()
    out = Path(out)
    manifest = out / MANIFEST
    rows = read_manifest(manifest)
    if recipe is None:
        from soraprep.curate.recipe import validate

        text = read_metadata(manifest).get("soraprep.recipe")
        import yaml

        data = yaml.safe_load(text) if text else {}
        data.pop("version", None)
        rec = validate(data, "previous run") if data else load_recipe()
    else:
        rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if cut is not None:
        rec = rec.with_overrides(cut={"mode": cut})
    stages = {s.name: s for s in rec.build(out) if s.name in ("filter", "cut", "bucket")}
    timings: dict[str, float] = {}
    indexes: dict[str, Any] = {}
    for r in rows:
        r.pop("bucket", None), r.pop("bucket_height", None), r.pop("bucket_width", None), r.pop("bucket_frames", None)
    rows = apply_global(rows, rec, timings, refilter=False)  # e.g. dedup with a new max_hamming, then filter
    t = time.perf_counter()
    rows = stages["filter"](rows)
    timings["filter"] = time.perf_counter() - t
    to_cut = [r for r in rows if r.get("keep") and not r.get("error") and r.get("cut_mode") in (None, "none")]
    t = time.perf_counter()
    if stages["cut"].mode != "none":
        for r in to_cut:
            src = r["source"]
            if src not in indexes:
                try:
                    indexes[src] = scan_packets(src)
                except Exception:  # the cut stage records the error on the row
                    indexes[src] = None
            r["_index"] = indexes[src]
        stages["cut"](to_cut)
        for r in to_cut:
            r.pop("_index", None)
    timings["cut"] = time.perf_counter() - t
    rows = stages["bucket"](rows)
    return _finish(out, rows, rec, timings, t0, report, inputs=[str(manifest)])
