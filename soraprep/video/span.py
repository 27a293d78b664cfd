"""The one conversion between a span in seconds and a span in frames, used by ``curate`` and ``download``.

A span is half-open: frames ``[start_frame, end_frame)`` of the source, in display order. In seconds it
is ``[start_s, end_s)`` measured from the first frame (time 0, whatever the container's start time).

**Seconds -> frames.** A frame belongs to ``[start_s, end_s)`` when its *start time* ``t`` satisfies
``start_s - EPS_S <= t < end_s - EPS_S``. ``EPS_S`` (one microsecond) absorbs the rounding of times
that were themselves printed from frame times (``4.04`` for frame 101 at 25 fps), so a span written
from frames converts back to the same frames.

* With the demuxed timestamps (a :class:`~soraprep.video.io.PacketIndex`) the frame start times are the
  real ones: on variable-frame-rate input ``t * fps`` is *not* the frame index, and only the
  timestamps say which frames a second range holds.
* Without them (metadata only) the times are nominal, ``t = i / fps``, computed exactly with
  :class:`~fractions.Fraction` arithmetic.

**Frames -> seconds.** The start time of ``start_frame`` and of ``end_frame`` (for ``end_frame`` equal to
the frame count: the end of the last frame, one median frame step after its start), from the same
source of times.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from soraprep.video.io import PacketIndex

EPS_S = 1e-6   # seconds of slack when deciding whether a frame starts inside a span (see the module doc)


def frame_times(index: PacketIndex) -> np.ndarray:
    """Start time in seconds of every frame (display order), from the first frame (time 0)."""
    return (index.pts - index.start_pts).astype(np.float64) * float(index.time_base)


def span_frames(start_s: float | None, end_s: float | None, *, index: PacketIndex | None = None,
                fps: Fraction | None = None, num_frames: int | None = None) -> tuple[int, int]:
    """Frames ``(start_frame, end_frame)`` whose start time lies in ``[start_s, end_s)``.

    ``start_s`` None means the first frame, ``end_s`` None the end of the video (``num_frames``, or the
    index's length). Times come from ``index`` when given, else from the nominal ``fps`` (required then).
    The result may be empty (``end_frame <= start_frame``): the caller decides what that means. With a
    ``num_frames`` (or an index) both ends are clamped to the video.
    """
    if index is not None:
        times = frame_times(index)
        n = len(index) if num_frames is None else min(num_frames, len(index))
        a = int(np.searchsorted(times, float(start_s) - EPS_S)) if start_s is not None else 0
        b = int(np.searchsorted(times, float(end_s) - EPS_S)) if end_s is not None else n
        return min(a, n), min(b, n)
    if not fps or fps <= 0:
        raise ValueError("span_frames needs the frame timestamps (index) or a positive nominal fps")
    fps = Fraction(fps)
    eps = Fraction(EPS_S)

    def first_at_or_after(t: float) -> int:   # smallest i with i / fps >= t - EPS_S
        return max(0, math.ceil((Fraction(t) - eps) * fps))

    a = first_at_or_after(start_s) if start_s is not None else 0
    if end_s is not None:
        b = first_at_or_after(end_s)
    elif num_frames is not None:
        b = num_frames
    else:
        raise ValueError("span_frames needs end_s, num_frames or an index for an open-ended span")
    if num_frames is not None:
        a, b = min(a, num_frames), min(b, num_frames)
    return a, b


def span_seconds(start_frame: int, end_frame: int, *, index: PacketIndex | None = None,
                 fps: Fraction | None = None) -> tuple[float, float]:
    """``(start_s, end_s)`` of frames ``[start_frame, end_frame)``: the start time of each end frame."""
    if index is not None:
        return index.time_of(start_frame), index.time_of(end_frame)
    if not fps or fps <= 0:
        raise ValueError("span_seconds needs the frame timestamps (index) or a positive nominal fps")
    return float(Fraction(start_frame) / Fraction(fps)), float(Fraction(end_frame) / Fraction(fps))


def span_duration_s(start_frame: int, end_frame: int, *, index: PacketIndex | None = None,
                    fps: Fraction | None = None) -> float:
    """Seconds from the start of ``start_frame`` to the start of ``end_frame`` (see :func:`span_seconds`)."""
    a, b = span_seconds(start_frame, end_frame, index=index, fps=fps)
    return b - a


def nominal_fps(index: PacketIndex) -> Fraction | None:
    """The frame rate the timestamps imply (one over the median frame step), None for fewer than 2 frames.

    For a row whose container reports no rate: derive it from what was demuxed instead of guessing."""
    if len(index) < 2:
        return None
    step = Fraction(int(np.median(np.diff(index.pts)))) * index.time_base
    return (1 / step).limit_denominator(1001) if step > 0 else None
