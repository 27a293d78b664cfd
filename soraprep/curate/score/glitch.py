"""Damaged frames: what the single decode pass sees of corrupt or glitched pictures, counted per clip.

Three per-frame signals, none of which costs a decode of its own:

- ``corrupt``: the decoder flagged the frame as damaged (PyAV ``frame.is_corrupt``: an error was
  concealed in it), carried to scorers as :attr:`FrameViews.corrupt`. Frames the decoder rejected outright
  never reach a scorer; they are counted by the split stage as ``damaged_frames``.
- ``block_excess``: blockiness of the full-resolution luma — mean absolute step across the coded 8-px
  grid lines minus the mean step across the lines between them (in luma levels). Broken slices show as
  solid 8x8 / 16x16 blocks (white, green, smeared): big steps at block edges, none inside. Natural video
  and ordinary compression stay near 0–3. A frame counts when its excess is above ``block_excess`` *and*
  ``block_spike`` times the clip's median (so uniformly blocky low-bitrate footage is not "damaged").
- ``outlier``: an isolated frame outlier — a run of 1..``max_run`` frames that differs strongly from the
  frame before and the frame after, while those two are alike (:func:`outlier_run`). A glitch; not a
  shot. The split stage's :class:`~soraprep.curate.split.GlitchGuard` uses the same test.

Columns: ``glitch_frames`` (frames of the clip with any of the three), ``corrupt_frames`` (decoder flags
only) and ``corruption`` (``glitch_frames`` / frames of the clip).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from soraprep.curate.score.base import FrameViews, ScorerBase, register_scorer

#: blockiness is measured on every BLOCK_EVERY-th frame and on every frame that changes the picture
BLOCK_EVERY = 8
#: a blocky frame counts when it stands out from the frames measured within this many frames of it
SPIKE_WINDOW = 12
#: width of the tiny gray views compared by the outlier test (coarse: camera motion barely changes them)
TINY_WIDTH = 32


def tiny(gray: np.ndarray) -> np.ndarray:
    """A ``TINY_WIDTH``-wide float32 copy of a gray (or BGR) frame for :func:`frame_distance`."""
    if gray.ndim == 3:
        gray = cv2.cvtColor(gray, cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    tw = min(TINY_WIDTH, w)
    th = max(1, int(round(h * tw / w)))
    return cv2.resize(gray, (tw, th), interpolation=cv2.INTER_AREA).astype(np.float32)


def frame_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two tiny views after removing the mean brightness change (a flash or a
    fade moves every pixel alike; a glitch changes a region), in luma levels."""
    d = a - b
    return float(np.mean(np.abs(d - d.mean())))


def outlier_run(frames: Sequence[np.ndarray], *, min_diff: float, ratio: float) -> bool:
    """Is ``frames[1:-1]`` an isolated outlier run between ``frames[0]`` and ``frames[-1]``?

    Yes when entering and leaving the run both change the picture by more than ``min_diff`` and by more
    than ``1 / ratio`` times the change from the frame before the run to the frame after it.
    """
    before, after = frames[0], frames[-1]
    entry = frame_distance(before, frames[1])
    if entry <= min_diff:            # the common case, decided by one distance
        return False
    leave = frame_distance(frames[-2], after)
    return leave > min_diff and frame_distance(before, after) < ratio * min(entry, leave)


def block_excess(luma: np.ndarray, every: int = 8) -> float:
    """Mean luma step across the 8-px grid lines minus the step across the mid-block lines, read on every
    ``every``-th row (vertical lines) and column (horizontal lines); NaN for frames under 17 px."""
    h, w = luma.shape
    nx, ny = (w - 1) // 8, (h - 1) // 8          # grid lines at 8, 16, ... inside the frame
    if nx < 2 or ny < 2:
        return float("nan")
    rows, cols = luma[::every], luma[:, ::every]

    def step(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a.astype(np.int16) - b).mean())

    edge = step(rows[:, 8:8 * nx + 1:8], rows[:, 7:8 * nx:8]) + step(cols[8:8 * ny + 1:8], cols[7:8 * ny:8])
    inner = step(rows[:, 4:8 * nx:8], rows[:, 3:8 * nx:8]) + step(cols[4:8 * ny:8], cols[3:8 * ny:8])
    return (edge - inner) / 2


@register_scorer("glitch")
@dataclass
class GlitchScorer(ScorerBase):
    block_excess: float = 6.0     # luma levels of extra step at 8-px block edges for a frame to count...
    block_spike: float = 2.5      # ... and this many times the median excess before it and after it
    min_diff: float = 8.0         # outlier test: entering/leaving the run changes the picture this much
    ratio: float = 0.5            # ... and the frames around the run differ by less than this share of it
    max_run: int = 2              # longest outlier run (frames)
    name = "glitch"
    version = "1"
    columns = ("glitch_frames", "corrupt_frames", "corruption")
    signal_names = ("corrupt", "block_excess", "outlier")

    def __post_init__(self) -> None:
        if self.max_run < 1 or not 0 < self.ratio < 1 or self.min_diff < 0 or self.block_spike < 1:
            raise ValueError("glitch: max_run must be >= 1, 0 < ratio < 1, min_diff >= 0 and block_spike >= 1")

    def begin(self, num_frames: int, fps: float) -> None:
        super().begin(num_frames, fps)
        # (index, tiny view, distance from the frame before): the last max_run + 2 frames
        self._recent: deque[tuple[int, np.ndarray, float]] = deque(maxlen=self.max_run + 2)

    def update(self, frame: FrameViews) -> None:
        i = frame.index
        self._put("corrupt", i, float(frame.corrupt))
        self._put("outlier", i, 0.0)          # earlier frames may be flagged below, never the current one
        if self._recent and self._recent[-1][0] != i - 1:
            self._recent.clear()     # a frame is missing: no outlier test across the gap
        view = tiny(frame.small_gray)
        change = frame_distance(self._recent[-1][1], view) if self._recent else float("inf")
        if frame.luma is not None and (i % BLOCK_EVERY == 0 or frame.corrupt or change > self.min_diff / 2):
            # a glitch changes the picture: frames that barely change are only sampled (for the median)
            self._put("block_excess", i, block_excess(frame.luma))
        self._recent.append((i, view, change))
        if change <= self.min_diff:
            return                   # leaving a glitch run changes the picture: nothing ends here
        recent = list(self._recent)
        for k in range(1, min(self.max_run, len(recent) - 2) + 1):
            # outlier_run(), reusing the distances between consecutive frames already computed
            entry = recent[-k - 1][2]
            if entry > self.min_diff and frame_distance(recent[-k - 2][1], view) < self.ratio * min(entry, change):
                for j in range(i - k, i):
                    self._put("outlier", j, 1.0)
                break

    def aggregate(self, signals, start, end):
        n = end - start
        if n <= 0:
            return {"glitch_frames": None, "corrupt_frames": None, "corruption": None}
        corrupt = signals["corrupt"][start:end] == 1.0
        outlier = signals["outlier"][start:end] == 1.0
        blocky = np.zeros(n, bool)
        every = signals["block_excess"]
        for i in np.flatnonzero(np.nan_to_num(every[start:end], nan=-np.inf) > self.block_excess) + start:
            # a spike, not a level: above the frames before it *and* above those after it (rate control
            # can make a whole stretch blockier; a broken slice lasts a frame or two)
            sides = [every[max(0, i - SPIKE_WINDOW):i], every[i + 1:i + SPIKE_WINDOW + 1]]
            levels = [float(np.median(v[~np.isnan(v)])) for v in sides if np.any(~np.isnan(v))]
            blocky[i - start] = every[i] > self.block_spike * max(levels + [0.0])
        glitch = int(np.count_nonzero(corrupt | outlier | blocky))
        return {"glitch_frames": glitch, "corrupt_frames": int(np.count_nonzero(corrupt)), "corruption": glitch / n}
