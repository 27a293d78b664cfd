"""Scene splitting: detector backends (fed by the shared decode pass) and the ``split`` stage.

Detectors are PySceneDetect's ``content`` and ``adaptive`` detectors, driven frame by frame with the
small BGR views of the ``analyze`` pass (so splitting costs no extra decode), TransNetV2 (``transnetv2``,
curate/transnet.py) and ``adaptive+transnetv2`` (curate/transitions.py), which also report gradual
transitions whose frames go to no clip, or ``none``; by default (``glitch_guard: true``) a
:class:`GlitchGuard` in front of the detector hides isolated glitch frames from it (a damaged frame is
not a shot). The ``split``
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

import cv2
import numpy as np

from soraprep.curate.score.glitch import frame_distance, outlier_run, tiny
from soraprep.curate.transitions import scene_ranges
from soraprep.stages import Resources, Row, failed, register

#: ``split_reason`` values: a whole scene, or split from a longer one and why (see scene_parts)
SPLIT_REASONS = ("scene", "max_length", "keyframe", "keyframe+max_length")

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


class GlitchGuard:
    """Feeds a detector with isolated glitch frames replaced by stand-ins (their neighbours).

    A damaged frame (block garbage, a smear) differs from its neighbours as much as a new shot does, so a
    detector cuts into it; and with ``min_scene_len`` that false cut can also hide a real cut a few frames
    later. The guard holds frames back ``max_run + 1`` frames and replaces frame ``p`` (and the run after
    it) by stand-ins (see :meth:`_glitch_run`) when either

    * ``p .. p+k-1`` (k <= ``max_run``) is an isolated outlier run (:func:`outlier_run`: the frame after the
      run looks like the one before it) — the glitch is inside a shot: no cut at all; or
    * ``p`` is an outlier right before a real cut: it differs from the last good frame and from ``p+1``,
      ``p+1`` and ``p+2`` are alike (``ratio / 2``: a steady new shot, not fast motion), and ``p`` looks
      more like the last good frame than like ``p+1`` — the
      cut is then found at ``p+1``, the first frame of the new shot, not at the glitch.

    Cut frames keep their exact indices (the detector sees the real index of every frame). Only the
    detector's view changes; the glitch scorer still counts the frame. The guard's outlier ``ratio`` (0.7)
    is more lenient than the scorer's (0.5): a stand-in for a frame that was not damaged costs the detector
    nothing, while a frame the scorer flags drops its clip.
    """

    def __init__(self, detector, *, min_diff: float = 8.0, ratio: float = 0.7, max_run: int = 2):
        self._det = detector
        self._min_diff, self._ratio, self._max_run = min_diff, ratio, max_run
        self._pending: list[tuple[int, np.ndarray, np.ndarray]] = []   # (index, bgr, tiny) not yet fed
        self._good: tuple[np.ndarray, np.ndarray] | None = None        # last frame fed as itself
        self._stand_ins: list[np.ndarray] = []                         # fed instead of the next frames

    def process(self, index: int, bgr: np.ndarray) -> list[int]:
        if self._pending and self._pending[-1][0] != index - 1:
            return self._flush() + self._push(index, bgr)   # a gap: no test across it
        return self._push(index, bgr)

    def _push(self, index: int, bgr: np.ndarray) -> list[int]:
        self._pending.append((index, bgr, tiny(bgr)))
        cuts: list[int] = []
        while len(self._pending) > self._max_run + 1:
            cuts += self._feed_one()
        return cuts

    def _flush(self) -> list[int]:
        cuts: list[int] = []
        while self._pending:
            cuts += self._feed_one()
        return cuts

    def _feed_one(self) -> list[int]:
        index, bgr, small = self._pending[0]
        if not self._stand_ins and self._good is not None:
            self._stand_ins = self._glitch_run()
        if self._stand_ins:
            bgr = self._stand_ins.pop(0)
        else:
            self._good = (bgr, small)
        self._pending.pop(0)
        return self._det.process(index, bgr)

    def _glitch_run(self) -> list[np.ndarray]:
        """Stand-in pictures for the glitch run that starts at the oldest pending frame (none: no glitch).

        Inside a shot the run is replaced by a cross-fade from the last good frame to the frame after the
        run (copies would look frozen, and an adaptive detector then takes the step after them for a cut);
        before a cut, by the last good frame."""
        good_bgr, good = self._good
        views = [p[2] for p in self._pending]
        if frame_distance(good, views[0]) <= self._min_diff:
            return []        # both tests need a big change into the frame: the common case ends here
        for k in range(1, min(self._max_run, len(views) - 1) + 1):
            if outlier_run([good] + views[: k + 1], min_diff=self._min_diff, ratio=self._ratio):
                after = self._pending[k][1]
                return [cv2.addWeighted(good_bgr, 1 - j / (k + 1), after, j / (k + 1), 0) for j in range(1, k + 1)]
        if len(views) >= 3:   # a glitch right before a cut: it belongs to the old shot
            p, nxt, after = views[0], views[1], views[2]
            into, out_of = frame_distance(good, p), frame_distance(p, nxt)
            # the new shot must be steady (half the ratio): in fast motion every step looks alike
            if min(into, out_of) > self._min_diff and frame_distance(nxt, after) < self._ratio / 2 * out_of \
                    and into < out_of:
                return [good_bgr]
        return []

    def finish(self, last_index: int) -> list[int]:
        return self._flush() + self._det.finish(last_index)

    def __getattr__(self, name: str):
        """Anything else is the wrapped detector's (e.g. ``transitions()`` of the TransNetV2 detectors)."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._det, name)


def build_detector(config: dict[str, Any], fps: Fraction):
    """``{"name": "adaptive", "glitch_guard": true, **params}`` -> a detector (None for ``none``), behind a
    :class:`GlitchGuard` unless ``glitch_guard: false``; bad configs fail loudly."""
    config = dict(config or {"name": "adaptive"})
    name = config.pop("name", "adaptive")
    guard = config.pop("glitch_guard", True)
    if not isinstance(guard, bool):
        raise ValueError(f"scene detector: glitch_guard must be true or false, got {guard!r}")
    if name not in DETECTORS:
        raise ValueError(f"unknown scene detector {name!r}; choose one of {', '.join(sorted(DETECTORS))}")
    try:
        det = DETECTORS[name](fps, **config)
    except TypeError as exc:
        raise ValueError(f"scene detector {name!r}: {exc}") from exc
    return GlitchGuard(det) if guard and det is not None else det


def scene_spans(start: int, end: int, cuts: list[int], *, fps: Fraction | float, max_clip_s: float | None,
                trim_start_s: float, trim_end_s: float, keyframes: np.ndarray | None = None,
                keyframe_tolerance_s: float = 1.0,
                keyframe_split_s: float | None = None, min_part_s: float = 0.0,
                transitions: list[tuple[int, int]] | tuple = ()) -> list[tuple[int, int]]:
    """Frame spans ``[a, b)`` of the clips: scenes between cuts (frames of gradual ``transitions`` in
    none, see curate/transitions.py), trimmed, long ones split into equal parts."""
    return [(a, b) for a, b, _ in scene_parts(start, end, cuts, fps=fps, max_clip_s=max_clip_s,
                                              trim_start_s=trim_start_s, trim_end_s=trim_end_s, keyframes=keyframes,
                                              keyframe_tolerance_s=keyframe_tolerance_s,
                                              keyframe_split_s=keyframe_split_s, min_part_s=min_part_s,
                                              transitions=transitions)]


def scene_parts(start: int, end: int, cuts: list[int], *, fps: Fraction | float, max_clip_s: float | None,
                trim_start_s: float, trim_end_s: float, keyframes: np.ndarray | None = None,
                keyframe_tolerance_s: float = 1.0, keyframe_split_s: float | None = None,
                min_part_s: float = 0.0, transitions: list[tuple[int, int]] | tuple = ()) -> list[tuple[int, int, str]]:
    """:func:`scene_spans` with each span's ``split_reason`` (one of :data:`SPLIT_REASONS`): ``scene`` when
    the clip is a whole scene (both ends at cuts, transitions or the ends of the video, trimmed),
    ``max_length`` when a scene longer than ``max_clip_s`` was split into it, ``keyframe`` when a scene was
    split at its first keyframe, ``keyframe+max_length`` when both happened."""
    parts: list[tuple[int, int, str]] = []
    for a, b in scene_ranges(start, end, cuts, transitions):
        a2, b2 = a + int(round(trim_start_s * fps)), b - int(round(trim_end_s * fps))
        if b2 <= a2:
            parts.append((a, b, "scene"))  # too short to trim: keep the scene whole, the duration filter decides
            continue
        pieces = _split_long(a2, b2, fps, max_clip_s, keyframes, keyframe_tolerance_s)
        parts += [(x, y, "scene" if len(pieces) == 1 else "max_length") for x, y in pieces]
    if keyframe_split_s is not None and keyframes is not None and len(keyframes):
        out = []
        for a, b, reason in parts:
            pieces = _split_at_first_keyframe((a, b), keyframes, keyframe_split_s * fps, min_part_s * fps)
            if len(pieces) > 1:
                reason = "keyframe" if reason == "scene" else "keyframe+max_length"
            out += [(x, y, reason) for x, y in pieces]
        parts = out
    return parts


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
        parts = scene_parts(an["start"], an["end"], an["cuts"], fps=fps, max_clip_s=self.max_clip_s,
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
        for k, (a, b, reason) in enumerate(parts):
            clip = {key: val for key, val in row.items() if key not in ("_analysis",)}
            clip.update(
                clip_id=f"{base}-{k:04d}", clip_index=k, path=row["source"], cut_mode="none",
                start_frame=a, end_frame=b, num_frames=b - a, split_reason=reason,
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

