"""The ``filter`` stage: pure thresholds over stored columns — re-tune them without re-scoring.

A rule is ``column: {min: x, max: y}`` (either bound optional) over any manifest column, plus the
derived ``short_side`` (= min(height, width)). A row failing rules gets ``keep = False`` and a
``filter_reason`` naming every failed rule with its value; a missing value (``None``, e.g. motion of
a one-frame clip) passes unless the rule says ``required: true``. Rows with an ``error`` are never kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from soraprep.stages import Resources, Row, failed, register

DERIVED = {"short_side": lambda r: None if r.get("height") is None or r.get("width") is None
           else min(r["height"], r["width"])}
RATIO_COLUMNS = {"black_ratio", "static_ratio", "nsfw_max", "nsfw_mean"}
#: class-name columns: no numeric bounds (select by class downstream, e.g. in a DataFrame)
TEXT_COLUMNS = {"camera_motion"}


@dataclass(frozen=True)
class Rule:
    column: str
    min: float | None = None
    max: float | None = None
    required: bool = False

    def __post_init__(self) -> None:
        if self.column in TEXT_COLUMNS:
            raise ValueError(f"filter.{self.column} holds class names, not numbers: min/max cannot apply; remove "
                             f"the rule (select classes downstream) or bound a numeric column such as camera_shake")
        for b in (self.min, self.max):
            if b is not None and (not isinstance(b, (int, float)) or isinstance(b, bool) or math.isnan(b)):
                raise ValueError(f"filter.{self.column}: bounds must be numbers, got {b!r}")
        if self.min is None and self.max is None:
            raise ValueError(f"filter.{self.column}: give min and/or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"filter.{self.column}: min ({self.min}) > max ({self.max}) keeps nothing; "
                             "swap them or drop one bound")
        if self.column in RATIO_COLUMNS:
            for b in (self.min, self.max):
                if b is not None and not 0 <= b <= 1:
                    raise ValueError(f"filter.{self.column} is a ratio in [0, 1]; {b} can never be reached")
        if self.column in ("duration_s", "num_frames", "fps", "short_side", "height", "width") and \
                self.max is not None and self.max <= 0:
            raise ValueError(f"filter.{self.column}: max {self.max} <= 0 rejects every clip")

    def check(self, row: Row) -> str | None:
        v = DERIVED[self.column](row) if self.column in DERIVED else row.get(self.column)
        if v is None:
            return f"{self.column} missing" if self.required else None
        if self.min is not None and v < self.min:
            return f"{self.column}={_fmt(v)}<{_fmt(self.min)}"
        if self.max is not None and v > self.max:
            return f"{self.column}={_fmt(v)}>{_fmt(self.max)}"
        return None


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def parse_rules(spec: dict[str, Any]) -> list[Rule]:
    rules = []
    for col, bounds in (spec or {}).items():
        if not isinstance(bounds, dict):
            raise ValueError(f"filter.{col} must be a mapping like {{min: 1.0, max: 2.0}}, got {bounds!r}")
        unknown = set(bounds) - {"min", "max", "required"}
        if unknown:
            raise ValueError(f"filter.{col}: unknown key(s) {sorted(unknown)}; use min, max, required")
        rules.append(Rule(col, bounds.get("min"), bounds.get("max"), bool(bounds.get("required", False))))
    return rules


@register("filter")
@dataclass
class FilterStage:
    rules: dict[str, Any] = field(default_factory=dict)
    name = "filter"
    section_arg = "rules"  # the recipe section *is* the rule set: {column: {min, max, required}}
    resources = Resources(cpus=0.1)
    batch_size = 1024

    def __post_init__(self) -> None:
        self._rules = parse_rules(self.rules)

    def setup(self) -> None:
        pass

    def __call__(self, batch: list[Row]) -> list[Row]:
        for row in batch:
            if failed(row):
                row["keep"], row["filter_reason"] = False, "error"
                continue
            reasons = [r for r in (rule.check(row) for rule in self._rules) if r]
            row["keep"] = not reasons
            row["filter_reason"] = "; ".join(reasons) if reasons else None
        return batch
