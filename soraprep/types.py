"""Typed records that flow between soraprep's parts.

Frame rates are :class:`fractions.Fraction` (``30000/1001`` stays exact) from probe to cut; only the
manifest's two columns (``fps`` float, ``fps_rational`` text, :func:`fps_columns`) hold other types. Spans
are converted between seconds and frames in one place, :mod:`soraprep.video.span`. Records are frozen
dataclasses; the manifest stores them as flat columns (see :mod:`soraprep.manifest`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from typing import Any


def fps_fraction(value: Any) -> Fraction | None:
    """Coerce a frame rate (Fraction, int, float, ``"30000/1001"``) to an exact Fraction.

    Floats are snapped to the nearest fraction with denominator <= 1001, so ``29.97`` becomes
    ``30000/1001`` rather than a 52-bit binary fraction.
    """
    if value is None:
        return None
    if isinstance(value, Fraction):
        return value
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, str):
        return Fraction(value.strip())
    if hasattr(value, "numerator") and hasattr(value, "denominator"):
        return Fraction(int(value.numerator), int(value.denominator))
    return Fraction(float(value)).limit_denominator(1001)


def fps_columns(fps: Fraction | None) -> dict[str, Any]:
    """The manifest's two frame-rate columns for ``fps``: ``fps`` (float, for filters and Open-Sora's CSV)
    and ``fps_rational`` (the exact rate as text, ``"30000/1001"``). Read back with :func:`fps_fraction`."""
    if fps is None:
        return {"fps": None, "fps_rational": None}
    return {"fps": float(fps), "fps_rational": str(fps)}


@dataclass(frozen=True)
class VideoInfo:
    """Container and stream metadata, read without decoding a single frame."""

    path: str
    container: str
    duration_s: float
    fps: Fraction
    num_frames: int
    frames_exact: bool          # True when the frame count comes from the stream header, not duration*fps
    width: int                  # display size, after rotation
    height: int
    coded_width: int
    coded_height: int
    rotation: int               # degrees, as stored in the display matrix
    codec: str
    pix_fmt: str
    bit_rate: int | None
    has_audio: bool
    vfr: bool                   # average and guessed/real rates disagree -> variable frame rate
    size_bytes: int
    start_time_s: float = 0.0
    time_base: Fraction = Fraction(1, 90000)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["fps"] = str(self.fps)
        d["time_base"] = str(self.time_base)
        return d
