"""Ray Data runner: the same stages and the same per-unit commits as the local runner, on a Ray cluster.

Each work unit (one video or span) runs through every stage inside a Ray actor (a callable class: the
stages are built and ``setup()`` once per actor, never per video). The actor runs its units in one
supervised child process (:mod:`.supervisor`), exactly as the local runner does: a unit that kills that
process twice, outgrows the memory bound or outlasts the time limit becomes an error row
(``worker_died``, ``out_of_memory``, ``timeout``) and the actor lives on. An actor that dies itself
(killed from outside) is restarted by Ray and its unit retried, at most ``ACTOR_RETRIES`` times, so the
run always ends.
A unit is committed to
``OUT/.soraprep/units/`` exactly like the local runner does — so resume, the manifest and the report are
identical whichever runner produced them. OUT must be on storage every node can write (NFS, a shared
disk). Stages never import Ray; only this adapter does.

    soraprep curate s3-mounted/videos -o /shared/out --runner ray --workers 64 --ray-address auto
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

#: Ray restarts a dead actor and retries its task, by default forever. The actor counts the tries of each
#: unit in ``OUT/.soraprep/ray-tries/<key>``: past ``1 + ACTOR_RETRIES`` it commits the unit as a
#: ``worker_died`` row instead of running it again, so a unit that kills its actor every time cannot loop.
ACTOR_RETRIES = 2


def _tries_dir(out: Path) -> Path:
    return Path(out) / ".soraprep" / "ray-tries"


def _count_try(out: Path, key: str) -> int:
    """This unit's tries so far, this one included (kept on OUT, which every node shares)."""
    import os

    from soraprep.manifest import temp_path

    path = _tries_dir(out) / key
    try:
        n = int(path.read_text()) + 1
    except (OSError, ValueError):
        n = 1
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp.write_text(str(n))
    os.replace(tmp, path)
    return n


class _UnitActor:
    """A Ray Data callable class: one supervised worker process per actor (stages set up once), whole units."""

    def __init__(self, recipe_sections: dict, recipe_source: str, out: str, recipe_hash: str, limits,
                 modules: list[str], auto_memory_cpus: float | None = None,
                 fingerprints: dict[str, str] | None = None):
        import dataclasses
        import os

        from soraprep.curate.runners.supervisor import Supervisor, auto_memory_bound

        if auto_memory_cpus:  # --max-worker-memory auto: this node's memory over the actors it can hold
            slots = max(1, int((os.cpu_count() or 1) // auto_memory_cpus))
            limits = dataclasses.replace(limits, max_memory_bytes=auto_memory_bound(slots))

        self._out, self._hash, self._fingerprints = Path(out), recipe_hash, fingerprints
        self._sup = Supervisor(init_args=(recipe_sections, recipe_source, out), out=Path(out),
                               recipe_hash=recipe_hash, workers=1, limits=limits, modules=modules,
                               fingerprints=fingerprints)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from soraprep.curate.runners import local

        summaries = []
        for text in batch["unit"]:
            unit = _decode_unit(text)
            tries = _count_try(self._out, unit["_key"])
            if local.unit_path(self._out, unit["_key"]).exists():  # committed just before an actor died
                summaries.append(local.summary_of(self._out, unit["_key"]))
            elif tries > 1 + ACTOR_RETRIES:
                summaries.append(local.commit_error(
                    self._out, unit, "runner", "worker_died",
                    f"the Ray actor running this unit died {tries - 1} times (it was restarted each time)",
                    self._hash, self._fingerprints))
            else:
                summaries += self._sup.run([unit])
        return {"key": np.array([s["key"] for s in summaries]),
                "clips": np.array([s.get("clips", 0) for s in summaries]),
                "errors": np.array([s.get("errors", 0) for s in summaries]),
                "timings": np.array([json.dumps(s.get("timings", {})) for s in summaries]),
                "fatal": np.array([s.get("fatal", "") for s in summaries])}


def _encode_unit(unit: dict[str, Any]) -> str:
    return json.dumps(unit, default=str)


def _decode_unit(text: str) -> dict[str, Any]:
    unit = json.loads(str(text))
    if unit.get("_span_s") is not None:
        unit["_span_s"] = tuple(unit["_span_s"])
    return unit


def run_ray(units: list[dict[str, Any]], *, recipe, out: Path, workers: int = 1,
            address: str | None = None, limits=None, auto_memory: bool = False) -> Iterator[dict[str, Any]]:
    """Run the units not yet committed on Ray; yields each unit's summary as it completes.

    ``auto_memory``: each actor sets its memory bound from its own node (see ``auto_memory_bound``)."""
    try:
        import ray
        import ray.data
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("the Ray runner needs Ray: pip install 'soraprep[ray]'") from exc
    from soraprep.curate.runners.local import _checked, pending_units
    from soraprep.curate.runners.supervisor import Limits, stage_modules

    todo = pending_units(units, out)
    if not todo:
        return
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
    cpus = max(s.resources.cpus for s in recipe.build(out))
    shutil.rmtree(_tries_dir(out), ignore_errors=True)  # counts of an earlier, interrupted run
    ds = ray.data.from_items([{"unit": _encode_unit(u)} for u in todo], override_num_blocks=len(todo))
    ds = ds.map_batches(_UnitActor, batch_size=1, concurrency=max(1, min(workers, len(todo))), num_cpus=cpus,
                        fn_constructor_kwargs={"recipe_sections": recipe.sections,
                                               "recipe_source": recipe.source, "out": str(Path(out).resolve()),
                                               "recipe_hash": recipe.hash, "limits": limits or Limits(),
                                               "modules": stage_modules(recipe),
                                               "fingerprints": recipe.fingerprints(),
                                               "auto_memory_cpus": max(cpus, 0.1) if auto_memory else None})
    for row in ds.iter_rows():
        yield _checked({"key": row["key"], "clips": int(row["clips"]), "errors": int(row["errors"]),
                        "timings": json.loads(row["timings"]), "fatal": str(row["fatal"])})
    shutil.rmtree(_tries_dir(out), ignore_errors=True)
