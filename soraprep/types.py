"""Typed records that flow between soraprep's parts.

Frame rates are :class:`fractions.Fraction` (``30000/1001`` stays exact); spans carry seconds *and*
frame indices. Records are frozen dataclasses; the manifest stores them as flat columns (see
:mod:`soraprep.manifest`).
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


@dataclass(frozen=True)
class Span:
    """A half-open span ``[start_frame, end_frame)`` of a source video, also in seconds."""

    start_frame: int
    end_frame: int
    fps: Fraction

    def __post_init__(self) -> None:
        if self.end_frame < self.start_frame:
            raise ValueError(f"span ends before it starts: {self.start_frame}..{self.end_frame}")

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def start_s(self) -> float:
        return float(self.start_frame / self.fps)

    @property
    def end_s(self) -> float:
        return float(self.end_frame / self.fps)

    @property
    def duration_s(self) -> float:
        return float(self.num_frames / self.fps)

    @classmethod
    def from_seconds(cls, start_s: float, end_s: float, fps: Fraction) -> Span:
        """Frames whose start time lies in ``[start_s, end_s)``."""
        import math

        eps = 1e-6
        return cls(math.ceil(start_s * fps - eps), max(math.ceil(start_s * fps - eps), math.ceil(end_s * fps - eps)), fps)


@dataclass(frozen=True)
class Clip:
    """One clip of one source video: the unit every manifest row describes."""

    clip_id: str
    video_id: str
    source: str
    span: Span
    index: int = 0              # position of the clip within its source, in time order
