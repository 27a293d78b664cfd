"""Every cut mode on every kind of source: the file holds exactly the frames the result claims."""

import numpy as np
import pytest

from soraprep.video.cut import cut_clip
from soraprep.video.io import VideoError, decode, read_frames

SOURCES = ["cuts.mp4", "bframes.mp4", "tree.avi", "cityCC0.mpg", "ntsc.mp4"]
SPANS = [(5, 50), (0, 40), (30, 10**6)]


def _gray(path, a=0, b=None):
    return [f.array for f in decode(path, start_frame=a, end_frame=b, size=(64, 48), fmt="gray")]


@pytest.mark.parametrize("mode", ["copy", "keyframe", "exact"])
@pytest.mark.parametrize("src", SOURCES)
def test_cut_frame_counts_and_content(media, tmp_path, src, mode):
    for a, b in SPANS:
        try:
            r = cut_clip(media[src], tmp_path / f"{a}.mp4", start_frame=a, end_frame=b, mode=mode)
        except VideoError as exc:
            assert exc.kind == "empty_after_snap" and mode != "exact"
            continue
        # snapping is inwards: the file never holds a frame outside the requested span
        assert a <= r.start_frame < r.end_frame <= b
        got = _gray(r.path)
        assert len(got) == r.num_frames == r.end_frame - r.start_frame
        ref = read_frames(media[src], list(range(r.start_frame, r.end_frame)), size=(64, 48), fmt="gray")
        diffs = [np.abs(x.astype(int) - y.astype(int)).mean() for x, y in zip(got, ref)]
        if mode == "exact":
            assert r.start_frame == a and max(diffs) < 8  # re-encoded: close, not identical
        else:
            assert max(diffs) == 0  # stream copy: bit-identical pictures


def test_exact_is_frame_exact_with_bframes(media, tmp_path):
    r = cut_clip(media["bframes.mp4"], tmp_path / "x.mp4", start_frame=7, end_frame=53, mode="exact")
    assert (r.start_frame, r.end_frame, r.num_frames) == (7, 53, 46)
    assert len(_gray(r.path)) == 46


def test_copy_snaps_start_to_next_keyframe(media, tmp_path):
    r = cut_clip(media["bframes.mp4"], tmp_path / "c.mp4", start_frame=5, end_frame=60, mode="copy")
    assert r.start_frame == 12  # keyframes every 12 frames
    k = cut_clip(media["bframes.mp4"], tmp_path / "k.mp4", start_frame=5, end_frame=60, mode="keyframe")
    assert (k.start_frame, k.end_frame) == (12, 60)


def test_adjacent_clips_share_no_frame(media, tmp_path):
    a = cut_clip(media["bframes.mp4"], tmp_path / "a.mp4", start_frame=0, end_frame=60, mode="copy")
    b = cut_clip(media["bframes.mp4"], tmp_path / "b.mp4", start_frame=60, end_frame=120, mode="copy")
    assert a.end_frame <= b.start_frame
    assert len(_gray(a.path)) + len(_gray(b.path)) == a.num_frames + b.num_frames


def test_unsupported_mp4_codec_goes_to_another_container(media, tmp_path):
    r = cut_clip(media["tree.avi"], tmp_path / "t.mp4", start_frame=0, end_frame=40, mode="copy")
    assert not r.path.endswith(".mp4")
    assert len(_gray(r.path)) == r.num_frames


def test_no_partial_files_left(media, tmp_path):
    cut_clip(media["cuts.mp4"], tmp_path / "c.mp4", start_frame=0, end_frame=40, mode="exact")
    assert [p.name for p in tmp_path.iterdir()] == ["c.mp4"]


def test_mode_none_writes_nothing(media, tmp_path):
    r = cut_clip(media["cuts.mp4"], tmp_path / "n.mp4", start_frame=3, end_frame=9, mode="none")
    assert r.path == str(media["cuts.mp4"]) and r.num_frames == 6 and not list(tmp_path.iterdir())
