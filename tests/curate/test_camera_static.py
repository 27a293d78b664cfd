"""Camera motion classes and static v2 (frozen pairs from local change) on generated shots with known motion."""

from __future__ import annotations

import json

import numpy as np
import pytest

from soraprep.curate.analyze import AnalyzeStage, ProbeStage
from soraprep.curate.recipe import RecipeError, validate
from soraprep.curate.score import camera
from soraprep.curate.score.base import build_scorers
from soraprep.curate.score.stage import ScoreStage
from soraprep.curate.split import SplitStage
from soraprep.video.synth import Shot, make_video

SCORERS = {"motion": {}, "static": {}}


def _clip(tmp_path, shot: Shot, width: int = 320, height: int = 240) -> dict:
    p = tmp_path / f"{shot.kind}{shot.speed}_{width}.mp4"
    make_video(p, [shot], width=width, height=height)
    rows = ProbeStage()([{"source": str(p), "video_id": "v"}])
    rows = AnalyzeStage(detector={"name": "none"}, scorers=SCORERS)(rows)
    assert not rows[0].get("error"), rows[0]["error"]
    clips = ScoreStage(scorers=SCORERS)(SplitStage()(rows))
    assert len(clips) == 1
    return clips[0]


@pytest.mark.parametrize("kind,speed,label", [
    ("pan", 3, "pan_right"), ("pan", -3, "pan_left"), ("tilt", 3, "tilt_down"), ("tilt", -3, "tilt_up"),
    ("zoom", 2, "zoom_in"), ("zoom", -2, "zoom_out"), ("roll", 2, "roll"), ("roll", -2, "roll"),
    ("shaky", 4, "shaky"), ("frozen", 0, "static"), ("moving", 3, "pan_right"),
])
def test_camera_class_of_generated_shots(tmp_path, kind, speed, label):
    c = _clip(tmp_path, Shot(32, kind, speed=speed, seed=3))
    assert c["camera_motion"] == label, c
    assert c["camera_motion"] in camera.CAMERA_CLASSES
    if kind == "shaky":
        assert c["camera_shake"] > 1.0
    else:
        assert c["camera_shake"] < 0.5       # steady motions: no jitter
    prov = json.loads(c["provenance"])
    assert prov["camera_motion"]["by"] == "soraprep.motion@2" and prov["static_ratio"]["by"] == "soraprep.static@2"


def test_small_subject_on_still_720p_is_not_frozen(tmp_path):
    """Issue 14, item 7: a bright square (4 % of the frame) moving 9 px/frame over a still 720p background."""
    c = _clip(tmp_path, Shot(30, "subject", speed=9, seed=5), 1280, 720)
    assert c["static_ratio"] < 0.1                   # was 1.0 with the whole-frame mean difference (v1)
    assert c["motion_score"] > 0.05
    assert c["camera_motion"] == "static"            # the camera does not move: the subject does


@pytest.mark.parametrize("kind,speed", [("frozen", 0), ("noisy", 4)])
def test_frozen_and_noisy_still_720p_are_static(tmp_path, kind, speed):
    c = _clip(tmp_path, Shot(24, kind, speed=speed, seed=5), 1280, 720)
    assert c["static_ratio"] > 0.9 and c["camera_motion"] == "static"


def test_pan_is_not_static(tmp_path):
    c = _clip(tmp_path, Shot(24, "pan", speed=1, seed=2))
    assert c["static_ratio"] == 0.0


def test_global_flow_recovers_a_known_similarity_motion():
    h, w = 72, 128
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x, y = x - (w - 1) / 2, y - (h - 1) / 2
    a, b, tx, ty = 0.02, -0.01, 1.5, -0.5          # zoom, roll (rad/frame), translation (px/frame)
    flow = np.stack([tx + a * x - b * y, ty + b * x + a * y], axis=-1)
    flow[10:20, 10:20] = 9.0                        # a small subject moving on its own: ignored
    dx, dy, zoom, roll, resid = camera.global_flow(flow, scale=2.0)
    assert dx == pytest.approx(2 * tx, abs=0.05) and dy == pytest.approx(2 * ty, abs=0.05)
    assert zoom == pytest.approx(2 * a * h / 2, rel=0.05) and roll == pytest.approx(2 * b * h / 2, rel=0.05)
    assert 0 < resid < 0.5


def _stats(dx=0.0, dy=0.0, zoom=0.0, roll=0.0, resid=0.0, n=8, jitter=0.0):
    alt = jitter * (-1.0) ** np.arange(n)
    vals = {"cam_dx": dx + alt, "cam_dy": dy + alt, "cam_zoom": zoom, "cam_roll": roll, "cam_resid": resid}
    return {k: np.broadcast_to(np.asarray(v, np.float32), (n,)).copy() for k, v in vals.items()}


def test_classify_rules():
    kw = dict(move_px=0.3, shake_px=1.0, mixed_ratio=0.5)
    assert camera.classify(_stats(dx=0.1), **kw)[0] == "static"
    assert camera.classify(_stats(dx=-2.0), **kw)[0] == "pan_right"     # content moves left
    assert camera.classify(_stats(dy=2.0), **kw)[0] == "tilt_up"
    assert camera.classify(_stats(zoom=-1.0), **kw)[0] == "zoom_out"
    assert camera.classify(_stats(dx=2.0, zoom=1.5), **kw)[0] == "mixed"        # two motions of similar size
    assert camera.classify(_stats(dx=2.0, resid=3.0), **kw)[0] == "mixed"       # flow the camera does not explain
    label, shake = camera.classify(_stats(dx=2.0, jitter=1.0), **kw)
    assert label == "shaky" and shake == pytest.approx(2.0, rel=1e-3)   # alternating ±1: steps of 2
    nothing = {k: np.full(4, np.nan, np.float32) for k in camera.FLOW_STATS}
    assert camera.classify(nothing, **kw) == (None, None)
    one = _stats(dx=2.0, n=1)
    assert camera.classify(one, **kw) == ("pan_left", None)                       # no jitter from one sample


def test_static_diff_is_refused_with_the_new_keys():
    with pytest.raises(ValueError, match="block_diff.*moving_share"):
        build_scorers({"static": {"static_diff": 0.5}})
    with pytest.raises(RecipeError, match="static_diff.*block_diff"):
        validate({"analyze": {"scorers": {"static": {"static_diff": 0.5}}}})
    with pytest.raises(ValueError, match="moving_share"):
        build_scorers({"static": {"moving_share": 0}})
    with pytest.raises(ValueError, match="camera_shake_px"):
        build_scorers({"motion": {"camera_shake_px": 0}})


def test_filter_refuses_bounds_on_the_class_column():
    with pytest.raises(RecipeError, match="class names"):
        validate({"filter": {"camera_motion": {"max": 1}}})
    validate({"filter": {"camera_shake": {"max": 2.0}}})     # the numeric column can be bounded


def test_columns_reach_the_manifest(tmp_path):
    from soraprep.curate.pipeline import curate
    from soraprep.manifest import read_manifest

    src = tmp_path / "in"
    make_video(src / "two.mp4", [Shot(40, "pan", speed=-3, seed=1), Shot(40, "frozen", seed=2)])
    curate([str(src)], tmp_path / "out", workers=1)
    rows = sorted(read_manifest(tmp_path / "out" / "manifest.parquet"), key=lambda r: r["start_frame"])
    assert [r["camera_motion"] for r in rows] == ["pan_left", "static"]
    assert rows[0]["camera_shake"] < 0.5 and rows[1]["static_ratio"] == 1.0
    assert rows[1]["keep"] is False and "static_ratio" in rows[1]["filter_reason"]   # frozen: dropped


@pytest.mark.parametrize("kind,speed", [("pan", 0.15), ("moving", 0.5)])
def test_slow_motion_is_not_frozen(tmp_path, kind, speed):
    """A pan of 0.15 px/frame changes no 16x16 block by 3 levels between neighbours, and content that moves
    1 px every other frame has identical neighbours half the time; against the frame 0.5 s earlier both move."""
    c = _clip(tmp_path, Shot(50, kind, speed=speed, seed=4))
    assert c["static_ratio"] < 0.2, c
    # the same clip scored between neighbours (a 1-frame window) calls most of it frozen: the window matters
    rows = ProbeStage()([{"source": str(tmp_path / f"{kind}{speed}_320.mp4"), "video_id": "v"}])
    narrow = {"motion": {}, "static": {"window_s": 0.01}}
    rows = AnalyzeStage(detector={"name": "none"}, scorers=narrow)(rows)
    assert ScoreStage(scorers=narrow)(SplitStage()(rows))[0]["static_ratio"] > 0.4
