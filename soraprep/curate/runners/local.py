"""Local runner: a process pool over work units, committed one unit at a time, resumable.

A unit (one source video or span) runs through every stage inside one worker; its rows are then
committed atomically as ``OUT/.soraprep/units/<key>.parquet`` (written to a temp file, fsynced, renamed).
Clip files are themselves written atomically before the commit. After ``kill -9`` the rerun skips every
committed unit and redoes the rest (re-cutting overwrites any clip the killed run had finished), so the
final manifest equals an uninterrupted run's.

Beside each commit, ``OUT/.soraprep/analysis/<key>.parquet`` keeps the unit's rows as the analysis stages
left them (before ``filter``), stamped with the recipe's analysis fingerprint. A rerun whose recipe changed
only in its decisions (filter, cut, bucket) redoes those from it without decoding; the previous commit
then waits in ``OUT/.soraprep/stale/`` so unchanged clip files are reused and orphaned ones removed
(see ``pipeline.reconcile``).

OUT may be an object store (``s3://bucket/runs/r1``): each unit then runs against the worker's local
scratch OUT and is published with its commit last (:mod:`.workspace`, via :func:`run_worker_unit`);
sources on a store are staged to local scratch once per unit, when a stage first reads them
(:mod:`.sources`).

``run_unit`` is two halves the Ray runner also runs apart, on different actors: :func:`analyse_unit` (the
stages before ``filter``: the one decode pass and the scores) and :func:`decide_unit` (store the analysis,
``filter``, ``cut``, ``bucket``, later stages, commit).

Workers are child processes watched by :mod:`.supervisor`: a unit whose worker dies twice, outgrows the
memory bound or outlasts the time limit is committed as an error row (``worker_died``,
``out_of_memory``, ``timeout``) and the run goes on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from soraprep.curate.cutting import thumb_path
from soraprep.curate.runners.sources import StagedSources
from soraprep.curate.runners.state import WorkerState
from soraprep.curate.runners.supervisor import Limits, Supervisor, stage_modules, workers_can_build
from soraprep.manifest import read_table, table_rows, write_manifest
from soraprep.stages import error_dict
from soraprep.storage import Store
from soraprep.storage.files import atomic_write


def units_dir(out: Path) -> Path:
    return out / ".soraprep" / "units"


def unit_path(out: Path, key: str) -> Path:
    return units_dir(out) / f"{key}.parquet"


def analysis_path(out: Path, key: str) -> Path:
    return out / ".soraprep" / "analysis" / f"{key}.parquet"


def stale_path(out: Path, key: str) -> Path:
    return out / ".soraprep" / "stale" / f"{key}.parquet"


def unit_fingerprints(path: Path) -> dict[str, str] | None:
    """The stage fingerprints a unit (or analysis) file was written under; None for files of older soraprep."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"soraprep.fingerprints")
    return json.loads(raw) if raw else None


def pending_units(units: list[dict[str, Any]], out: Path | Store) -> list[dict[str, Any]]:
    """The units not committed yet (what a resumed run still has to do); a Store: one listing."""
    if isinstance(out, Store):
        from soraprep.curate.runners import workspace

        return workspace.pending_units(out, units)
    return [u for u in units if not unit_path(out, u["_key"]).exists()]


class StageSetupError(RuntimeError):
    """A stage could not set up (e.g. a model path that does not load): the run stops, nothing is committed."""


def _geometry(row: dict[str, Any]) -> None:
    h, w = row.get("height"), row.get("width")
    if h and w:  # Open-Sora's derived columns, so filters over them see what the manifest will say
        row["aspect_ratio"], row["resolution"] = h / w, h * w


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """The manifest row: private ``_`` keys dropped, Open-Sora's derived geometry columns filled in."""
    out = {k: v for k, v in row.items() if not k.startswith("_")}
    _geometry(out)
    return out


def _output_exists(state: WorkerState, out: Path, key: str) -> bool:
    """Whether OUT holds the file ``key`` (a previous clip): the store's listing for a store OUT."""
    ws = state.workspace
    return ws.has(key) if ws is not None else (out / key).is_file()


def _reads_footage(stage, decision: set[str]) -> bool:
    """Stages that open the source video: the analysis stages, and cut (unless it cuts nothing)."""
    return stage.name not in decision or (stage.name == "cut" and getattr(stage, "mode", "none") != "none")


def run_worker_unit(state: WorkerState, unit: dict[str, Any],
                    on_stage: Callable[[str], None] | None = None) -> dict[str, Any]:
    """What a worker runs for one unit: :func:`run_unit`, published to the store when OUT is one."""
    if state.store is None:
        return run_unit(state, unit, on_stage)
    from soraprep.curate.runners.workspace import run_unit_on

    return run_unit_on(state, state.store, unit, on_stage)


def decide_worker_unit(state: WorkerState, unit: dict[str, Any],
                       on_stage: Callable[[str], None] | None = None) -> dict[str, Any]:
    """What a Ray decision actor's supervised worker runs for one analysed unit: :func:`decide_unit` on
    ``unit["_analysed"]`` (``rows``, ``timings``, ``reused``), published to the store when OUT is one."""
    if state.setup_error:
        return {"key": unit["_key"], "fatal": state.setup_error}
    unit = dict(unit)
    item = unit.pop("_analysed")
    if state.store is None:
        return decide_unit(state, unit, item["rows"], item.get("timings") or {}, reused=bool(item.get("reused")),
                           on_stage=on_stage)
    from soraprep.curate.runners.workspace import UnitWorkspace

    with UnitWorkspace(state.store, unit["_key"], state.out) as ws:
        state.workspace = ws
        try:
            summary = decide_unit(state, unit, item["rows"], item.get("timings") or {},
                                  reused=bool(item.get("reused")), on_stage=on_stage)
        finally:
            state.workspace = None
        ws.publish()
    return summary


def reusable_analysis(out: Path, key: str, fingerprints: dict[str, str]) -> list[dict[str, Any]] | None:
    """The unit's stored analysis rows when they were made with this recipe's analysis settings."""
    path = analysis_path(out, key)
    try:
        if (unit_fingerprints(path) or {}).get("analysis") != fingerprints["analysis"]:
            return None
        return table_rows(read_table(path))  # file names as the OS sees them (fsbytes: decoded)
    except (OSError, ValueError):  # absent or unreadable: analyse again
        return None


def _previous_rows(out: Path, key: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    path = stale_path(out, key)
    try:
        return table_rows(read_table(path)), unit_fingerprints(path) or {}
    except (OSError, ValueError):
        return [], {}


_CUT_COLUMNS = ("path", "cut_mode", "start_frame", "end_frame", "num_frames", "start_s", "end_s", "duration_s",
                "width", "height", "aspect_ratio", "resolution")


def run_stage(stage, batch: list[dict[str, Any]], timings: dict[str, float]) -> list[dict[str, Any]]:
    """Run one stage on ``batch``; an exception becomes error rows (a stage bug must not take the run down).
    Returns the stage's rows (``batch`` itself when it raised); its time is added to ``timings``."""
    t0 = time.perf_counter()
    try:
        batch = stage(batch)
    except Exception as exc:  # the unit's rows record it
        kind = "out_of_memory" if isinstance(exc, MemoryError) else "internal_error"
        for r in batch:
            if not r.get("error"):
                r["error"] = error_dict(stage.name, kind, f"{type(exc).__name__}: {exc}")
    timings[stage.name] = timings.get(stage.name, 0.0) + time.perf_counter() - t0
    return batch


def run_unit(state: WorkerState, unit: dict[str, Any],
             on_stage: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every stage on one unit and commit its rows. Returns a small summary for the progress bar.

    When the unit's analysis is stored under this recipe's analysis fingerprint, only the decision
    stages run (no decoding); a kept clip whose previous file was cut with the same settings is reused.
    ``on_stage(name)`` is told each stage as it starts (the supervisor names it on a worker_died row).
    The two halves, :func:`analyse_unit` and :func:`decide_unit`, are what the Ray runner runs apart.
    """
    if state.setup_error:
        return {"key": unit["_key"], "fatal": state.setup_error}
    sources = StagedSources(state.storage_options, state.scratch)  # remote sources, once
    try:
        rows = reusable_analysis(state.out, unit["_key"], state.fingerprints)
        if rows is not None:
            return decide_unit(state, unit, rows, {}, reused=True, on_stage=on_stage, sources=sources)
        done = analyse_unit(state, unit, on_stage, sources=sources)
        return decide_unit(state, unit, done["rows"], done["timings"], reused=False, on_stage=on_stage,
                           sources=sources)
    finally:
        sources.close()


def analyse_unit(state: WorkerState, unit: dict[str, Any], on_stage: Callable[[str], None] | None = None,
                 sources: StagedSources | None = None) -> dict[str, Any]:
    """The analysis half: this worker's stages before ``filter`` (the one decode pass, the scores) on one
    unit. Returns ``{"key", "rows", "timings"}`` (rows keep their private ``_samples``/``_thumb``), or
    ``{"key", "fatal"}`` when a stage failed to set up. Writes nothing. A remote source is staged in
    ``sources`` (its own, removed on return, when None); the rows name the URL again on return."""
    if state.setup_error:
        return {"key": unit["_key"], "fatal": state.setup_error}
    rows, timings = [dict(unit)], {}
    own = sources is None
    sources = StagedSources(state.storage_options, state.scratch) if own else sources
    try:
        for stage in state.stages:
            if stage.name in state.decision:
                break
            if on_stage is not None:
                on_stage(stage.name)
            sources.localize(rows, stage.name)
            rows = run_stage(stage, rows, timings)
            sources.restore(rows)  # rows name the URLs again
    finally:
        if own:
            sources.close()
    return {"key": unit["_key"], "rows": rows, "timings": timings}


def decide_unit(state: WorkerState, unit: dict[str, Any], rows: list[dict[str, Any]],
                timings: dict[str, float], *, reused: bool, on_stage: Callable[[str], None] | None = None,
                sources: StagedSources | None = None) -> dict[str, Any]:
    """The decision half: store the analysis (unless ``reused`` from storage), run ``filter``, ``cut``,
    ``bucket`` and the stages after them on the analysed ``rows``, and commit the unit. Returns its summary.

    A kept clip whose previous file (a commit set aside by ``reconcile``) was cut with the same settings
    from the same analysis is reused, not cut again. A remote source is staged in ``sources`` when the
    cut needs it (its own, removed on return, when None). With ``state.workspace`` (a store OUT) a
    previous clip counts when the store holds it."""
    out, fps = state.out, state.fingerprints
    key = unit["_key"]
    timings = dict(timings)
    own = None  # a StagedSources made here (closed here)
    previous, previous_fps = _previous_rows(out, key)
    reuse_cut = {}
    if reused and previous_fps.get("cut") == fps.get("cut") and previous_fps.get("analysis") == fps["analysis"]:
        reuse_cut = {r["clip_id"]: r for r in previous if r.get("keep") and r.get("cut_mode") not in (None, "none")
                     and r.get("path") and _output_exists(state, out, r["path"])}
    if not reused:  # the analysis as stored: what a rerun with other decisions starts from
        _write_thumbs(out, rows)
        meta = {"soraprep.fingerprints": json.dumps(fps)}
        write_manifest(analysis_path(out, key), [_public(r) for r in rows], metadata=meta)
    for r in rows:
        _geometry(r)
    for stage in state.stages:
        if stage.name not in state.decision:
            continue
        if on_stage is not None:
            on_stage(stage.name)
        batch = rows
        if stage.name == "cut" and reuse_cut:
            batch = []
            for r in rows:
                old = reuse_cut.get(r.get("clip_id"))
                if r.get("keep") and not r.get("error") and old is not None:
                    r.update({c: old.get(c) for c in _CUT_COLUMNS})
                else:
                    batch.append(r)
        if _reads_footage(stage, state.decision):
            if sources is None:
                own = sources = StagedSources(state.storage_options, state.scratch)
            sources.localize([r for r in batch if stage.name != "cut" or r.get("keep")], stage.name)
        if stage.name == "cut" and reused and getattr(stage, "mode", "none") != "none":
            attach_indexes([r for r in batch if r.get("keep")])
        result = run_stage(stage, batch, timings)
        rows = result if batch is rows else rows
        if sources is not None:
            sources.restore(rows if batch is rows else rows + batch)  # rows name the URLs again
    if own is not None:
        own.close()
    public = _commit(out, unit, rows, timings, state.recipe_hash, fps)
    _drop_orphans(out, previous, public)
    stale_path(out, key).unlink(missing_ok=True)
    return {"key": key, "clips": len(public), "errors": sum(1 for r in public if r.get("error")),
            "timings": timings}


def _commit(out: Path, unit: dict[str, Any], rows: list[dict[str, Any]], timings: dict[str, float],
            recipe_hash: str, fingerprints: dict[str, str] | None) -> list[dict[str, Any]]:
    """Write the unit's manifest rows atomically (the commit a resumed run skips); returns them.

    Error rows get the same shape wherever they are committed (a worker's run_unit or the parent's
    commit_error): ``keep`` false, ``filter_reason`` "error", ``path`` the source, a ``-error`` clip id when
    the unit failed before it had clips."""
    public = [_public(r) for r in rows]
    for r in public:
        r.setdefault("keep", False)
        if r.get("error") and not r.get("clip_id"):
            r["clip_id"] = f"{unit.get('_base_id') or r.get('video_id')}-error"
        if r.get("error"):
            r["path"] = r.get("path") or r.get("source")
            r["filter_reason"] = "error"
    meta = {"soraprep.unit_timings": json.dumps(timings), "soraprep.recipe_hash": recipe_hash}
    if fingerprints:  # a rerun with other decisions then treats this unit like any other (see reconcile)
        meta["soraprep.fingerprints"] = json.dumps(fingerprints)
    write_manifest(unit_path(Path(out), unit["_key"]), public, metadata=meta)
    return public


def _write_thumbs(out: Path, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        thumb = r.get("_thumb")
        if thumb and r.get("clip_id"):
            atomic_write(thumb_path(out, r["clip_id"]), thumb, fsync=False)


def attach_indexes(rows: list[dict[str, Any]]) -> None:
    """Packet indexes for the cut stage (a demux, no decoding), one per source."""
    from soraprep.video.io import scan_packets

    indexes: dict[str, Any] = {}
    for r in rows:
        src = r.get("source")
        if r.get("error") or not src:
            continue
        if src not in indexes:
            try:
                indexes[src] = scan_packets(src)
            except Exception:  # the cut stage records the error on the row
                indexes[src] = None
        r["_index"] = indexes[src]


def _drop_orphans(out: Path, previous: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """Remove the clip files and thumbnails of a unit's previous commit that its new rows no longer name."""
    paths = {r.get("path") for r in rows}
    ids = {r.get("clip_id") for r in rows}
    clips = (out / "clips").resolve()
    for r in previous:
        p = r.get("path")
        if p and r.get("cut_mode") not in (None, "none") and p not in paths:
            f = (out / p).resolve()
            if clips in f.parents:  # only files this run wrote, whatever a manifest says
                f.unlink(missing_ok=True)
        if r.get("clip_id") and r["clip_id"] not in ids:
            thumb_path(out, r["clip_id"]).unlink(missing_ok=True)


def commit_error(out: Path, unit: dict[str, Any], stage: str, kind: str, message: str,
                 recipe_hash: str, fingerprints: dict[str, str] | None = None) -> dict[str, Any]:
    """Commit ``unit`` as one error row, from the parent (its worker died, or was stopped): the same row
    ``run_unit`` commits for a unit that failed before it had clips."""
    row = dict(unit, error=error_dict(stage, kind, message),
               clip_id=f"{unit.get('_base_id') or unit.get('video_id')}-error")
    _commit(out, unit, [row], {}, recipe_hash, fingerprints)
    return {"key": unit["_key"], "clips": 1, "errors": 1, "timings": {}}


def summary_of(out: Path | Store, key: str) -> dict[str, Any]:
    """The summary of a unit that is already committed."""
    if isinstance(out, Store):
        from soraprep.curate.runners import workspace

        return workspace.summary_of(out, key)
    rows, timings = read_unit(Path(out), key)
    return {"key": key, "clips": len(rows), "errors": sum(1 for r in rows if r.get("error")), "timings": timings}


def read_unit(out: Path | Store, key: str) -> tuple[list[dict[str, Any]], dict[str, float]]:
    if isinstance(out, Store):
        from soraprep.curate.runners import workspace

        return workspace.read_unit(out, key)
    table = read_table(unit_path(out, key))
    meta = table.schema.metadata or {}
    return table_rows(table), json.loads(meta.get(b"soraprep.unit_timings", b"{}"))


def run_local(units: list[dict[str, Any]], *, recipe, out: Path | Store, workers: int = 1,
              limits: Limits | None = None, storage_options: dict | None = None) -> Iterator[dict[str, Any]]:
    """Run the units not yet committed; yields each unit's summary as it completes (any order).

    Units run in supervised worker processes (see :mod:`.supervisor`). With one worker they run in this
    process instead (unsupervised: no memory bound, time limit or death detection) when every limit is
    off (``Limits(max_memory_bytes=None)``, for debugging) or when a stage was defined where no worker can
    import it (inside a function, in a notebook). ``out`` may be a Store (a store OUT: each unit runs
    against a worker's scratch OUT and is published, see :mod:`.workspace`)."""
    import tempfile

    from soraprep.curate.runners.workspace import scratch_prefix, sweep_scratch

    if isinstance(out, Store) and not out.remote:
        out = out.local_path()
    todo = pending_units(units, out)
    if not todo:
        return
    limits = limits or Limits()
    sweep_scratch()  # what a run killed with -9 left behind
    with tempfile.TemporaryDirectory(prefix=scratch_prefix("scratch")) as scratch:  # staged sources, scratch OUTs
        root = out.root if isinstance(out, Store) else str(out)
        init = (recipe.sections, recipe.source, root, dict(storage_options or {}), scratch)
        unlimited = limits.max_memory_bytes is None and limits.unit_timeout_s is None
        if workers <= 1 and (unlimited or not workers_can_build(recipe)):
            # in this process: its thread counts are restored and its stages (models) dropped on return
            with WorkerState.open(*init) as state:
                for u in todo:
                    yield _checked(run_worker_unit(state, u))
            return
        with Supervisor(init_args=init, out=out, recipe_hash=recipe.hash, workers=min(workers, len(todo)),
                        limits=limits, modules=stage_modules(recipe), fingerprints=recipe.fingerprints(),
                        scratch=scratch) as sup:
            for summary in sup.run(todo):
                yield _checked(summary)  # raising here stops the workers


def _checked(summary: dict[str, Any]) -> dict[str, Any]:
    if summary.get("fatal"):
        raise StageSetupError(summary["fatal"])
    return summary
