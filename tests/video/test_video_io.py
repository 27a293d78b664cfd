from fractions import Fraction

import numpy as np
import pytest

from soraprep.video.io import VideoError, decode, probe, read_frames, scan_packets


def test_probe_generated_h264(media):
    info = probe(media["cuts.mp4"])
    assert info.fps == Fraction(25) and isinstance(info.fps, Fraction)
    assert info.num_frames == 150 and info.frames_exact
    assert (info.width, info.height) == (320, 240)
    assert info.codec == "h264" and info.pix_fmt == "yuv420p"
    assert not info.has_audio and not info.vfr
    assert info.duration_s == pytest.approx(6.0, abs=0.05)


def test_probe_ntsc_rate_is_exact_fraction(media):
    info = probe(media["ntsc.mp4"])
    assert info.fps == Fraction(30000, 1001)
    assert info.num_frames == 100


def test_probe_audio_and_odd_size(media):
    assert probe(media["audio.mp4"]).has_audio
    info = probe(media["odd_size.mp4"])
    assert (info.width, info.height, info.fps) == (202, 154, Fraction(12))


def test_probe_rotation_swaps_display_size(tmp_path):
    import av

    path = tmp_path / "rot.mp4"
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=25)
    s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    s.set_display_rotation(90)
    for i in range(3):
        f = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
        f.pts = i
        for p in s.encode(f):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    info = probe(path)
    assert info.rotation in (90, 270)
    assert (info.width, info.height) == (48, 64) and (info.coded_width, info.coded_height) == (64, 48)


def test_probe_real_avi_header_lies(media):
    # the AVI header claims 444 frames; the stream holds 68 real frames at irregular times
    info = probe(media["tree.avi"])
    assert info.num_frames == 68 and info.frames_exact
    assert info.vfr
    assert info.codec == "cinepak"
    assert sum(1 for _ in decode(media["tree.avi"], size=32, fmt="gray")) == 68


def test_probe_mpeg_ps_without_frame_count(media):
    info = probe(media["cityCC0.mpg"])
    assert info.codec == "mpeg2video" and info.num_frames == 190 and info.fps == 25
    assert (info.width, info.height) == (720, 405)


def test_probe_without_counting_is_marked_inexact(media):
    info = probe(media["cuts.mp4"], count_frames=False)
    assert not info.frames_exact and info.num_frames == 150


def test_decode_size_stride_and_span(media):
    frames = list(decode(media["cuts.mp4"], start_frame=10, end_frame=30, stride=5, size=60, fmt="gray"))
    assert [f.index for f in frames] == [10, 15, 20, 25]
    assert frames[0].array.shape == (60, 80)
    assert frames[1].time == pytest.approx(15 / 25)


def test_read_frames_order_and_repeats(media):
    a, b, c = read_frames(media["cuts.mp4"], [100, 3, 100], size=(64, 48))
    assert a.shape == (48, 64, 3) and np.array_equal(a, c) and not np.array_equal(a, b)


def test_seek_fallback_on_imprecise_container(media):
    # MPEG-PS seeks land after the wanted keyframe: decode must still start at the right frame
    first = next(decode(media["cityCC0.mpg"], start_frame=5, end_frame=6, size=32, fmt="gray"))
    ref = list(decode(media["cityCC0.mpg"], end_frame=6, size=32, fmt="gray"))[5]
    assert first.index == 5 and np.array_equal(first.array, ref.array)


def test_packet_index_keyframes(media):
    idx = scan_packets(media["bframes.mp4"])
    assert len(idx) == 120 and idx.reorders
    assert list(np.flatnonzero(idx.keyframe)) == list(range(0, 120, 12))


@pytest.mark.parametrize("content,kind", [(b"", "empty_file"), (b"hello world" * 100, "not_a_video")])
def test_probe_errors(tmp_path, content, kind):
    p = tmp_path / "bad.mp4"
    p.write_bytes(content)
    with pytest.raises(VideoError) as e:
        probe(p)
    assert e.value.kind == kind


def test_probe_missing(tmp_path):
    with pytest.raises(VideoError) as e:
        probe(tmp_path / "nope.mp4")
    assert e.value.kind == "not_found"
