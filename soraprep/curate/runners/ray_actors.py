"""The Ray runner's actors: plain callable classes that Ray Data's ``map_batches`` runs as actor pools.

A unit travels between the pools as one Ray row, ``{"item": pickled dict}``::

    {"unit": {...}, "rows": [...] | None, "timings": {...}, "reused": bool,
     "error": [stage, kind, message] | None, "fatal": str | None, "done": bool}

``rows`` are the unit's rows as the analysis stages left them, private ``_samples`` (JPEG bytes) and
``_thumb`` included. ``error``: the analysis worker died, ran out of memory or time (the decision actor
commits the unit as that error row). ``fatal``: a stage could not set up (the driver stops the run).
``done``: the unit was already committed (a retried task); it passes through to its summary.

OUT is a shared folder or an object store (``s3://...``), the same for every actor. A unit's files reach
it one way: the decision actor's supervised worker runs ``local.decide_worker_unit`` (clips, thumbnails,
analysis, then its commit, last; on a store through the worker's scratch OUT and
:class:`.workspace.UnitWorkspace`); error rows and retried units go through :func:`commit_unit`.
:func:`committed_keys` is the one listing of commits, :func:`stored_analysis` the one read of a stored
analysis. A source on a store is staged to local scratch by ``local.analyse_unit`` / ``local.decide_unit``
(:mod:`.sources`): once for the decode pass and again on the decision actor when a kept clip is cut there.
Both the analysis and the decision actors run their stages in one supervised worker process each (memory
bound, time limit, death detection: :mod:`.supervisor`); model actors run theirs in the actor. Stages never
import Ray; neither does this module.
"""

from __future__ import annotations

import importlib
import io
import json
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from soraprep.curate.runners import local, workspace
from soraprep.curate.runners.state import WorkerState
from soraprep.stages import error_dict
from soraprep.storage import Store

Item = dict[str, Any]


# ---- the storage seam: staging sources, committing units, listing commits ------------------------------

def scratch_dir(tag: str) -> str:
    """A fresh local folder for this actor's staged sources and scratch OUT (on the actor's node)."""
    workspace.sweep_scratch()  # what killed actors of this node left behind
    return tempfile.mkdtemp(prefix=workspace.scratch_prefix(f"ray-{tag}"))


def stored_analysis(out: Store, key: str, fingerprints: dict[str, str]) -> list[dict[str, Any]] | None:
    """The unit's stored analysis rows when they were made with this recipe's analysis settings."""
    if not out.remote:
        return local.reusable_analysis(out.local_path(), key, fingerprints)
    import pyarrow.parquet as pq

    from soraprep.manifest import table_rows

    try:
        table = pq.read_table(io.BytesIO(out.read_bytes(workspace.analysis_key(key))))
        meta = table.schema.metadata or {}
        if json.loads(meta.get(b"soraprep.fingerprints", b"{}")).get("analysis") != fingerprints["analysis"]:
            return None
        return table_rows(table)
    except (OSError, ValueError):  # absent or unreadable: analyse again
        return None


def error_state(store: Store, recipe_hash: str, fingerprints: dict[str, str] | None) -> WorkerState:
    """The state :func:`commit_unit` needs for error items and retried units (no stages)."""
    return WorkerState(out=Path(store.root) if not store.remote else Path(tempfile.gettempdir()), store=store,
                       recipe_hash=recipe_hash, fingerprints=dict(fingerprints or {}))


def commit_unit(state: WorkerState, item: Item) -> dict[str, Any]:
    """The one way the Ray runner commits a unit: decide and commit an analysed one (``filter``, ``cut``,
    ``bucket``, later stages; its files, then its commit), or commit an ``error`` item as one error row.
    Idempotent: a unit already committed (a retried task) is only summarised.

    ``state``: a :class:`WorkerState` of the decision stages with ``store`` (OUT as a Store; for a store
    OUT ``state.out`` is this actor's scratch OUT). Only ``store``, ``recipe_hash`` and ``fingerprints``
    are needed for an error item."""
    unit, store = item["unit"], state.store
    if workspace.is_committed(store, unit["_key"]):
        return workspace.summary_of(store, unit["_key"])
    if item.get("error"):
        stage, kind, message = item["error"]
        return workspace.commit_error(store, unit, stage, kind, message, state.recipe_hash, state.fingerprints)
    rows, timings, reused = item["rows"], item.get("timings") or {}, bool(item.get("reused"))
    if not store.remote:
        return local.decide_unit(state, unit, rows, timings, reused=reused)
    with workspace.UnitWorkspace(store, unit["_key"], state.out) as ws:
        state.workspace = ws
        try:
            summary = local.decide_unit(state, unit, rows, timings, reused=reused)
        finally:
            state.workspace = None
        ws.publish()
    return summary


def committed_keys(out: Store) -> set[str]:
    """The keys of every committed unit: one listing of ``OUT/.soraprep/units/``."""
    return workspace.committed_keys(out)


# ---- rows between the pools ---------------------------------------------------------------------------

def encode(item: Item) -> bytes:
    return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)


def decode(blob: Any) -> Item:
    return pickle.loads(bytes(blob))


def _batch(items: list[Item]) -> dict[str, np.ndarray]:
    col = np.empty(len(items), dtype=object)
    col[:] = [encode(i) for i in items]
    return {"item": col}


def _import(modules: list[str]) -> None:
    for m in modules:  # stages registered outside soraprep (a plugin, a test) must be registered here too
        try:
            importlib.import_module(m)
        except Exception:  # noqa: BLE001 - the recipe validation reports the missing stage
            pass


def _node_limits(limits, auto_memory_cpus: float | None):
    """``--max-worker-memory auto``: this node's memory over the actors of ``auto_memory_cpus`` it can hold."""
    if not auto_memory_cpus:
        return limits
    import dataclasses
    import os

    from soraprep.curate.runners.supervisor import auto_memory_bound

    slots = max(1, int((os.cpu_count() or 1) // auto_memory_cpus))
    return dataclasses.replace(limits, max_memory_bytes=auto_memory_bound(slots))


class AnalysisActor:
    """Decode-once analysis of one unit at a time, in one supervised worker process (memory bound, time
    limit, death detection: :mod:`.supervisor`). A unit whose stored analysis fits the recipe is read from
    storage instead, and skips the model pools."""

    def __init__(self, recipe_sections: dict, recipe_source: str, out: str, stages: list[str], limits,
                 modules: list[str], fingerprints: dict[str, str], auto_memory_cpus: float | None = None,
                 storage_options: dict | None = None):
        from soraprep.curate.runners.supervisor import Supervisor

        _import(modules)
        limits = _node_limits(limits, auto_memory_cpus)
        self._out, self._fps = Store(out, storage_options), fingerprints
        scratch = scratch_dir("analysis")  # the worker's staged sources
        self._sup = Supervisor(init_args=(recipe_sections, recipe_source, out, storage_options, scratch, stages),
                               out=self._out, recipe_hash="", workers=1, limits=limits, modules=modules,
                               scratch=scratch, task="analyse_unit", on_error=self._failed)
        self._sup.warm()  # its worker sets up while Ray starts the other actors

    @staticmethod
    def _failed(unit: dict[str, Any], stage: str, kind: str, message: str) -> dict[str, Any]:
        return {"key": unit["_key"], "error": [stage, kind, message]}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _batch([self._one(decode(b)) for b in batch["item"]])

    def _one(self, item: Item) -> Item:
        unit = item["unit"]
        if workspace.is_committed(self._out, unit["_key"]):
            return {**item, "done": True}
        rows = stored_analysis(self._out, unit["_key"], self._fps)
        if rows is not None:
            return {**item, "rows": rows, "reused": True}
        result = list(self._sup.run([unit]))[0]
        if result.get("fatal"):
            return {**item, "fatal": result["fatal"]}
        if result.get("error"):
            return {**item, "error": result["error"]}
        if result.get("rows") is None:  # committed meanwhile (by an earlier try of this unit)
            return {**item, "done": True}
        return {**item, "rows": result["rows"], "timings": result.get("timings", {})}


class ModelActor:
    """One model stage (set up once per actor) over the clips of a batch of units: flattened, run in
    chunks of the stage's ``batch_size``, regrouped per unit. A stage that raises makes error rows of
    its chunk's clips; one that cannot set up stops the run (``fatal``)."""

    def __init__(self, recipe_sections: dict, recipe_source: str, out: str, stage: str, batch_size: int,
                 modules: list[str]):
        from soraprep.curate.recipe import validate

        _import(modules)
        self._fatal, self._size = None, max(1, batch_size)
        try:
            recipe = validate(recipe_sections, recipe_source)
            self._stage = next(s for s in recipe.build(out) if s.name == stage)
            self._stage.setup()
        except Exception as exc:  # noqa: BLE001 - the driver stops the run with it
            self._fatal = f"stage {stage!r} failed to set up: {type(exc).__name__}: {exc}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [decode(b) for b in batch["item"]]
        live = [i for i in items if i.get("rows") and not (i.get("reused") or i.get("error")
                                                            or i.get("fatal") or i.get("done"))]
        if self._fatal:
            for i in live:
                i["fatal"] = self._fatal
            return _batch(items)
        flat = [(n, r) for n, i in enumerate(live) for r in i["rows"]]
        regrouped: list[list[dict[str, Any]]] = [[] for _ in live]
        name = self._stage.name
        for start in range(0, len(flat), self._size):
            chunk = flat[start:start + self._size]
            rows, spent = [r for _, r in chunk], {}
            result = local.run_stage(self._stage, rows, spent)
            if len(result) != len(rows):  # a scorer maps clips to clips: anything else is a stage bug
                for r in rows:
                    r.setdefault("error", error_dict(name, "internal_error",
                                                     f"the stage returned {len(result)} rows for {len(rows)} clips"))
                result = rows
            share = spent.get(name, 0.0) / len(rows)
            for (n, _), r in zip(chunk, result):
                regrouped[n].append(r)
                t = live[n].setdefault("timings", {})
                t[name] = t.get(name, 0.0) + share
        for i, rows in zip(live, regrouped):
            i["rows"] = rows
        return _batch(items)


class DecisionActor:
    """``filter``, ``cut``, ``bucket`` and the later stages, then the unit commit, one unit at a time in one
    supervised worker process (stages set up once per worker), as the analysis actors do: a cut or a later
    stage that hangs, outgrows the memory bound or kills its process makes the unit a ``timeout`` /
    ``out_of_memory`` / ``worker_died`` row instead of a stuck or dead actor."""

    def __init__(self, recipe_sections: dict, recipe_source: str, out: str, stages: list[str], modules: list[str],
                 storage_options: dict | None = None, limits=None, recipe_hash: str = "",
                 fingerprints: dict[str, str] | None = None, auto_memory_cpus: float | None = None):
        from soraprep.curate.runners.supervisor import Limits, Supervisor

        _import(modules)
        self._store = Store(out, storage_options)
        self._state = error_state(self._store, recipe_hash, fingerprints)
        scratch = scratch_dir("decision")  # staged sources; for a store OUT also the scratch OUT
        self._sup = Supervisor(init_args=(recipe_sections, recipe_source, out, storage_options, scratch, stages),
                               out=self._store, recipe_hash=recipe_hash, workers=1,
                               limits=_node_limits(limits or Limits(), auto_memory_cpus), modules=modules,
                               fingerprints=fingerprints, scratch=scratch, task="decide_worker_unit")
        self._sup.warm()

    def close(self) -> None:
        self._sup.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _one(self, item: Item) -> dict[str, Any]:
        unit = item["unit"]
        if item.get("error") or workspace.is_committed(self._store, unit["_key"]):
            return commit_unit(self._state, item)  # an error row, or the summary of a retried task's commit
        analysed = {"rows": item["rows"], "timings": item.get("timings") or {}, "reused": bool(item.get("reused"))}
        return list(self._sup.run([{**unit, "_analysed": analysed}]))[0]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        summaries = []
        for b in batch["item"]:
            item = decode(b)
            if item.get("fatal"):
                summaries.append({"key": item["unit"]["_key"], "fatal": item["fatal"]})
            else:
                summaries.append(self._one(item))
        return {"key": np.array([s["key"] for s in summaries], dtype=object),
                "clips": np.array([int(s.get("clips", 0)) for s in summaries], dtype=np.int64),
                "errors": np.array([int(s.get("errors", 0)) for s in summaries], dtype=np.int64),
                "timings": np.array([json.dumps(s.get("timings", {})) for s in summaries], dtype=object),
                "fatal": np.array([s.get("fatal") or "" for s in summaries], dtype=object)}
