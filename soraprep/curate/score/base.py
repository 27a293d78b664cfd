"""Frame scorers: per-frame signals gathered during the single decode pass, aggregated per clip later.

A frame scorer never decodes. The ``analyze`` stage decodes each video once at the analysis size and
hands every frame to every scorer (``update``); a scorer samples what it needs and returns per-frame
signal arrays (``finish``: NaN where it did not sample). After the split, the ``score`` stage calls
``aggregate`` on each clip's frame range and writes the scorer's columns — so the same decode pass
serves scene detection and every scorer, and thresholds are applied later by pure filters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

SCORERS: dict[str, type] = {}


def register_scorer(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in SCORERS:
            raise ValueError(f"scorer {name!r} is already registered")
        SCORERS[name] = cls
        return cls

    return deco


@dataclass
class FrameViews:
    """What a scorer sees of one decoded frame (all views share one decode)."""

    index: int              # frame index in display order
    time: float             # seconds from the first frame
    gray: np.ndarray        # uint8 (h, w) at the analysis size
    small_gray: np.ndarray  # uint8 (h/2, w/2): for optical flow and frame differences
    corrupt: bool = False   # the decoder flagged the frame as damaged (PyAV ``frame.is_corrupt``)
    luma: np.ndarray | None = None  # uint8 full-resolution luma plane as decoded (a view; None if not planar)


class FrameScorer(Protocol):
    name: str
    columns: tuple[str, ...]
    version: str

    def begin(self, num_frames: int, fps: float) -> None: ...

    def update(self, frame: FrameViews) -> None: ...

    def finish(self) -> dict[str, np.ndarray]: ...

    def aggregate(self, signals: dict[str, np.ndarray], start: int, end: int) -> dict[str, float | None]: ...


class ScorerBase:
    """Shared plumbing: signal buffers sized to the video, provenance from the dataclass fields."""

    name = "base"
    version = "1"
    columns: tuple[str, ...] = ()
    signal_names: tuple[str, ...] = ()

    def begin(self, num_frames: int, fps: float) -> None:
        self._n = num_frames
        self._fps = fps
        self._signals = {s: np.full(num_frames, np.nan, dtype=np.float32) for s in self.signal_names}

    def _put(self, name: str, index: int, value: float) -> None:
        buf = self._signals[name]
        if index >= len(buf):  # the header undercounted frames: grow rather than lose data
            grown = np.full(max(index + 1, 2 * len(buf)), np.nan, dtype=np.float32)
            grown[: len(buf)] = buf
            self._signals[name] = buf = grown
        buf[index] = value

    def finish(self) -> dict[str, np.ndarray]:
        return self._signals

    def provenance(self) -> dict[str, Any]:
        params = asdict(self) if hasattr(self, "__dataclass_fields__") else {}
        return {"by": f"soraprep.{self.name}@{self.version}", "params": params}


def nan_stat(values: np.ndarray, how: str = "mean") -> float | None:
    """Mean/median/max over the sampled (non-NaN) values, None when nothing was sampled."""
    v = values[~np.isnan(values)]
    if v.size == 0:
        return None
    return float({"mean": np.mean, "median": np.median, "max": np.max, "min": np.min}[how](v))


def build_scorers(names_and_params: dict[str, dict[str, Any]]) -> list:
    """Instantiate scorers from a recipe section ``{name: {param: value}}``; unknown names fail loudly."""
    out = []
    for name, params in names_and_params.items():
        if name not in SCORERS:
            raise ValueError(f"unknown scorer {name!r}; available: {', '.join(sorted(SCORERS))}")
        for key, why in getattr(SCORERS[name], "retired_params", {}).items():   # keys of earlier versions
            if key in (params or {}):
                raise ValueError(f"scorer {name!r}: {key!r} is no longer a setting: {why}")
        try:
            out.append(SCORERS[name](**(params or {})))
        except TypeError as exc:
            raise ValueError(f"scorer {name!r}: {exc}") from exc
    return out
