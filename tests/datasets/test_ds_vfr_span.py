"""One span semantics: on a variable-frame-rate source, ``download`` and ``curate`` cut the same frames for
the same seconds (both convert with soraprep.video.span from the demuxed timestamps, and both cut with
video.cut.CutPolicy). Ground truth: every frame of the generated source shows its index in binary, so a
decoded frame names its source frame; the expected frames come from the timestamps the test wrote."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from soraprep.manifest import read_manifest, write_manifest
from soraprep.video.io import probe_with_index
from soraprep.video.span import span_frames, span_seconds

# frame durations in ms: 30 frames at 25 fps, 30 at 50 fps, 20 at 15 fps -> irregular timestamps
DURATIONS_MS = [40] * 30 + [20] * 30 + [66] * 20
PTS_MS = np.concatenate([[0], np.cumsum(DURATIONS_MS)[:-1]])
BITS = 7   # frame i shows its index in binary: 7 vertical stripes of 8 px, white = 1 (survives lossy coding)


def frame_image(i: int) -> np.ndarray:
    img = np.full((48, 64, 3), 40, np.uint8)
    for bit in range(BITS):
        if i >> bit & 1:
            img[:, 8 * bit: 8 * bit + 8] = 215
    return img


def frame_number(gray: np.ndarray) -> int:
    return sum(1 << bit for bit in range(BITS) if gray[8:40, 8 * bit + 2: 8 * bit + 6].mean() > 128)
SPANS = [(1.5, 2.5), (0.3, 1.9), (1.21, 2.0)]


def make_vfr(path: Path) -> None:
    container = av.open(str(path), mode="w")
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    stream.time_base = Fraction(1, 1000)
    stream.codec_context.time_base = Fraction(1, 1000)
    stream.options = {"preset": "ultrafast", "x264-params": "crf=10:keyint=10:min-keyint=10:scenecut=0:bframes=0"}
    for i, pts in enumerate(PTS_MS):
        frame = av.VideoFrame.from_ndarray(frame_image(i), format="rgb24")
        frame.pts, frame.time_base = int(pts), Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def source_frames(path: str | Path) -> list[int]:
    """The source frame each decoded frame of ``path`` shows (the number drawn into it)."""
    with av.open(str(path)) as c:
        return [frame_number(f.to_ndarray(format="gray")) for f in c.decode(video=0)]


def truth(start_s: float, end_s: float) -> tuple[int, int]:
    """Frames whose start time (as written) lies in [start_s, end_s)."""
    t = PTS_MS / 1000.0
    idx = np.flatnonzero((t >= start_s - 1e-6) & (t < end_s - 1e-6))
    return int(idx[0]), int(idx[-1]) + 1


@pytest.fixture(scope="module")
def vfr(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
    make_vfr(path)
    return path


def test_source_is_vfr_and_nominal_fps_would_cut_other_frames(vfr):
    info, index = probe_with_index(vfr)
    assert info.vfr and info.num_frames == len(PTS_MS)
    assert source_frames(vfr) == list(range(len(PTS_MS)))   # every frame identifiable
    for start_s, end_s in SPANS:
        assert span_frames(start_s, end_s, index=index) == truth(start_s, end_s)
        # the old download conversion (time x nominal fps) picks other frames here: the test can fail
        assert span_frames(start_s, end_s, fps=info.fps, num_frames=info.num_frames) != truth(start_s, end_s)


def test_span_round_trip_on_timestamps(vfr):
    _, index = probe_with_index(vfr)
    for a, b in [(0, 10), (29, 31), (45, 80), (59, 61)]:
        assert span_frames(*span_seconds(a, b, index=index), index=index) == (a, b)


@pytest.mark.parametrize("mode", ["exact", "copy"])
def test_download_and_curate_cut_the_same_frames(vfr, tmp_path, mode):
    from soraprep.curate.pipeline import curate
    from soraprep.datasets.download import download

    rows = [{"video_id": "v", "clip_id": f"c{i}", "source": str(vfr), "start_s": a, "end_s": b}
            for i, (a, b) in enumerate(SPANS)]
    write_manifest(tmp_path / "in.parquet", rows)
    rep = download(manifest=tmp_path / "in.parquet", out=tmp_path / "dl", cut=mode)
    assert rep.num_errors == 0
    got_dl = {r["clip_id"]: r for r in read_manifest(tmp_path / "dl" / "manifest.parquet")}

    recipe = tmp_path / "r.yaml"   # one clip per input span, nothing filtered: only the span semantics count
    recipe.write_text("base: none\nanalyze: {detector: {name: none}}\nsplit: {max_clip_s: null}\n"
                      f"cut: {{mode: {mode}}}\n")
    res = curate([str(tmp_path / "in.parquet")], tmp_path / "cu", recipe=recipe, report=False)
    cu_rows = [r for r in read_manifest(res.manifest) if r.get("keep")]
    assert len(cu_rows) == len(SPANS), [r.get("error") or r.get("filter_reason") for r in read_manifest(res.manifest)]
    got_cu = {r["clip_id"].rsplit("-", 1)[0]: r for r in cu_rows}   # curate's clip ids: <input clip id>-NNNN

    for i, (a, b) in enumerate(SPANS):
        d, c = got_dl[f"c{i}"], got_cu[f"c{i}"]
        assert (d["start_frame"], d["end_frame"]) == (c["start_frame"], c["end_frame"])
        assert d["cut_mode"] == c["cut_mode"]
        assert d["start_s"] == pytest.approx(c["start_s"]) and d["end_s"] == pytest.approx(c["end_s"])
        dl_frames = source_frames(tmp_path / "dl" / d["path"])
        cu_frames = source_frames(Path(res.out) / c["path"])
        assert dl_frames == cu_frames == list(range(d["start_frame"], d["end_frame"]))
        if d["cut_mode"] == "exact":   # frame-exact: exactly the frames the seconds name
            assert (d["start_frame"], d["end_frame"]) == truth(a, b)
