"""What a worker needs to run units: its set-up stages, OUT, the recipe's hash and fingerprints — owned by
the run, never a module global.

A :class:`WorkerState` is built once per worker process (``supervisor._worker_main``: the supervised
workers of the local runner and of the Ray actors) and passed to every ``local.run_unit``-style call, so
two ``curate()`` calls in one process share nothing and no model stays resident after a run returns (the
worker, and with it the state, is gone). Built in the caller's own process (a test, a tool driving
``local.run_unit`` itself), it is a context manager: :meth:`WorkerState.open` sets the per-worker thread
counts and :meth:`WorkerState.close` restores them and drops the stages.

Thread counts: one thread per worker for OpenMP (``OMP_NUM_THREADS``, unless the user set it), OpenCV
and torch — with several busy workers, one thread each is about 2x faster here (ENV-FACTS.md). They are
process-wide settings, so they are set where the stages run and restored on :meth:`close`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKER_THREADS = 1


@dataclass
class WorkerState:
    """One worker's stages (set up) and what committing a unit needs; ``setup_error`` when a stage could
    not set up (``run_unit`` then reports it and the parent stops the run with the message)."""

    out: Path
    stages: list[Any] = field(default_factory=list)
    recipe_hash: str = ""
    fingerprints: dict[str, str] = field(default_factory=dict)
    decision: set[str] = field(default_factory=set)
    setup_error: str | None = None
    store: Any = None                    # OUT as a Store when it is remote (stages then write to scratch `out`)
    storage_options: dict[str, Any] = field(default_factory=dict)
    scratch: str | None = None           # where remote sources are staged (runners/sources.py)
    workspace: Any = None                # the UnitWorkspace of the unit in progress (a store OUT)
    _saved_threads: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, recipe_sections: dict, recipe_source: str, out: str | os.PathLike,
              only: list[str] | None = None) -> WorkerState:
        """The recipe's stages (``only``: just these), set up; a failure becomes ``setup_error``."""
        from soraprep.curate.recipe import validate

        state = cls(out=Path(out))
        name = "recipe"
        try:
            recipe = validate(recipe_sections, recipe_source)
            stages = [s for s in recipe.build(str(out)) if only is None or s.name in only]
            for s in stages:
                name = s.name
                s.setup()
        except Exception as exc:  # reported by run_unit, raised in the parent as StageSetupError
            state.setup_error = f"stage {name!r} failed to set up: {type(exc).__name__}: {exc}"
            return state
        state.stages, state.recipe_hash = stages, recipe.hash
        state.fingerprints, state.decision = recipe.fingerprints(), set(recipe.decision_stage_names())
        return state

    @classmethod
    def open(cls, recipe_sections: dict, recipe_source: str, out: str, storage_options: dict | None = None,
             scratch: str | None = None, only: list[str] | None = None) -> WorkerState:
        """A worker's state: thread counts set, stages built and set up (``only``: just these stages, e.g. the
        analysis stages of a Ray analysis actor's worker). ``out`` is OUT's path or store URL; for a store the
        stages write into this worker's scratch OUT (``workspace.worker_scratch(scratch, pid)``) and each unit
        is published by ``workspace.run_unit_on``. Remote sources are staged under ``scratch`` too."""
        from soraprep.curate.runners.workspace import worker_scratch
        from soraprep.storage import Store, is_remote

        saved = set_worker_threads()
        local_out, store, sources = out, None, scratch
        if is_remote(out):
            work = worker_scratch(scratch, os.getpid())
            local_out, sources = str(work / "out"), str(work / "sources")
            store = Store(out, storage_options)
        state = cls.build(recipe_sections, recipe_source, local_out, only)
        state.store, state.storage_options, state.scratch = store, dict(storage_options or {}), sources
        state._saved_threads = saved
        return state

    def close(self) -> None:
        """Drop the stages (their models) and restore the thread counts :meth:`open` changed."""
        self.stages = []
        self.workspace = None
        if self._saved_threads is not None:
            restore_threads(self._saved_threads)
            self._saved_threads = None

    def __enter__(self) -> WorkerState:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def set_worker_threads(n: int = WORKER_THREADS) -> dict[str, Any]:
    """Set this process's OpenMP/OpenCV/torch thread counts to ``n``; returns what to restore.

    ``OMP_NUM_THREADS`` is only set when the user has not set it. torch is only touched when it is
    already imported (a stage that imports it later sets its own count in ``setup()``, restored here too
    when torch was imported before)."""
    saved: dict[str, Any] = {"env": os.environ.get("OMP_NUM_THREADS")}
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    try:
        import cv2

        saved["cv2"] = cv2.getNumThreads()
        cv2.setNumThreads(n)
    except ImportError:
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        saved["torch"] = torch.get_num_threads()
        torch.set_num_threads(n)
    return saved


def restore_threads(saved: dict[str, Any]) -> None:
    """Undo :func:`set_worker_threads` (and what stages set since, for the libraries it saved)."""
    if saved.get("env") is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = saved["env"]
    if "cv2" in saved:
        import cv2

        cv2.setNumThreads(saved["cv2"])
    torch = sys.modules.get("torch")
    if torch is not None and "torch" in saved:
        torch.set_num_threads(saved["torch"])
