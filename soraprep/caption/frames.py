"""Which frames a VLM sees: selection (uniform N, one per scene segment, or by fps) and decoding.

All indices are absolute frame indices of the file being decoded, inside the clip's span ``[start, end)``.
Decoding goes through :func:`soraprep.video.io.read_frames` (one pass from the earliest requested frame,
resized at decode time to the model's short side), the same path curation decodes with.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

METHODS = ("uniform", "scenes", "fps")


def uniform_indices(start: int, end: int, n: int) -> list[int]:
    """``n`` frames at the centres of ``n`` equal parts of ``[start, end)`` (all frames when fewer)."""
    total = end - start
    if total <= 0 or n <= 0:
        return []
    if n >= total:
        return list(range(start, end))
    return [start + int((k + 0.5) * total / n) for k in range(n)]


def fps_indices(start: int, end: int, *, fps: float, sample_fps: float, n: int) -> list[int]:
    """One frame every ``1 / sample_fps`` seconds (centred), at most ``n`` (uniformly thinned)."""
    if sample_fps <= 0 or fps <= 0:
        raise ValueError("fps and sample_fps must be positive")
    step = fps / sample_fps
    k = max(1, math.floor((end - start) / step))
    idx = sorted({min(end - 1, start + int((j + 0.5) * step)) for j in range(k)})
    if len(idx) > n:
        idx = [idx[int((j + 0.5) * len(idx) / n)] for j in range(n)]
    return idx


def scene_indices(start: int, end: int, cuts: Sequence[int], n: int) -> list[int]:
    """The middle frame of each scene segment (segments split at ``cuts``); the ``n`` longest when more."""
    bounds = [start, *sorted(c for c in set(cuts) if start < c < end), end]
    segs = [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    if len(segs) > n:
        segs = sorted(sorted(segs, key=lambda s: s[0] - s[1])[:n])   # longest n, back in time order
    return [(a + b - 1) // 2 for a, b in segs]


def detect_cuts(path: str, start: int, end: int, *, threshold: float = 30.0) -> list[int]:
    """Hard cuts in ``[start, end)``: frames whose mean absolute difference to the previous one (grey, 64 px
    short side) exceeds ``threshold`` (0-255 scale). Cheap; used when a row carries no ``scene_cuts``."""
    from soraprep.video.io import iter_frames

    cuts, prev = [], None
    for i, g in iter_frames(path, start_frame=start, end_frame=end, size=64, fmt="gray"):
        g = g.astype(np.int16)
        if prev is not None and float(np.abs(g - prev).mean()) > threshold:
            cuts.append(i)
        prev = g
    return cuts


def select_frames(start: int, end: int, *, n: int, method: str = "uniform", fps: float | None = None,
                  sample_fps: float | None = None, cuts: Sequence[int] | None = None,
                  path: str | None = None) -> list[int]:
    """Frame indices for one clip. ``scenes`` uses ``cuts`` when given, else detects them in ``path``."""
    if method == "uniform":
        return uniform_indices(start, end, n)
    if method == "fps":
        if not fps or not sample_fps:
            raise ValueError("frame method 'fps' needs the clip's fps and a sample_fps")
        return fps_indices(start, end, fps=fps, sample_fps=sample_fps, n=n)
    if method == "scenes":
        if cuts is None:
            if path is None:
                raise ValueError("frame method 'scenes' needs cut frames or a path to detect them in")
            cuts = detect_cuts(path, start, end)
        return scene_indices(start, end, cuts, n)
    raise ValueError(f"unknown frame method {method!r}; choose one of {', '.join(METHODS)}")


def clip_span(row: dict[str, Any], path: str) -> tuple[int, int]:
    """The frames of ``path`` that belong to the row's clip, half-open.

    When ``path`` is the full source (``cut_mode == "none"``, or no cut mode and ``path == source``) the
    row's ``start_frame`` / ``end_frame`` select the clip; a cut clip file is used from frame 0 to its
    ``num_frames``. Unknown counts are probed from the container (no decoding).
    """
    cut_mode = row.get("cut_mode")
    full_source = cut_mode == "none" or (cut_mode is None and row.get("source") is not None
                                         and row.get("path") == row.get("source"))
    if full_source and row.get("start_frame") is not None:
        start = int(row["start_frame"])
        end = row.get("end_frame")
        if end is None:
            end = start + int(row["num_frames"]) if row.get("num_frames") is not None else _probe_frames(path)
        return start, int(end)
    if row.get("num_frames"):
        return 0, int(row["num_frames"])
    return 0, _probe_frames(path)


def _probe_frames(path: str) -> int:
    from soraprep.video.io import probe

    return int(probe(path).num_frames)


def load_frames(path: str | os.PathLike, indices: Sequence[int], *, size: int | None) -> list[np.ndarray]:
    """RGB uint8 frames at ``indices``, short side resized to ``size`` (never upscaled), upright (turned by
    the file's display rotation, as a player shows them)."""
    from soraprep.video.io import read_frames

    return read_frames(str(path), list(indices), size=size, fmt="rgb24", upright=True)  # as a player shows them
