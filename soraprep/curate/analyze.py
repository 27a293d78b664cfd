"""The probe and analyze stages: metadata first, then the single decode pass every frame-based step shares.

``analyze`` decodes each video (or each input span) exactly once, converts every frame to the views the
consumers need — gray at the analysis size, a half-size gray, and a small BGR image for the scene
detector — taken straight from the decoder's YUV planes when it can (no colour conversion of the full
frame), and feeds the scene detector and every frame scorer. It keeps a thumbnail about once a second
for the report. The results ride on the row under private ``_``-prefixed keys until ``split`` and
``score`` turn them into clips and columns; they never reach the manifest. With ``sample_every_s`` > 0 it
also keeps frames (JPEG, ``sample_short_side`` px) for model-based scorer stages, which read each clip's
share as ``row["_samples"]`` — ``[(frame_index, jpeg_bytes), ...]``, at least one per clip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from soraprep.curate.score.base import FrameViews, build_scorers
from soraprep.curate.split import build_detector
from soraprep.stages import STAGES, Resources, Row, error_dict, failed, register
from soraprep.types import fps_columns
from soraprep.video.io import MIN_SIDE, VideoError, analysis_size, decode, probe_with_index
from soraprep.video.orient import rotate_array
from soraprep.video.span import span_frames

_PLANAR_8BIT = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv411p", "yuv410p"}

# (Kr, Kb) luma weights by FFmpeg colorspace code, as swscale picks them (anything else: BT.601)
_LUMA_WEIGHTS = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 7: (0.212, 0.087), 9: (0.2627, 0.0593),
                 10: (0.2627, 0.0593)}


def yuv_to_bgr_matrix(colorspace: int, full_range: bool) -> np.ndarray:
    """The 3x4 affine map (Y, Cb, Cr, 1) -> (B, G, R) that swscale applies for this colorspace and range.

    Limited ("TV", Y 16-235, chroma 16-240) range is stretched to 0-255, as every player and PySceneDetect's
    own decoding do; OpenCV's ``COLOR_YUV2BGR`` does neither (full range, analogue-YUV weights).
    """
    kr, kb = _LUMA_WEIGHTS.get(int(colorspace), (0.299, 0.114))
    kg = 1.0 - kr - kb
    ys, cs, y0 = (1.0, 1.0, 0.0) if full_range else (255 / 219, 255 / 224, 16.0)
    rv, bu = 2 * (1 - kr) * cs, 2 * (1 - kb) * cs
    gu, gv = -2 * kb * (1 - kb) / kg * cs, -2 * kr * (1 - kr) / kg * cs
    m = np.array([[ys, bu, 0.0], [ys, gu, gv], [ys, 0.0, rv]])
    offset = -m @ np.array([y0, 128.0, 128.0])
    return np.hstack([m, offset[:, None]]).astype(np.float32)


def _full_range(frame) -> bool:
    return frame.format.name.startswith("yuvj") or int(getattr(frame, "color_range", 0) or 0) == 2


@register("probe")
@dataclass
class ProbeStage:
    """Container metadata for each input video (no decoding); also indexes packets for seeking and cutting."""

    name = "probe"
    resources = Resources(cpus=1)
    batch_size = 1

    def setup(self) -> None:
        pass

    def __call__(self, batch: list[Row]) -> list[Row]:
        for row in batch:
            if failed(row):
                continue
            try:
                info, index = probe_with_index(row["source"])   # one demux: the count and the index
                row["_info"], row["_index"] = info, index
            except VideoError as exc:
                row["error"] = error_dict("probe", exc.kind, exc.message)
                continue
            row.update(height=info.height, width=info.width, codec=info.codec, **fps_columns(info.fps))
            if row.get("_span_s"):
                self._span_frames(row)
        return batch

    @staticmethod
    def _span_frames(row: Row) -> None:
        """Input span in seconds -> frames whose start time lies in [start_s, end_s) (video.span: the one
        conversion, from the demuxed timestamps; ``download`` uses the same)."""
        start_s, end_s = row["_span_s"]
        a, b = span_frames(start_s, end_s, index=row["_index"])
        if b <= a:
            row["error"] = error_dict("probe", "empty_span", f"span {start_s}..{end_s} s holds no frame "
                                      f"(video lasts {row['_info'].duration_s:.2f} s)")
        row["_span_start_frame"], row["_span_end_frame"] = a, b


def _plane(frame, i: int) -> np.ndarray:
    p = frame.planes[i]
    return np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width]


@register("analyze")
@dataclass
class AnalyzeStage:
    """Decode once at ``short_side`` px; detect scenes; gather every frame scorer's per-frame signals."""

    short_side: int = 144
    detector: dict[str, Any] = field(default_factory=lambda: {"name": "adaptive"})
    scorers: dict[str, dict[str, Any]] = field(default_factory=dict)
    thumb_every_s: float = 1.0
    thumb_height: int = 96
    max_thumbs: int = 600
    sample_every_s: float = 0.0     # > 0: keep an RGB JPEG this often for model-based scorer stages;
                                    # derived from those stages' `samples_every_s` when unset (recipe_inputs)
    sample_short_side: int = 224
    max_samples: int = 3600
    name = "analyze"
    resources = Resources(cpus=1, memory_gb=1.0)
    batch_size = 1

    @classmethod
    def recipe_inputs(cls, sections: dict[str, Any]) -> dict[str, Any]:
        """Model-based scorer stages read frames sampled by this one decode pass: keep them as often as the
        most demanding of the recipe's stages asks (their ``samples_every_s``)."""
        wanted = {n: getattr(STAGES.get(n), "samples_every_s", 0) for n in sections}
        wanted = {n: w for n, w in wanted.items() if w}
        own = (sections.get("analyze") or {}).get("sample_every_s")
        if wanted and own is not None and not own > 0:
            raise ValueError(f"analyze.sample_every_s is {own!r} but {', '.join(wanted)} read(s) frames sampled by "
                             f"the decode pass: remove the key (it is derived) or set it > 0")
        return {"sample_every_s": min(wanted.values())} if wanted else {}

    def __post_init__(self) -> None:
        if self.short_side < 32:
            raise ValueError("analyze.short_side must be >= 32 pixels")
        if self.sample_every_s < 0 or self.sample_short_side < 16:
            raise ValueError("analyze.sample_every_s must be >= 0 and sample_short_side >= 16")
        build_detector(self.detector, Fraction(25))  # validate now: configs fail loud
        build_scorers(self.scorers)

    def setup(self) -> None:
        cv2.setNumThreads(1)

    def __call__(self, batch: list[Row]) -> list[Row]:
        for row in batch:
            if failed(row):
                continue
            try:
                self._analyze(row)
            except VideoError as exc:
                row["error"] = error_dict("analyze", exc.kind, exc.message)
            except (ValueError, RuntimeError, MemoryError) as exc:
                row["error"] = error_dict("analyze", type(exc).__name__, str(exc))
        return batch

    def _analyze(self, row: Row) -> None:
        info, index = row["_info"], row["_index"]
        start, end = row.get("_span_start_frame") or 0, row.get("_span_end_frame") or len(index)
        end = min(end, len(index))
        if end <= start:
            raise VideoError("empty_span", f"input span {start}..{end} holds no frames")
        fps = info.fps   # a Fraction from probe (video.io), never a float or a default
        rotation = getattr(info, "rotation", 0) or 0   # thumbnails and samples are shown upright
        detector = build_detector(self.detector, fps)
        scorers = build_scorers(self.scorers)
        for s in scorers:
            s.begin(len(index), float(fps))
        cuts: list[int] = []
        thumbs: dict[int, bytes] = {}
        thumb_step = max(1, int(round(float(fps) * self.thumb_every_s)))
        samples: dict[int, bytes] = {}
        sample_step = max(1, int(round(float(fps) * self.sample_every_s))) if self.sample_every_s > 0 else 0
        n = 0
        last = start - 1
        seen = np.zeros(end - start, dtype=bool)  # which listed frames the decoder really returned
        w = h = None
        # reformatters keep their swscale context between calls (a fresh one per frame costs ~2 ms)
        thumb_fmt, sample_fmt = VideoReformatter(), VideoReformatter()
        for f in decode(row["source"], start_frame=start, end_frame=end, fmt=None, index=index):
            frame = f.array
            if w is None:
                if min(frame.width, frame.height) < MIN_SIDE:  # the header said otherwise (probe checks it)
                    raise VideoError("too_small", f"decoded frames are {frame.width}x{frame.height}, below the "
                                     f"{MIN_SIDE}x{MIN_SIDE} minimum")
                w, h = analysis_size(frame.width, frame.height, self.short_side)
                planar = frame.format.name in _PLANAR_8BIT
                if planar:
                    to_bgr = yuv_to_bgr_matrix(int(getattr(frame, "colorspace", 2) or 2), _full_range(frame))
            if planar:
                gray = cv2.resize(_plane(frame, 0), (w, h), interpolation=cv2.INTER_AREA)
                small_gray = cv2.resize(gray, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
                if detector is not None:
                    # chroma only feeds the scene detector: bilinear is plenty (and 7x cheaper than area)
                    yuv = cv2.merge([small_gray] + [cv2.resize(_plane(frame, i), (w // 2, h // 2),
                                                               interpolation=cv2.INTER_LINEAR) for i in (1, 2)])
                    small_bgr = cv2.transform(yuv, to_bgr)  # range- and colorspace-aware, as a player shows it
            else:
                small_bgr = frame.to_ndarray(width=w // 2, height=h // 2, format="bgr24")
                gray = frame.to_ndarray(width=w, height=h, format="gray")
                small_gray = cv2.resize(gray, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
            if detector is not None:
                cuts += detector.process(f.index, small_bgr)
            views = FrameViews(f.index, f.time, gray, small_gray, corrupt=bool(frame.is_corrupt),
                               luma=_plane(frame, 0) if planar else None)
            for s in scorers:
                s.update(views)
            if f.index % thumb_step == 0 and len(thumbs) < self.max_thumbs:
                tw = max(2, int(round(self.thumb_height * w / h)))
                thumb = thumb_fmt.reformat(frame, width=tw, height=self.thumb_height, format="bgr24").to_ndarray()
                thumb = rotate_array(thumb, rotation)
                ok, jpg = cv2.imencode(".jpg", thumb, [cv2.IMWRITE_JPEG_QUALITY, 80])
                if ok:
                    thumbs[f.index] = jpg.tobytes()
            if sample_step and (f.index - start) % sample_step == 0 and len(samples) < self.max_samples:
                sw, sh = analysis_size(frame.width, frame.height, self.sample_short_side)
                bgr = rotate_array(sample_fmt.reformat(frame, width=sw, height=sh, format="bgr24").to_ndarray(), rotation)
                ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
                if ok:
                    samples[f.index] = jpg.tobytes()
            n += 1
            last = f.index
            if start <= f.index < end:
                seen[f.index - start] = True
        if n == 0:
            raise VideoError("no_frames_decoded", "the decoder returned no frame (unsupported codec or damaged stream)")
        transitions: list[tuple[int, int]] = []
        if detector is not None:
            cuts += detector.finish(last)
            if hasattr(detector, "transitions"):  # gradual transitions (curate/transitions.py): in no clip
                transitions = [(int(a), int(b)) for a, b in detector.transitions() if a <= last and b > start]
        decoded_end = last + 1
        if decoded_end < end:
            # the stream stops early (truncated/damaged): clips end at the last frame really decoded
            row["_decode_note"] = f"decoded frames {start}..{decoded_end} of {start}..{end}"
        row["_analysis"] = {
            "start": start, "end": decoded_end, "decoded": n,
            # listed frames the decoder rejected (damaged packets): each clip counts its own (damaged_frames)
            "missing": (np.flatnonzero(~seen[: decoded_end - start]) + start).tolist(),
            "cuts": sorted({c for c in cuts if start < c < decoded_end}),
            "transitions": transitions,
            "signals": {k: v for s in scorers for k, v in s.finish().items()},
            "thumbs": thumbs,
            "samples": samples,
        }
