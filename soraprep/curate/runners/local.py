"""Local runner: supervised worker processes over work units, committed one unit at a time, resumable.

A unit (one source video or span) runs through every stage inside one worker; its rows are then
committed atomically as ``OUT/.soraprep/units/<key>.parquet`` (written to a temp file, fsynced, renamed).
Clip files are themselves written atomically before the commit. After ``kill -9`` the rerun skips every
committed unit and redoes the rest (re-cutting overwrites any clip the killed run had finished), so the
final manifest equals an uninterrupted run's.

Workers are child processes watched by :mod:`.supervisor`: a unit whose worker dies twice, outgrows the
memory bound or outlasts the time limit is committed as an error row (``worker_died``,
``out_of_memory``, ``timeout``) and the run goes on.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from soraprep.curate.cutting import thumb_path
from soraprep.curate.runners.supervisor import Limits, Supervisor, stage_modules, workers_can_build
from soraprep.curate.stage import error_dict
from soraprep.manifest import read_table, temp_path, write_manifest

_STATE: dict[str, Any] = {}


def units_dir(out: Path) -> Path:
    return out / ".soraprep" / "units"


def unit_path(out: Path, key: str) -> Path:
    return units_dir(out) / f"{key}.parquet"


def pending_units(units: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """The units not committed yet (what a resumed run still has to do)."""
    return [u for u in units if not unit_path(out, u["_key"]).exists()]


class StageSetupError(RuntimeError):
    """A stage could not set up (e.g. a model path that does not load): the run stops, nothing is committed."""


def _init_worker(recipe_sections: dict, recipe_source: str, out: str) -> None:
    """Build the stages and run their ``setup()`` once per worker.

    A failure is remembered rather than raised: a pool initializer that raises is respawned forever, so
    ``run_unit`` reports it instead and the parent stops the run with the message.
    """
    from soraprep.curate.recipe import validate

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _STATE.clear()
    _STATE["out"] = Path(out)
    name = "recipe"
    try:
        recipe = validate(recipe_sections, recipe_source)
        stages = recipe.build(out)
        for s in stages:
            name = s.name
            s.setup()
    except Exception as exc:  # reported by run_unit, raised in the parent as StageSetupError
        _STATE["setup_error"] = f"stage {name!r} failed to set up: {type(exc).__name__}: {exc}"
        return
    _STATE.update(stages=stages, recipe_hash=recipe.hash)


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """The manifest row: private ``_`` keys dropped, Open-Sora's derived geometry columns filled in."""
    out = {k: v for k, v in row.items() if not k.startswith("_")}
    h, w = out.get("height"), out.get("width")
    if h and w:
        out["aspect_ratio"], out["resolution"] = h / w, h * w
    return out


def run_unit(unit: dict[str, Any], on_stage: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every stage on one unit and commit its rows. Returns a small summary for the progress bar.

    ``on_stage(name)`` is told each stage as it starts (the supervisor names it on a worker_died row)."""
    if "setup_error" in _STATE:
        return {"key": unit["_key"], "fatal": _STATE["setup_error"]}
    stages, out = _STATE["stages"], _STATE["out"]
    rows = [dict(unit)]
    timings: dict[str, float] = {}
    for stage in stages:
        if on_stage is not None:
            on_stage(stage.name)
        t0 = time.perf_counter()
        try:
            rows = stage(rows)
        except Exception as exc:  # a stage bug must not take the run down: the unit's rows record it
            kind = "out_of_memory" if isinstance(exc, MemoryError) else "internal_error"
            for r in rows:
                if not r.get("error"):
                    r["error"] = error_dict(stage.name, kind, f"{type(exc).__name__}: {exc}")
        timings[stage.name] = timings.get(stage.name, 0.0) + time.perf_counter() - t0
    for r in rows:
        thumb = r.get("_thumb")
        if thumb and r.get("clip_id"):
            p = thumb_path(out, r["clip_id"])
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_path(p)
            tmp.write_bytes(thumb)
            os.replace(tmp, p)
    public = [_public(r) for r in rows]
    for r in public:
        r.setdefault("keep", False)
        if r.get("error") and not r.get("clip_id"):
            r["clip_id"] = f"{unit.get('_base_id') or r.get('video_id')}-error"
        if r.get("error"):
            r.setdefault("path", r.get("source"))
            r["filter_reason"] = "error"
    meta = {"soraprep.unit_timings": json.dumps(timings), "soraprep.recipe_hash": _STATE["recipe_hash"]}
    write_manifest(unit_path(out, unit["_key"]), public, metadata=meta)
    return {"key": unit["_key"], "clips": len(public), "errors": sum(1 for r in public if r.get("error")),
            "timings": timings}


def commit_error(out: Path, unit: dict[str, Any], stage: str, kind: str, message: str,
                 recipe_hash: str) -> dict[str, Any]:
    """Commit ``unit`` as one error row, from the parent (its worker died, or was stopped): the same row
    ``run_unit`` commits for a unit that failed before it had clips."""
    row = _public(dict(unit))
    row.update(error=error_dict(stage, kind, message), keep=False, filter_reason="error",
               clip_id=f"{unit.get('_base_id') or unit.get('video_id')}-error")
    row.setdefault("path", row.get("source"))
    meta = {"soraprep.unit_timings": "{}", "soraprep.recipe_hash": recipe_hash}
    write_manifest(unit_path(Path(out), unit["_key"]), [row], metadata=meta)
    return {"key": unit["_key"], "clips": 1, "errors": 1, "timings": {}}


def summary_of(out: Path, key: str) -> dict[str, Any]:
    """The summary of a unit that is already committed."""
    rows, timings = read_unit(Path(out), key)
    return {"key": key, "clips": len(rows), "errors": sum(1 for r in rows if r.get("error")), "timings": timings}


def read_unit(out: Path, key: str) -> tuple[list[dict[str, Any]], dict[str, float]]:
    table = read_table(unit_path(out, key))
    meta = table.schema.metadata or {}
    return table.to_pylist(), json.loads(meta.get(b"soraprep.unit_timings", b"{}"))


def run_local(units: list[dict[str, Any]], *, recipe, out: Path, workers: int = 1,
              limits: Limits | None = None) -> Iterator[dict[str, Any]]:
    """Run the units not yet committed; yields each unit's summary as it completes (any order).

    Units run in supervised worker processes (see :mod:`.supervisor`). With one worker they run in this
    process instead (unsupervised: no memory bound, time limit or death detection) when every limit is
    off (``Limits(max_memory_bytes=None)``, for debugging) or when a stage was defined where no worker can
    import it (inside a function, in a notebook)."""
    todo = pending_units(units, out)
    if not todo:
        return
    limits = limits or Limits()
    init = (recipe.sections, recipe.source, str(out))
    unlimited = limits.max_memory_bytes is None and limits.unit_timeout_s is None
    if workers <= 1 and (unlimited or not workers_can_build(recipe)):
        _init_worker(*init)
        for u in todo:
            yield _checked(run_unit(u))
        return
    with Supervisor(init_args=init, out=out, recipe_hash=recipe.hash, workers=min(workers, len(todo)),
                    limits=limits, modules=stage_modules(recipe)) as sup:
        for summary in sup.run(todo):
            yield _checked(summary)  # raising here stops the workers


def _checked(summary: dict[str, Any]) -> dict[str, Any]:
    if summary.get("fatal"):
        raise StageSetupError(summary["fatal"])
    return summary
