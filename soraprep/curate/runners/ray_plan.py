"""The Ray runner's plan: which stages run in which actor pool, and what each pool asks Ray for.

Three kinds of pool, in pipeline order (see :mod:`.ray`):

- ``analysis``: the decode-once stages (``probe``, ``analyze``, ``split``, ``score``), one unit at a time
  in one supervised worker process per actor. ``--workers`` actors by default.
- one pool per **model stage**: the extra stages with ``phase = "score"`` (``aesthetic``, ``text_match``,
  ``ocr``, ``nsfw``, ``phash``) that read the sampled frames ``analyze`` kept (they declare
  ``samples_every_s``). One actor by default; it calls the stage on ``batch_size`` clips at a time,
  flattened across several units. Extra stages before the first of them run in the analysis worker.
- ``decision``: ``filter``, ``cut``, ``bucket``, any stage after them (e.g. ``caption``), and the unit
  commit. ``max(1, workers // 2)`` actors by default.

Each pool asks for what its stages declare (``Stage.resources``: cpus, gpus, memory_gb; the most any of
its stages declares) and the model pools call their stage with its ``Stage.batch_size``; the recipe's
``resources:`` section overrides any of these per stage, plus ``concurrency`` (actors: a number, or
``[min, max]`` for an autoscaling pool). Planning imports no Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from soraprep.curate.recipe import PIPELINE, Recipe, RecipeError
from soraprep.stages import Resources

GIB = 1024 ** 3
#: clips a unit (video) is assumed to yield, to size a model pool's Ray batches (units) from its stage's
#: batch_size (clips): a batch of ``ceil(batch_size / CLIPS_PER_UNIT_GUESS)`` units usually fills a call
CLIPS_PER_UNIT_GUESS = 8


@dataclass(frozen=True)
class Pool:
    """One Ray Data actor pool (``map_batches`` over a callable class)."""

    kind: str                      # "analysis" | "model" | "decision"
    stages: tuple[str, ...]        # the recipe stages its actors run
    cpus: float
    gpus: float
    memory_gb: float
    concurrency: int | tuple[int, int]
    batch_size: int = 1            # clips per stage call (model pools)
    units_per_batch: int = 1       # units per Ray batch

    @property
    def name(self) -> str:
        return self.stages[0] if self.kind == "model" else self.kind

    @property
    def min_actors(self) -> int:
        return self.concurrency[0] if isinstance(self.concurrency, tuple) else self.concurrency

    def remote_args(self) -> dict[str, Any]:
        """``map_batches`` keywords: what each actor asks Ray for, and how many actors."""
        args: dict[str, Any] = {"num_cpus": self.cpus, "concurrency": self.concurrency,
                                "batch_size": self.units_per_batch}
        if self.gpus:
            args["num_gpus"] = self.gpus
        if self.memory_gb:
            args["memory"] = int(self.memory_gb * GIB)
        return args


def model_stage_names(recipe: Recipe) -> list[str]:
    """The stages that get their own pool: the recipe's extra ``phase = "score"`` stages that read the sampled
    frames (they declare ``samples_every_s``), and any extra stage after the first of them (order is kept).
    Extra stages before the first one run in the analysis pool's worker, with the decode-once stages."""
    from soraprep.stages import STAGES

    extras = [n for n in recipe.analysis_stage_names() if n not in PIPELINE]
    first = next((i for i, n in enumerate(extras) if getattr(STAGES[n], "samples_every_s", 0)), len(extras))
    return extras[first:]


def _declared(stage) -> tuple[Resources, int]:
    res = getattr(stage, "resources", None)
    return (res if isinstance(res, Resources) else Resources()), int(getattr(stage, "batch_size", 1) or 1)


def _pool(kind: str, stages: list, recipe: Recipe, default_concurrency: int) -> Pool:
    cpus = gpus = memory = 0.0
    concurrency: int | tuple[int, int] | None = None
    batch = 1
    for s in stages:
        res, batch_size = _declared(s)
        over = recipe.resources.get(s.name, {})
        cpus = max(cpus, float(over.get("cpus", res.cpus)))
        gpus = max(gpus, float(over.get("gpus", res.gpus)))
        memory = max(memory, float(over.get("memory_gb", res.memory_gb)))
        batch = max(batch, int(over.get("batch_size", batch_size)))
        c = over.get("concurrency")
        if c is not None:
            c = tuple(c) if isinstance(c, list) else int(c)
            if concurrency is None or _upper(c) > _upper(concurrency):
                concurrency = c
    if concurrency is None:
        concurrency = default_concurrency
    if kind != "model":
        return Pool(kind, tuple(s.name for s in stages), cpus, gpus, memory, concurrency)
    return Pool(kind, tuple(s.name for s in stages), cpus, gpus, memory, concurrency, batch_size=batch,
                units_per_batch=max(1, math.ceil(batch / CLIPS_PER_UNIT_GUESS)))


def _upper(c: int | tuple[int, int]) -> int:
    return c[1] if isinstance(c, tuple) else c


def plan(recipe: Recipe, stages: list, workers: int) -> list[Pool]:
    """The pools for ``recipe`` (``stages``: ``recipe.build(out)``), in pipeline order."""
    models = model_stage_names(recipe)
    by_name = {s.name: s for s in stages}
    analysis = [by_name[n] for n in recipe.analysis_stage_names() if n not in models]
    decision = [by_name[n] for n in recipe.decision_stage_names()]
    pools = [_pool("analysis", analysis, recipe, max(1, workers))]
    pools += [_pool("model", [by_name[n]], recipe, 1) for n in models]
    pools.append(_pool("decision", decision, recipe, max(1, workers // 2)))
    return pools


def needs(pools: list[Pool]) -> dict[str, float]:
    """What the pools' smallest sizes ask for together: {"CPU": n, "GPU": m}."""
    return {"CPU": sum(p.cpus * p.min_actors for p in pools), "GPU": sum(p.gpus * p.min_actors for p in pools)}


def describe(pools: list[Pool]) -> str:
    return ", ".join(f"{p.name} {p.min_actors}x{p.cpus:g} CPU" + (f"+{p.gpus:g} GPU" if p.gpus else "")
                     for p in pools)


def check_fits(pools: list[Pool], have: dict[str, float], source: str) -> None:
    """Fail loud when the cluster cannot hold every pool at its smallest size (the run would wait forever)."""
    need = needs(pools)
    for res, key in (("CPU", "cpus"), ("GPU", "gpus")):
        if need[res] > have.get(res, 0.0) + 1e-9:
            raise RecipeError(f"{source}: the Ray pipeline needs {need[res]:g} {res}s for its smallest actor pools "
                              f"({describe(pools)}) but the cluster has {have.get(res, 0.0):g}: lower --workers or "
                              f"set smaller {key}/concurrency per stage in the recipe's resources: section "
                              f"(e.g. `resources: {{{pools[-1].stages[0]}: {{{key}: 0}}}}`)")
