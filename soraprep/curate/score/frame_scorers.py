"""The built-in frame scorers: motion (and camera motion), sharpness, brightness/black frames, frozen frames.

Units are chosen so thresholds do not depend on the analysis size or frame rate:

- ``motion_score``: mean optical-flow magnitude (DIS, ultrafast preset) between consecutive frames, in
  pixels per frame at a 256-px short side, sampled ``samples_per_s`` times a second.
- ``sharpness``: median variance of the Laplacian of the gray frame at the analysis size.
- ``brightness``: mean luma (0–255); ``black_ratio``: share of frames whose mean luma < ``black_luma``.
- ``camera_motion`` / ``camera_shake``: the camera's motion class and jitter, from the same flow fields
  (see :mod:`soraprep.curate.score.camera` for the classes and units).
- ``static_ratio``: share of consecutive frame pairs that are frozen (frozen frames, slideshows, still
  images). A pair is frozen when less than ``moving_share`` of its 16x16-pixel blocks (of the half-size
  gray view) change by a mean absolute difference above ``block_diff`` luma levels: local change decides,
  so a small subject moving in front of a still camera is not frozen, while sensor noise (mostly averaged
  away by the downscale to the analysis size) stays below ``block_diff``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from soraprep.curate.score import camera
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
    camera_move_px: float = 0.3     # camera_motion: global motion below this (px/frame @256) is "static"
    camera_shake_px: float = 1.0    # ... translation jitter at or above this is "shaky"
    camera_mixed_ratio: float = 0.5  # ... a second motion this large relative to the first makes "mixed"
    name = "motion"
    version = "2"   # 2: camera_motion, camera_shake
    columns = ("motion_score", "camera_motion", "camera_shake")
    signal_names = ("flow", *camera.FLOW_STATS)

    def __post_init__(self) -> None:
        if self.camera_move_px < 0 or self.camera_shake_px <= 0 or not 0 < self.camera_mixed_ratio <= 1:
            raise ValueError("motion: camera_move_px must be >= 0, camera_shake_px > 0 and camera_mixed_ratio "
                             "in (0, 1] (px/frame at a 256-px short side; see soraprep/curate/score/camera.py)")

    def begin(self, num_frames: int, fps: float) -> None:
        super().begin(num_frames, fps)
        self._step = _every(fps, self.samples_per_s)
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)

    def pair(self, index: int, prev: np.ndarray, cur: np.ndarray) -> None:
        if min(cur.shape) < 16:  # DIS needs >= 12 px; tiny videos (16 px frames, 8 px views) are upscaled
            k = -(-16 // min(cur.shape))
            prev, cur = (cv2.resize(x, None, fx=k, fy=k, interpolation=cv2.INTER_LINEAR) for x in (prev, cur))
        flow = self._dis.calc(prev, cur, None)
        scale = REF_SHORT_SIDE / min(cur.shape)
        mag = float(np.mean(np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2)))
        self._put("flow", index, mag * scale)
        for key, value in zip(camera.FLOW_STATS, camera.global_flow(flow, scale)):
            self._put(key, index, value)

    def aggregate(self, signals, start, end):
        # the flow stored at frame i describes the pair (i-1, i): only pairs inside the clip count
        stats = {k: signals[k][start + 1:end] for k in camera.FLOW_STATS} if "cam_dx" in signals else None
        label, shake = (None, None) if stats is None else camera.classify(
            stats, move_px=self.camera_move_px, shake_px=self.camera_shake_px, mixed_ratio=self.camera_mixed_ratio)
        return {"motion_score": nan_stat(signals["flow"][start + 1:end]), "camera_motion": label,
                "camera_shake": shake}


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


BLOCK = 16  # static: block side in pixels of the half-size gray view


@register_scorer("static")
@dataclass
class StaticScorer(ScorerBase):
    block_diff: float = 3.0       # a block "changes" when its mean absolute difference exceeds this (luma)
    moving_share: float = 0.004   # a frame is frozen when fewer than this share of its blocks changed ...
    window_s: float = 0.5         # ... since the frame this long before it (motion accumulates, noise does not)
    name = "static"
    version = "2"   # 2: local change (share of changed blocks) instead of the whole-frame mean difference,
                    # against the frame window_s earlier, not the previous one (slow smooth pans are motion)
    columns = ("static_ratio",)
    signal_names = ("changed_blocks", "static_from")   # share of changed blocks at i; the frame i was compared with
    #: keys of earlier versions: refused with this message (configs fail loud)
    retired_params = {"static_diff": "static v2 decides from local change: replace `static_diff` with "
                                     "`block_diff` (mean absolute difference of a 16x16 block above which it "
                                     "changes, default 3.0) and `moving_share` (share of changed blocks under "
                                     "which a frame pair is frozen, default 0.004), e.g. "
                                     "`static: {block_diff: 3.0, moving_share: 0.004}`"}

    def __post_init__(self) -> None:
        if self.block_diff <= 0 or not 0 < self.moving_share <= 1 or self.window_s <= 0:
            raise ValueError("static: block_diff must be > 0 (luma levels), moving_share in (0, 1] and window_s > 0 "
                             f"(got {self.block_diff}, {self.moving_share}, {self.window_s})")

    def begin(self, num_frames: int, fps: float) -> None:
        super().begin(num_frames, fps)
        # compare frame i with frame i - lag: a pan of 0.1 px/frame is invisible between neighbours (its
        # per-block change is below any threshold that sensor noise does not also exceed) but not over 0.5 s
        self._lag = max(1, int(round(float(fps) * self.window_s)))
        self._recent: dict[int, np.ndarray] = {}

    def update(self, frame: FrameViews) -> None:
        img, i = frame.small_gray, frame.index
        self._recent[i] = img
        self._recent.pop(i - self._lag - 1, None)
        before = self._recent.get(i - self._lag)
        if before is None:
            before = self._recent.get(i - 1)   # the first frames of the video: compare what there is
        if before is not None:
            self._put("changed_blocks", i, self._changed(before, img))
            self._put("static_from", i, i - self._lag if i - self._lag in self._recent else i - 1)

    def _changed(self, prev: np.ndarray, cur: np.ndarray) -> float:
        h, w = cur.shape
        d = cv2.absdiff(cur, prev)
        # mean absolute difference per ~16x16 block (area averaging also covers the partial edge blocks)
        blocks = cv2.resize(d, (-(-w // BLOCK), -(-h // BLOCK)), interpolation=cv2.INTER_AREA) \
            if min(h, w) > BLOCK else np.array([[d.mean()]])
        return float(np.mean(blocks > self.block_diff))

    def aggregate(self, signals, start, end):
        # the value at frame i compares it with frame static_from[i]: use those whose earlier frame is in the
        # clip, or, in a clip shorter than the window, every value after its first frame
        d, base = signals["changed_blocks"][start + 1:end], signals["static_from"][start + 1:end]
        span = np.arange(start + 1, end) - base          # frames between the two compared (NaN: not scored)
        ok = ~np.isnan(d) & (base >= start)
        if ok.any():   # the widest comparisons inside the clip (the video's first frames had no window yet)
            d = d[ok & (span == span[ok].max())]
        else:
            d = d[~np.isnan(d)]
        if d.size == 0:
            return {"static_ratio": None}
        return {"static_ratio": float(np.mean(d < self.moving_share))}
