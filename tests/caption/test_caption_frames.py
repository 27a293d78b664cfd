"""Frame selection (uniform / per scene / by fps), spans of full sources vs cut clips, decode size."""

from __future__ import annotations

import pytest

from soraprep.caption.frames import (
    clip_span,
    detect_cuts,
    fps_indices,
    load_frames,
    scene_indices,
    select_frames,
    uniform_indices,
)


def test_uniform_indices():
    assert uniform_indices(0, 100, 4) == [12, 37, 62, 87]
    assert uniform_indices(20, 40, 4) == [22, 27, 32, 37]
    assert uniform_indices(5, 8, 10) == [5, 6, 7]                 # fewer frames than asked: all of them
    assert uniform_indices(5, 5, 3) == []


def test_fps_indices():
    assert fps_indices(0, 100, fps=25, sample_fps=1, n=10) == [12, 37, 62, 87]
    assert fps_indices(0, 250, fps=25, sample_fps=2, n=4) == [31, 93, 156, 218]      # 20 samples thinned to 4
    with pytest.raises(ValueError):
        fps_indices(0, 10, fps=25, sample_fps=0, n=3)


def test_scene_indices():
    assert scene_indices(0, 90, [30, 60], 8) == [14, 44, 74]
    assert scene_indices(10, 90, [5, 30, 95], 8) == [19, 59]     # cuts outside the span are ignored
    assert scene_indices(0, 100, [10, 20, 70], 2) == [44, 84]    # the two longest segments, in time order


def test_scene_detection_finds_the_known_cuts(tmp_path):
    from soraprep.video.synth import Shot, make_video

    p = tmp_path / "v.mp4"
    cuts = make_video(p, [Shot(12, seed=1), Shot(15, kind="static", seed=2), Shot(10, seed=3)], width=96, height=64)
    assert detect_cuts(str(p), 0, 37) == cuts == [12, 27]
    assert select_frames(0, 37, n=8, method="scenes", path=str(p)) == [5, 19, 31]
    assert select_frames(0, 37, n=8, method="scenes", cuts=[12]) == [5, 24]          # a row's scene_cuts win
    frames = load_frames(p, [31, 5], size=32)
    assert [f.shape for f in frames] == [(32, 48, 3), (32, 48, 3)]                    # short side 32, RGB
    with pytest.raises(ValueError, match="unknown frame method"):
        select_frames(0, 10, n=2, method="random")


def test_clip_span():
    full = {"path": "/v/src.mp4", "source": "/v/src.mp4", "cut_mode": "none", "start_frame": 50, "end_frame": 80,
            "num_frames": 30}
    assert clip_span(full, "/v/src.mp4") == (50, 80)
    assert clip_span({**full, "cut_mode": None}, "/v/src.mp4") == (50, 80)           # path == source
    cut = {**full, "path": "clips/c.mp4", "cut_mode": "exact"}
    assert clip_span(cut, "/abs/clips/c.mp4") == (0, 30)                              # a cut clip file
    assert clip_span({**full, "end_frame": None}, "/v/src.mp4") == (50, 80)
