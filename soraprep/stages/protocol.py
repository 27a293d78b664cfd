"""The stage protocol: the narrow contract between pipeline steps and the runners that execute them.

A stage is a small object whose constructor arguments are its configuration (they are the keys of a
recipe section). Construction is cheap and the object is picklable, so a runner can ship it to worker
processes or Ray actors; ``setup()`` does the heavy work (loading models) once per worker; ``__call__``
maps a batch of rows (dicts) to a batch of rows. Stages never import Ray: runners adapt them.

Recipe keys are constructor arguments: a section ``split: {max_clip_s: 20}`` builds
``SplitStage(max_clip_s=20)``. What a stage needs from *other* sections it declares itself, so the recipe
loader has no per-stage special cases:

* ``recipe_inputs(sections) -> dict`` (classmethod): arguments derived from the whole recipe, used where
  the stage's own section does not set them (``split`` derives ``keyframe_split_s`` from ``cut``;
  ``analyze`` its ``sample_every_s`` from the model stages' ``samples_every_s``; ``score`` its scorers from
  ``analyze.scorers``);
* ``section_arg = "rules"``: the whole section is that one argument (``filter``: keys are columns);
* ``run_args = ("out_dir",)``: arguments the runner supplies when it builds the stage, never a recipe key;
* ``settings = False``: the stage takes no section of its own (``score``);
* ``requires = ("phash",)``: sections that must be present (``dedup``).

Rows fail soft: a row that already carries an ``error`` passes through untouched, and a stage that fails
on a row sets ``row["error"] = error_dict(stage, kind, message)`` instead of raising. :func:`error_dict` is
the one constructor of a row's ``error`` (curation, ingest, download, inputs and runners all use it).

This module is neutral ground: ``soraprep.curate`` and ``soraprep.caption`` both import it, and it imports
neither (``tests/test_import_graph.py`` keeps the package levels acyclic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

Row = dict[str, Any]


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs; runners map this to processes, ``num_cpus``/``num_gpus``."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float = 1.0


@runtime_checkable
class Stage(Protocol):
    name: str
    resources: Resources
    batch_size: int

    def setup(self) -> None: ...

    def __call__(self, batch: list[Row]) -> list[Row]: ...


#: longest ``error.message`` kept (a traceback or a server's answer can be long)
MAX_ERROR_MESSAGE = 2000


def error_dict(stage: str, kind: str, message: object) -> dict[str, str]:
    """A row's ``error``: the stage that failed, a short machine-readable kind, a (bounded) message."""
    return {"stage": stage, "kind": kind, "message": str(message)[:MAX_ERROR_MESSAGE]}


def failed(row: Row) -> bool:
    """Whether ``row`` already failed (stages pass such rows through untouched)."""
    return bool(row.get("error"))
