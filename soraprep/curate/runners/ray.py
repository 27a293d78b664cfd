"""Ray Data runner: the same stages and the same per-unit commits as the local runner, as a stage-level
streaming pipeline on a Ray cluster.

    soraprep curate /shared/videos -o /shared/out --runner ray --workers 64 --ray-address auto

The units not yet committed flow through Ray Data actor pools (see :mod:`.ray_plan` for the pools and
their resources, :mod:`.ray_actors` for the actors)::

    units -> analysis (CPU, --workers actors: probe, analyze, split, score; one supervised worker
             process per actor: memory bound, time limit, worker death -> error rows, as the local runner)
          -> one pool per model stage (aesthetic, text_match, ocr, phash ...: num_gpus/num_cpus/memory,
             batch_size and concurrency from the stage, overridden by the recipe's ``resources:``)
          -> decision (CPU: filter, cut, bucket, later stages e.g. caption, then the unit commit)

Ray Data's streaming executor bounds what is in flight between the pools (backpressure), so a slow
video never starves the model pools of other videos' clips and memory stays bounded. A unit whose
stored analysis fits the recipe (a decision-only rerun) skips the analysis and model pools.

Failures: Ray restarts a dead actor and retries its task (``TASK_RETRIES`` times); a block still lost
(its node removed, retries spent) is skipped, and after the dataset ends the driver lists the commits
and runs the missing units again, at most ``ACTOR_RETRIES`` more rounds, after which such a unit is
committed as a ``worker_died`` error row (when every round fails before a single commit, the pipeline
itself is broken and the run stops with the error instead). Commits are per unit and idempotent (a unit already committed
is never redone), and the manifest is assembled from the commits, so nothing is lost or duplicated; a
killed driver's rerun resumes from the commits like the local runner's. OUT is storage every node can
write: a shared folder (NFS, a shared disk) or an object store (``-o s3://bucket/runs/r1``: actors work in
local scratch and publish each unit, commit last, see :mod:`.workspace`); sources may be store URLs too
(staged to the actor's scratch). Stages never import Ray; only this module does.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from soraprep.curate.runners import ray_actors
from soraprep.curate.runners.ray_plan import Pool, check_fits, needs, plan

log = logging.getLogger(__name__)

#: extra rounds the driver runs for units lost on the cluster (their commit is missing after the dataset)
ACTOR_RETRIES = 2
#: Ray's own retries of a task whose actor died (per round)
TASK_RETRIES = 1
#: units per Ray dataset: the driver hands Ray one block per unit, so a run of millions of videos goes in
#: windows (each a dataset of its own; the pools' actors start again per window, a few seconds)
WINDOW = 20_000


def _pool_step(ds, pool: Pool, recipe, out: str, limits, modules: list[str], auto_memory: bool,
               storage_options: dict | None = None):
    """``ds`` mapped by ``pool``'s actors (a ``map_batches`` actor pool asking for the pool's resources)."""
    import ray.data

    from soraprep.curate.runners.ray_actors import AnalysisActor, DecisionActor, ModelActor

    common = {"recipe_sections": recipe.sections, "recipe_source": recipe.source, "out": out, "modules": modules}
    if pool.kind == "analysis":
        cls, kwargs = AnalysisActor, {**common, "stages": list(pool.stages), "limits": limits,
                                      "fingerprints": recipe.fingerprints(),
                                      "auto_memory_cpus": max(pool.cpus, 0.1) if auto_memory else None,
                                      "storage_options": storage_options}
    elif pool.kind == "model":
        cls, kwargs = ModelActor, {**common, "stage": pool.stages[0], "batch_size": pool.batch_size}
    else:
        cls, kwargs = DecisionActor, {**common, "stages": list(pool.stages), "storage_options": storage_options,
                                      "limits": limits, "recipe_hash": recipe.hash,
                                      "fingerprints": recipe.fingerprints(),
                                      "auto_memory_cpus": max(pool.cpus, 0.1) if auto_memory else None}
    args = pool.remote_args()
    size = args.pop("concurrency")
    # an analysis actor takes its next video when it is free (videos take seconds to minutes: a queue per
    # actor would leave one actor with the last videos while the others idle); model and decision actors
    # keep Ray's default queue, so data moves while they compute
    queue = {"max_tasks_in_flight_per_actor": 1} if pool.kind == "analysis" else {}
    compute = (ray.data.ActorPoolStrategy(min_size=size[0], max_size=size[1], **queue) if isinstance(size, tuple)
               else ray.data.ActorPoolStrategy(size=size, **queue))
    with warnings.catch_warnings():  # max_task_retries has no named parameter of its own in map_batches
        warnings.simplefilter("ignore", DeprecationWarning)
        return ds.map_batches(cls, fn_constructor_kwargs=kwargs, batch_format="numpy", compute=compute,
                              max_task_retries=TASK_RETRIES, **args)


def _dataset(ray, todo: list[dict[str, Any]], pools: list[Pool], recipe, out: str, limits, modules, auto_memory,
             storage_options):
    items = [{"item": ray_actors.encode({"unit": u, "rows": None, "timings": {}, "reused": False})} for u in todo]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    for pool in pools:
        ds = _pool_step(ds, pool, recipe, out, limits, modules, auto_memory, storage_options)
    return ds


def _init_ray(ray, address: str | None, pools: list[Pool], workers: int) -> None:
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    else:  # a local Ray sized to hold every pool at its smallest (logical CPUs: the OS shares the cores)
        cpus = max(workers, math.ceil(needs(pools)["CPU"] - 1e-9))
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)


def ray_running() -> bool:
    """Whether this process is connected to Ray (``run_ray`` leaves it connected)."""
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


def task_map(fn, tasks):
    """``map`` as Ray tasks, results in task order: the manifest assembly's footer scans and part writes
    (curate/assemble.py) run on the cluster's workers instead of the driver. A task lost with its node is
    retried (part writes are whole-object and idempotent)."""
    import ray

    remote = ray.remote(num_cpus=1, max_retries=3)(fn)
    return ray.get([remote.remote(t) for t in tasks])


def pools_for(recipe, out: Path, workers: int) -> list[Pool]:
    """The actor pools this recipe runs as (see :mod:`.ray_plan`)."""
    return plan(recipe, recipe.build(out), workers)


def run_ray(units: list[dict[str, Any]], *, recipe, out, workers: int = 1, address: str | None = None,
            limits=None, auto_memory: bool = False, storage_options: dict | None = None) -> Iterator[dict[str, Any]]:
    """Run the units not yet committed on Ray; yields each unit's summary once, as it completes.

    ``workers``: analysis actors (unless the recipe's ``resources:`` says otherwise); ``auto_memory``: each
    analysis actor sets its worker's memory bound from its own node (see ``auto_memory_bound``). ``out``: a
    local path, a store URL or a Store (``storage_options`` reach every actor)."""
    try:
        import ray
        import ray.data
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("the Ray runner needs Ray: pip install 'soraprep[ray]'") from exc
    from soraprep.curate.lock import clean_partials
    from soraprep.curate.runners import workspace
    from soraprep.curate.runners.local import StageSetupError, _checked
    from soraprep.curate.runners.supervisor import Limits, stage_modules
    from soraprep.storage import Store

    if isinstance(out, Store):
        storage_options, out = out.storage_options, out.root
    store = Store(out if Store(out).remote else Path(out).resolve(), storage_options)
    out = store.root  # what every actor opens: a store URL or an absolute local path
    done = ray_actors.committed_keys(store)
    todo = [u for u in units if u["_key"] not in done]
    if not todo:
        return
    pools = pools_for(recipe, Path(out) if not store.remote else Path("."), workers)
    _init_ray(ray, address, pools, workers)
    have = ray.cluster_resources()
    if address:  # an autoscaling cluster may grow: say so, and run
        try:
            check_fits(pools, have, recipe.source)
        except ValueError as exc:
            print(f"warning: {exc}", file=sys.stderr)
    else:
        check_fits(pools, have, recipe.source)
    ctx = ray.data.DataContext.get_current()
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # our progress bar and summary say what matters
    saved = (ctx.max_errored_blocks, ctx.enable_progress_bars)
    ctx.max_errored_blocks, ctx.enable_progress_bars = -1, False  # a lost block: its units run again
    limits, modules = limits or Limits(), stage_modules(recipe)
    wanted = {u["_key"] for u in todo}
    yielded: set[str] = set()
    last, failed_rounds = "", 0
    try:
        for _round in range(1 + ACTOR_RETRIES):
            done = ray_actors.committed_keys(store)
            todo = [u for u in todo if u["_key"] not in done]
            if not todo:
                break
            failed = False
            for start in range(0, len(todo), WINDOW):  # a bounded number of Ray blocks (one per unit) at a time
                try:
                    for row in _dataset(ray, todo[start:start + WINDOW], pools, recipe, out, limits, modules,
                                        auto_memory, storage_options).iter_rows():
                        summary = _checked({"key": row["key"], "clips": int(row["clips"]),
                                            "errors": int(row["errors"]), "timings": json.loads(row["timings"]),
                                            "fatal": str(row["fatal"])})
                        if summary["key"] not in yielded:
                            yielded.add(summary["key"])
                            yield summary
                except StageSetupError:
                    raise
                except Exception as exc:  # noqa: BLE001 - Ray lost something: the missing units run again
                    last = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]
                    failed = True
                    log.warning("Ray run round %d ended early (%s); the units not committed run again",
                                _round + 1, last)
            failed_rounds += failed
        done = ray_actors.committed_keys(store)
        if failed_rounds == 1 + ACTOR_RETRIES and not wanted & done:
            # every round failed before committing anything: the pipeline itself is broken (an actor that
            # cannot start, a cluster that went away), not a few unlucky units; stop, so a rerun resumes
            raise RuntimeError(f"the Ray pipeline failed {failed_rounds} times without committing a video: {last}")
        for u in todo:
            if u["_key"] not in done:
                yielded.add(u["_key"])
                message = (f"the unit was lost on the Ray cluster in {1 + ACTOR_RETRIES} rounds (its actor or node "
                           f"died each time)" + (f"; last: {last}" if last else ""))
                state = ray_actors.error_state(store, recipe.hash, recipe.fingerprints())
                yield ray_actors.commit_unit(state, {"unit": u, "error": ["runner", "worker_died", message]})
        for key in sorted(wanted - yielded):  # committed, but its summary row was lost with its node
            yield workspace.summary_of(store, key)
        if not store.remote:  # every unit is committed: what a killed actor left half-written goes
            clean_partials(Path(out))
    finally:
        ctx.max_errored_blocks, ctx.enable_progress_bars = saved
