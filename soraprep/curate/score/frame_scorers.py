"""The built-in frame scorers: motion, sharpness, brightness/black frames, frozen/static frames.

Units are chosen so thresholds do not depend on the analysis size or frame rate:

- ``motion_score``: mean optical-flow magnitude (DIS, ultrafast preset) between consecutive frames, in
  pixels per frame at a 256-px short side, sampled ``samples_per_s`` times a second.
- ``sharpness``: median variance of the Laplacian of the gray frame at the analysis size.
- ``brightness``: mean luma (0–255); ``black_ratio``: share of frames whose mean luma < ``black_luma``.
- ``static_ratio``: share of consecutive frame pairs whose mean absolute difference < ``static_diff``
  (frozen frames, slideshows, still images).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from soraprep.curate.score.base import FrameViews, ScorerBase, nan_stat, register_scorer

REF_SHORT_SIDE = 256.0


def _every(fps: float, per_second: float) -> int:
    return max(1, int(round(fps / per_second))) if per_second > 0 else 1


class PairScorer(ScorerBase):
    """A scorer of consecutive frame pairs (i-1, i), stored at frame i, on every ``_step``-th frame."""

    def begin(self, num_frames: int, fps: float) -> None:
        super().begin(num_frames, fps)
        self._step = 1
        self._prev: np.ndarray | None = None
        self._prev_index = -10

    def update(self, frame: FrameViews) -> None:
        img = frame.small_gray
        if self._prev is not None and frame.index == self._prev_index + 1 and frame.index % self._step == 0:
            self.pair(frame.index, self._prev, img)
        self._prev, self._prev_index = img, frame.index

    def pair(self, index: int, prev: np.ndarray, cur: np.ndarray) -> None:
        raise NotImplementedError


@register_scorer("motion")
@dataclass
class MotionScorer(PairScorer):
    samples_per_s: float = 8.0
    name = "motion"
    version = "1"
    columns = ("motion_score",)
    signal_names = ("flow",)

    def begin(self, num_frames: int, fps: float) -> None:
        super().begin(num_frames, fps)
        self._step = _every(fps, self.samples_per_s)
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)

    def pair(self, index: int, prev: np.ndarray, cur: np.ndarray) -> None:
        if min(cur.shape) < 16:  # DIS needs >= 12 px; tiny videos (16 px frames, 8 px views) are upscaled
            k = -(-16 // min(cur.shape))
            prev, cur = (cv2.resize(x, None, fx=k, fy=k, interpolation=cv2.INTER_LINEAR) for x in (prev, cur))
        flow = self._dis.calc(prev, cur, None)
        mag = float(np.mean(np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2)))
        self._put("flow", index, mag * REF_SHORT_SIDE / min(cur.shape))

    def aggregate(self, signals, start, end):
        # the flow stored at frame i describes the pair (i-1, i): only pairs inside the clip count
        return {"motion_score": nan_stat(signals["flow"][start + 1:end])}


@register_scorer("sharpness")
@dataclass
class SharpnessScorer(ScorerBase):
    samples_per_s: float = 4.0
    name = "sharpness"
    version = "1"
    columns = ("sharpness",)
    signal_names = ("laplacian_var",)

    def begin(self, num_frames: int, fps: float) -> None:
        super().begin(num_frames, fps)
        self._step = _every(fps, self.samples_per_s)

    def update(self, frame: FrameViews) -> None:
        if frame.index % self._step == 0:
            self._put("laplacian_var", frame.index, float(cv2.Laplacian(frame.gray, cv2.CV_32F).var()))

    def aggregate(self, signals, start, end):
        v = signals["laplacian_var"][start:end]
        if np.all(np.isnan(v)) and end > start:  # very short clip between samples: nearest sample
            idx = np.flatnonzero(~np.isnan(signals["laplacian_var"]))
            if idx.size:
                v = signals["laplacian_var"][idx[np.argmin(np.abs(idx - (start + end) // 2))]][None]
        return {"sharpness": nan_stat(v, "median")}


@register_scorer("brightness")
@dataclass
class BrightnessScorer(ScorerBase):
    black_luma: float = 20.0
    name = "brightness"
    version = "1"
    columns = ("brightness", "black_ratio")
    signal_names = ("luma",)

    def update(self, frame: FrameViews) -> None:
        self._put("luma", frame.index, float(frame.small_gray.mean()))

    def aggregate(self, signals, start, end):
        luma = signals["luma"][start:end]
        luma = luma[~np.isnan(luma)]
        if luma.size == 0:
            return {"brightness": None, "black_ratio": None}
        return {"brightness": float(luma.mean()), "black_ratio": float(np.mean(luma < self.black_luma))}


@register_scorer("static")
@dataclass
class StaticScorer(PairScorer):
    static_diff: float = 0.5
    name = "static"
    version = "1"
    columns = ("static_ratio",)
    signal_names = ("frame_diff",)

    def pair(self, index: int, prev: np.ndarray, cur: np.ndarray) -> None:
        self._put("frame_diff", index, float(cv2.absdiff(cur, prev).mean()))

    def aggregate(self, signals, start, end):
        d = signals["frame_diff"][start + 1:end]
        d = d[~np.isnan(d)]
        if d.size == 0:
            return {"static_ratio": None}
        return {"static_ratio": float(np.mean(d < self.static_diff))}
