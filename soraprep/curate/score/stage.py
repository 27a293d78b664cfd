"""The ``score`` stage: per-clip columns from the per-frame signals of the shared decode pass.

It never decodes: each clip's frame range is aggregated by the scorer that gathered the signals, and
every column gets its provenance (scorer, version, parameters) in the row's ``provenance`` JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from soraprep.curate.score import frame_scorers, glitch  # noqa: F401  (registers the built-in scorers)
from soraprep.curate.score.base import build_scorers
from soraprep.stages import Resources, Row, failed, register


@register("score")
@dataclass
class ScoreStage:
    scorers: dict[str, dict[str, Any]] = field(default_factory=dict)
    name = "score"
    resources = Resources(cpus=0.1)
    batch_size = 64
    settings = False  # no section of its own: it aggregates exactly the scorers `analyze` ran

    @classmethod
    def recipe_inputs(cls, sections: dict[str, Any]) -> dict[str, Any]:
        return {"scorers": (sections.get("analyze") or {}).get("scorers") or {}}

    def __post_init__(self) -> None:
        self._scorers = build_scorers(self.scorers)

    def setup(self) -> None:
        pass

    def __call__(self, batch: list[Row]) -> list[Row]:
        for row in batch:
            signals = row.pop("_signals", None)
            if failed(row) or signals is None:
                continue
            prov = json.loads(row.get("provenance") or "{}")
            for s in self._scorers:
                values = s.aggregate(signals, row["start_frame"], row["end_frame"])
                for col, v in values.items():
                    row[col] = v if v is None or isinstance(v, str) else round(float(v), 6)
                    prov[col] = s.provenance()
            row["provenance"] = json.dumps(prov, sort_keys=True)
        return batch
