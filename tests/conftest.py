"""Shared fixtures: generated videos with known ground truth and the real legacy samples in tests/data."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import pytest

from soraprep.video.synth import Shot, make_video

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    """A small library of generated videos; each entry's ground truth is in ``media_truth``."""
    root = tmp_path_factory.mktemp("media")
    out = {}
    for name, (shots, kw) in MEDIA.items():
        out[name] = root / name
        make_video(out[name], shots, **kw)
    for real in ("tree.avi", "cityCC0.mpg"):
        out[real] = root / real
        shutil.copy(DATA / "videos" / real, out[real])
    return out


# name -> (shots, make_video kwargs). Cut frames are the running sums of the shot lengths.
MEDIA = {
    "cuts.mp4": ([Shot(40, speed=3), Shot(35, speed=-2), Shot(45, speed=4), Shot(30, speed=2)],
                 dict(width=320, height=240)),
    "ntsc.mp4": ([Shot(48, speed=3), Shot(52, speed=2)], dict(fps=Fraction(30000, 1001), width=352, height=240)),
    "odd_size.mp4": ([Shot(30, speed=3), Shot(30, speed=2)], dict(fps=Fraction(12), width=202, height=154)),
    "kinds.mp4": ([Shot(50, speed=3), Shot(40, "static"), Shot(30, "black"), Shot(40, "blur", speed=2),
                   Shot(40, "text", speed=2)], dict(width=320, height=240)),
    "bframes.mp4": ([Shot(60, speed=3), Shot(60, speed=2)], dict(width=320, height=240, gop=12, bframes=3)),
    "long_shot.mp4": ([Shot(260, speed=1.5)], dict(fps=Fraction(25), width=256, height=144, gop=25)),
    "audio.mp4": ([Shot(50, speed=3)], dict(width=320, height=240, audio=True)),
}


def cut_frames(name: str) -> list[int]:
    shots = MEDIA[name][0]
    out, n = [], 0
    for s in shots[:-1]:
        n += s.frames
        out.append(n)
    return out
