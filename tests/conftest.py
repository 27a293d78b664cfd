"""Shared fixtures: generated videos with known ground truth and the real legacy samples in tests/data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from media_library import MEDIA

from soraprep.video.synth import make_video

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    """A small library of generated videos; ground truth in ``media_library.MEDIA``."""
    root = tmp_path_factory.mktemp("media")
    out = {}
    for name, (shots, kw) in MEDIA.items():
        out[name] = root / name
        make_video(out[name], shots, **kw)
    for real in ("tree.avi", "cityCC0.mpg"):
        out[real] = root / real
        shutil.copy(DATA / "videos" / real, out[real])
    return out


