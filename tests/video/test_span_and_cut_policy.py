"""video.span (seconds <-> frames) and video.cut.CutPolicy (copy -> exact fallback, resume markers)."""

from __future__ import annotations

from fractions import Fraction

import av
import pytest

from soraprep.video.cut import CutPolicy
from soraprep.video.io import probe_with_index
from soraprep.video.span import nominal_fps, span_frames, span_seconds
from soraprep.video.synth import Shot, make_video


@pytest.fixture(scope="module")
def cfr(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfr") / "cfr.mp4"
    make_video(path, [Shot(100, seed=1, speed=2)], fps=Fraction(25), width=128, height=96, gop=50)
    return path


def _count(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_timestamps_and_nominal_fps_agree_on_constant_rate(cfr):
    info, index = probe_with_index(cfr)
    assert nominal_fps(index) == 25 == info.fps
    for start_s, end_s in [(0.0, 1.0), (0.4, 1.6), (0.41, 1.61), (1.999999, 3.0), (3.5, None), (None, 0.5)]:
        by_time = span_frames(start_s, end_s, index=index)
        by_fps = span_frames(start_s, end_s, fps=info.fps, num_frames=info.num_frames)
        assert by_time == by_fps, (start_s, end_s)
    assert span_frames(0.4, 1.6, index=index) == (10, 40)
    assert span_frames(3.0, 9.0, index=index) == (75, 100)        # clamped to the video
    assert span_seconds(10, 40, index=index) == pytest.approx((0.4, 1.6))
    assert span_seconds(0, 100, fps=Fraction(25)) == (0.0, 4.0)
    with pytest.raises(ValueError, match="timestamps"):
        span_frames(0.0, 1.0)


def test_copy_falls_back_to_exact_when_snapping_loses_too_much(cfr, tmp_path):
    _, index = probe_with_index(cfr)
    # keyframes every 50 frames (2 s): frames 5..45 hold no keyframe -> a copy is impossible -> exact
    res = CutPolicy(mode="copy").cut(cfr, tmp_path / "a.mp4", start_frame=5, end_frame=45, index=index)
    assert (res.mode, res.start_frame, res.end_frame) == ("exact", 5, 45) and _count(res.path) == 40
    # frames 40..95: the copy starts at keyframe 50, losing 0.4 s < max_snap_s -> stays a copy
    res = CutPolicy(mode="copy").cut(cfr, tmp_path / "b.mp4", start_frame=40, end_frame=95, index=index)
    assert res.mode == "copy" and res.start_frame == 50 and _count(res.path) == res.num_frames
    assert res.start_s == pytest.approx(2.0)
    # a stricter snap limit re-encodes it exactly
    res = CutPolicy(mode="copy", max_snap_s=0.2).cut(cfr, tmp_path / "c.mp4", start_frame=40, end_frame=95, index=index)
    assert (res.mode, res.start_frame, res.end_frame) == ("exact", 40, 95)
    # without the fallback the copy error is the caller's
    with pytest.raises(Exception, match="keyframe"):
        CutPolicy(mode="copy", fallback_exact=False).cut(cfr, tmp_path / "d.mp4", start_frame=5, end_frame=45,
                                                         index=index)


def test_resume_marker_skips_a_finished_clip(cfr, tmp_path):
    policy, marker = CutPolicy(mode="exact", preset="ultrafast"), tmp_path / ".done" / "a.json"
    first = policy.cut(cfr, tmp_path / "a.mp4", start_frame=10, end_frame=30, marker=marker)
    assert not first.resumed and marker.is_file()
    mtime = (tmp_path / "a.mp4").stat().st_mtime_ns
    again = policy.cut(cfr, tmp_path / "a.mp4", start_frame=10, end_frame=30, marker=marker)
    assert again.resumed and (again.start_frame, again.end_frame, again.path) == (10, 30, first.path)
    assert (tmp_path / "a.mp4").stat().st_mtime_ns == mtime
    other = policy.cut(cfr, tmp_path / "a.mp4", start_frame=10, end_frame=31, marker=marker)   # another request
    assert not other.resumed and other.num_frames == 21
    (tmp_path / "a.mp4").unlink()                                                                # file gone
    assert not policy.cut(cfr, tmp_path / "a.mp4", start_frame=10, end_frame=31, marker=marker).resumed


def test_policy_config_fails_loud():
    with pytest.raises(ValueError, match="cut.mode"):
        CutPolicy(mode="fast")
    with pytest.raises(ValueError, match="x264 preset"):
        CutPolicy(fallback_preset="quick")
