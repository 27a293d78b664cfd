"""Scene splitting: detector backends (fed by the shared decode pass) and the ``split`` stage.

Detectors are PySceneDetect's ``content`` and ``adaptive`` detectors, driven frame by frame with the
small BGR views of the ``analyze`` pass (so splitting costs no extra decode), TransNetV2 (``transnetv2``,
curate/transnet.py) and ``adaptive+transnetv2`` (curate/transitions.py), which also report gradual
transitions whose frames go to no clip, or ``none``. The ``split``
stage turns the cut frames into clip rows: scenes longer than ``max_clip_s`` are split into equal parts
(each boundary moved to a keyframe when one lies within ``keyframe_tolerance_s``, so stream-copy cutting
loses nothing), a scene whose first keyframe comes more than ``keyframe_split_s`` after its start is split
there (for stream-copy cuts: only the short head needs re-encoding), and ``trim_start_s``/``trim_end_s``
shave transition frames off each scene. Short scenes
are *not* dropped here: they become rows that the duration filter rejects with a reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from soraprep.curate.transitions import scene_ranges
from soraprep.stages import Resources, Row, failed, register

DETECTORS: dict[str, type] = {}


def _register_detector(name: str):
    def deco(cls):
        DETECTORS[name] = cls
        return cls

    return deco


class _SceneDetectBackend:
    """Adapter: PySceneDetect detector <- (frame index, small BGR frame)."""

    def __init__(self, detector, fps: Fraction):
        from scenedetect.common import FrameTimecode

        self._tc = FrameTimecode
        self._det = detector
        self._fps = fps if fps.denominator != 1 else Fraction(fps.numerator * 1001, 1001)  # needs a non-int rate

    def process(self, index: int, bgr: np.ndarray) -> list[int]:
        return [int(c.frame_num) for c in self._det.process_frame(self._tc(index, self._fps), bgr)]

    def finish(self, last_index: int) -> list[int]:
        return [int(c.frame_num) for c in self._det.post_process(self._tc(last_index, self._fps))]


@_register_detector("adaptive")
def _adaptive(fps: Fraction, threshold: float = 3.0, min_content_val: float = 15.0, window_width: int = 2,
              min_scene_len: int = 8, luma_only: bool = False):
    from scenedetect.detectors import AdaptiveDetector

    return _SceneDetectBackend(AdaptiveDetector(adaptive_threshold=threshold, min_content_val=min_content_val,
                                                window_width=window_width, min_scene_len=min_scene_len,
                                                luma_only=luma_only), fps)


@_register_detector("content")
def _content(fps: Fraction, threshold: float = 27.0, min_scene_len: int = 8, luma_only: bool = False):
    from scenedetect.detectors import ContentDetector

    return _SceneDetectBackend(ContentDetector(threshold=threshold, min_scene_len=min_scene_len,
                                               luma_only=luma_only), fps)


@_register_detector("transnetv2")
def _transnetv2(fps: Fraction, **params):
    from soraprep.curate.transnet import TransNetBackend  # torch only when chosen (extra: transnet)

    return TransNetBackend(fps, **params)


@_register_detector("adaptive+transnetv2")
def _adaptive_transnetv2(fps: Fraction, **params):
    from soraprep.curate.transitions import CombinedBackend

    return CombinedBackend(fps, **params)


@_register_detector("none")
def _none(fps: Fraction):
    return None


def build_detector(config: dict[str, Any], fps: Fraction):
    """``{"name": "adaptive", **params}`` -> a detector (None for ``none``); bad configs fail loudly."""
    config = dict(config or {"name": "adaptive"})
    name = config.pop("name", "adaptive")
    if name not in DETECTORS:
        raise ValueError(f"unknown scene detector {name!r}; choose one of {', '.join(sorted(DETECTORS))}")
    try:
        return DETECTORS[name](fps, **config)
    except TypeError as exc:
        raise ValueError(f"scene detector {name!r}: {exc}") from exc


def scene_spans(start: int, end: int, cuts: list[int], *, fps: Fraction | float, max_clip_s: float | None,
                trim_start_s: float, trim_end_s: float, keyframes: np.ndarray | None = None,
                keyframe_tolerance_s: float = 1.0,
                keyframe_split_s: float | None = None, min_part_s: float = 0.0,
                transitions: list[tuple[int, int]] | tuple = ()) -> list[tuple[int, int]]:
    """Frame spans ``[a, b)`` of the clips: scenes between cuts (frames of gradual ``transitions`` in
    none, see curate/transitions.py), trimmed, long ones split into equal parts."""
    spans = []
    for a, b in scene_ranges(start, end, cuts, transitions):
        a2, b2 = a + int(round(trim_start_s * fps)), b - int(round(trim_end_s * fps))
        if b2 <= a2:
            spans.append((a, b))  # too short to trim: keep the scene whole, the duration filter decides
            continue
        spans += _split_long(a2, b2, fps, max_clip_s, keyframes, keyframe_tolerance_s)
    if keyframe_split_s is not None and keyframes is not None and len(keyframes):
        spans = [part for span in spans
                 for part in _split_at_first_keyframe(span, keyframes, keyframe_split_s * fps, min_part_s * fps)]
    return spans


def _split_at_first_keyframe(span: tuple[int, int], keyframes: np.ndarray, max_gap: float, min_len: float = 0.0):
    """A scene whose first keyframe lies more than ``max_gap`` frames after its start becomes two clips:
    the head (no keyframe: re-encoded exactly) and the body from the keyframe (stream-copied losslessly).
    Cheaper than re-encoding the whole scene, loses nothing — but only when both parts are at least
    ``min_len`` frames (the duration filter's minimum): otherwise the scene stays whole (and its cut
    re-encodes it), as splitting would hand the filter a part it drops."""
    a, b = span
    first = keyframes[np.searchsorted(keyframes, a):]  # keyframes at or after the start
    if len(first) and a < first[0] < b and first[0] - a > max_gap and min(first[0] - a, b - first[0]) >= min_len:
        return [(a, int(first[0])), (int(first[0]), b)]
    return [span]


def _split_long(a: int, b: int, fps: Fraction | float, max_clip_s: float | None, keyframes, tol_s: float):
    if not max_clip_s or fps <= 0 or (b - a) <= max_clip_s * fps:
        return [(a, b)]
    # no clip can be shorter than one frame: at 1 frame / 30 s (or max_clip_s: 0.001) max_clip_s * fps < 1,
    # and a limit of 0 frames would never let the loop below advance
    max_len = max(1, int(math.floor(max_clip_s * fps)))
    parts = math.ceil((b - a) / max(max_clip_s * fps, 1))
    points = [a + round(k * (b - a) / parts) for k in range(1, parts)]
    if keyframes is not None and len(keyframes):
        tol = int(round(tol_s * fps))
        moved = []
        for p in points:
            near = keyframes[(keyframes >= p - tol) & (keyframes <= p + tol)]
            moved.append(int(near[np.argmin(np.abs(near - p))]) if len(near) else p)
        points = moved
    bounds = [a] + sorted(set(points)) + [b]
    out = []
    for x, y in zip(bounds[:-1], bounds[1:]):
        while y - x > max_len:  # moving a boundary to a keyframe must not break the length limit (max_len >= 1)
            out.append((x, x + max_len))
            x += max_len
        if y > x:
            out.append((x, y))
    return out


@register("split")
@dataclass
class SplitStage:
    """One video row in, one row per clip out (rows that failed earlier pass through as they are)."""

    max_clip_s: float | None = 20.0
    trim_start_s: float = 0.0
    trim_end_s: float = 0.0
    keyframe_tolerance_s: float = 1.0
    keyframe_split_s: float | None = None   # see _split_at_first_keyframe; derived from `cut` (recipe_inputs)
    min_part_s: float = 0.0                 # ... and this, from filter.duration_s.min
    name = "split"
    resources = Resources(cpus=0.1)
    batch_size = 1

    @classmethod
    def recipe_inputs(cls, sections: dict[str, Any]) -> dict[str, Any]:
        """Stream-copy cuts: split a scene at its first keyframe when that is more than ``cut.max_snap_s``
        in, so only the head is re-encoded (exact and none cuts need no such split) — but never into a
        part the duration filter would drop (such a scene is re-encoded whole)."""
        cut = sections.get("cut") or {}
        if cut.get("mode", "copy") not in ("copy", "keyframe") or not cut.get("fallback_exact", True):
            return {}
        out: dict[str, Any] = {"keyframe_split_s": float(cut.get("max_snap_s", 1.0))}
        rule = (sections.get("filter") or {}).get("duration_s")
        min_s = rule.get("min") if isinstance(rule, dict) else None
        if isinstance(min_s, (int, float)) and not isinstance(min_s, bool) and min_s > 0:
            out["min_part_s"] = float(min_s)
        return out

    def __post_init__(self) -> None:
        if self.max_clip_s is not None and self.max_clip_s <= 0:
            raise ValueError("split.max_clip_s must be > 0 (or null for no forced split)")
        if self.trim_start_s < 0 or self.trim_end_s < 0:
            raise ValueError("split.trim_start_s / trim_end_s must be >= 0")

    def setup(self) -> None:
        pass

    def __call__(self, batch: list[Row]) -> list[Row]:
        out: list[Row] = []
        for row in batch:
            if failed(row) or "_analysis" not in row:
                out.append(row)
                continue
            out += self._split(row)
        return out

    def _split(self, row: Row) -> list[Row]:
        an, index, info = row["_analysis"], row["_index"], row["_info"]
        fps = info.fps   # a Fraction from probe
        keyframes = np.flatnonzero(index.keyframe)
        spans = scene_spans(an["start"], an["end"], an["cuts"], fps=fps, max_clip_s=self.max_clip_s,
                            trim_start_s=self.trim_start_s, trim_end_s=self.trim_end_s, keyframes=keyframes,
                            keyframe_tolerance_s=self.keyframe_tolerance_s,
                            keyframe_split_s=self.keyframe_split_s, min_part_s=self.min_part_s,
                            transitions=an.get("transitions") or ())
        base = row.get("_base_id") or row["video_id"]
        thumbs = an["thumbs"]
        thumb_idx = np.array(sorted(thumbs), dtype=np.int64)
        samples = an.get("samples") or {}
        sample_idx = np.array(sorted(samples), dtype=np.int64)
        missing = np.asarray(an.get("missing") or [], dtype=np.int64)
        clips = []
        for k, (a, b) in enumerate(spans):
            clip = {key: val for key, val in row.items() if key not in ("_analysis",)}
            clip.update(
                clip_id=f"{base}-{k:04d}", clip_index=k, path=row["source"], cut_mode="none",
                start_frame=a, end_frame=b, num_frames=b - a,
                start_s=index.time_of(a), end_s=index.time_of(b),
                _signals=an["signals"],
            )
            if row.get("_decode_note"):  # a truncated/damaged stream: say which frames really decoded
                clip["decode_note"] = row["_decode_note"]
            # frames of the span the decoder rejected (damaged packets): a copied file holds them broken
            clip["damaged_frames"] = int(np.count_nonzero((missing >= a) & (missing < b)))
            clip["duration_s"] = clip["end_s"] - clip["start_s"]
            mid = (a + b) // 2
            if len(thumb_idx):
                clip["_thumb"] = thumbs[int(thumb_idx[np.argmin(np.abs(thumb_idx - mid))])]
            if len(sample_idx):
                inside = sample_idx[(sample_idx >= a) & (sample_idx < b)]
                if not len(inside):  # a clip shorter than the sampling step: its nearest sample
                    inside = sample_idx[[np.argmin(np.abs(sample_idx - mid))]]
                clip["_samples"] = [(int(i), samples[int(i)]) for i in inside]
            clips.append(clip)
        return clips

