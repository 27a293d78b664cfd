"""Issue 10, items 4-6: rotated phone video, limited-range colour in the analysis, tiny frames.

Ground truth comes from FFmpeg and PySceneDetect, not from soraprep:
- rotated files are written with FFmpeg's ``av_display_rotation_set`` (PyAV ``set_display_rotation``) and
  "shown" the way FFmpeg reads the matrix back (PyAV ``frame.rotation``, counter-clockwise degrees);
- content scores and cut frames are PySceneDetect's own, from its PyAV backend decoding the same file.
Every item runs through the CLI (`soraprep probe` / `soraprep curate`).
"""

from __future__ import annotations

import json
import struct

import av
import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from soraprep.cli import app
from soraprep.manifest import read_manifest, resolve_path

RED, BLUE, GRAY = (230, 20, 20), (20, 20, 230), (110, 110, 110)
DISPLAY_W, DISPLAY_H = 240, 320           # the portrait picture a phone user sees


def _upright_picture(t: int) -> np.ndarray:
    """What the viewer must see: portrait, red block top-left, blue block top-right, a moving bar below."""
    img = np.full((DISPLAY_H, DISPLAY_W, 3), GRAY, np.uint8)
    img[:80, :80] = RED
    img[:80, -80:] = BLUE
    img[200:220, (t * 7) % (DISPLAY_W - 20):][:, :20] = 250
    return img


def _write(path, frames, *, codec="libx264", pix_fmt="yuv420p", ccw_rotation=0, gop=None):
    frames = list(frames)
    c = av.open(str(path), "w")
    s = c.add_stream(codec, rate=25)
    s.height, s.width = frames[0].shape[:2]
    s.pix_fmt = pix_fmt
    if codec == "libx264":
        s.options = {"preset": "ultrafast", "crf": "10",
                     "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0" if gop else "scenecut=0"}
    if ccw_rotation:
        s.set_display_rotation(ccw_rotation)  # FFmpeg's av_display_rotation_set: counter-clockwise degrees
    for i, rgb in enumerate(frames):
        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        f.pts = i
        for p in s.encode(f):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()


def _set_tkhd_matrix(path, a: int, b: int, c: int, d: int) -> None:
    """Overwrite the video track's tkhd matrix in place, as a phone's own muxer writes it (16.16 fixed point)."""
    data = bytearray(path.read_bytes())
    i = data.find(b"tkhd")
    version = data[i + 4]
    off = i + 4 + (24 if version == 0 else 36) + 16  # version/flags, times, track id, duration; reserved..volume
    data[off:off + 36] = struct.pack(">9i", a << 16, b << 16, 0, c << 16, d << 16, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))


def _shown(path) -> np.ndarray:
    """The first frame as a player shows it: decoded, then turned by FFmpeg's reading of the display matrix."""
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        ccw = int(round((frame.rotation or 0) / 90)) % 4
        return np.rot90(frame.to_ndarray(format="rgb24"), k=ccw)


def _assert_upright(img: np.ndarray, what: str) -> None:
    h, w = img.shape[:2]
    assert (w, h) == (DISPLAY_W, DISPLAY_H), f"{what}: shown {w}x{h}, expected portrait {DISPLAY_W}x{DISPLAY_H}"
    tl, tr = img[20:60, 20:60].reshape(-1, 3).mean(0), img[20:60, -60:-20].reshape(-1, 3).mean(0)
    bl = img[-60:-20, 20:60].reshape(-1, 3).mean(0)
    assert np.abs(tl - RED).max() < 25 and np.abs(tr - BLUE).max() < 25 and np.abs(bl - GRAY).max() < 25, \
        f"{what}: corners TL {tl.round()} TR {tr.round()} BL {bl.round()} (want red, blue, gray)"


def _recipe(tmp_path, name: str, text: str) -> str:
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return str(p)


def _curate(args: list[str]) -> None:
    res = CliRunner().invoke(app, ["curate", *args, "-q", "--no-report"])
    assert res.exit_code == 0, res.output


# --- item 4: rotated phone video ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def rotated(tmp_path_factory) -> dict[str, tuple[int, object]]:
    """One portrait video stored six ways: upright pixels, landscape pixels + display matrix (H.264 MP4 at
    each quarter turn, and an iPhone's matrix patched into the tkhd), and a ProRes MOV as iPhones record it
    (its stream copies go to Matroska)."""
    d = tmp_path_factory.mktemp("rot")
    upright = [_upright_picture(t) for t in range(20)]
    files = {}  # file name -> (clockwise rotation, path)
    for name, cw, codec, pix_fmt in [("rot0.mp4", 0, "libx264", "yuv420p"), ("rot90.mp4", 90, "libx264", "yuv420p"),
                                     ("rot180.mp4", 180, "libx264", "yuv420p"),
                                     ("rot270.mp4", 270, "libx264", "yuv420p"),
                                     ("prores_rot90.mov", 90, "prores_ks", "yuv422p10le")]:
        # coded = the upright picture turned counter-clockwise by cw; the matrix turns it back clockwise
        coded = [np.rot90(img, k=cw // 90) for img in upright]
        path = d / name
        _write(path, coded, codec=codec, pix_fmt=pix_fmt, ccw_rotation=(-cw) % 360, gop=10)
        assert _shown(path).shape[:2] == (DISPLAY_H, DISPLAY_W)  # FFmpeg shows it portrait
        files[name] = (cw, path)
    # an iPhone's portrait matrix [0 1; -1 0] patched into a plain file: FFmpeg turns it 90 degrees clockwise
    path = d / "iphone_tkhd.mp4"
    _write(path, [np.rot90(img, k=1) for img in upright], gop=10)
    _set_tkhd_matrix(path, 0, 1, -1, 0)
    assert _shown(path).shape[:2] == (DISPLAY_H, DISPLAY_W)
    files[path.name] = (90, path)
    return files


def _paths(rotated) -> list[str]:
    return [str(p) for _, p in rotated.values()]


def test_probe_reports_display_size_and_rotation(rotated):
    res = CliRunner().invoke(app, ["probe", "--json", *_paths(rotated)])
    assert res.exit_code == 0, res.output
    infos = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
    assert len(infos) == len(rotated)
    for (cw, _), info in zip(rotated.values(), infos):
        assert (info["width"], info["height"], info["rotation"]) == (DISPLAY_W, DISPLAY_H, cw), info
        coded = (DISPLAY_W, DISPLAY_H) if cw in (0, 180) else (DISPLAY_H, DISPLAY_W)
        assert (info["coded_width"], info["coded_height"]) == coded


ROT_RECIPE = """version: 1
base: none
analyze: {short_side: 64, detector: {name: none}, scorers: {}, thumb_every_s: 0.2}
split: {max_clip_s: 20.0}
filter: {}
cut: {mode: copy, fallback_exact: false}
bucket: {}
"""


@pytest.mark.parametrize("mode", ["copy", "keyframe", "exact"])
def test_manifest_and_every_clip_follow_display_orientation(rotated, tmp_path, mode):
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["curate", *_paths(rotated), "-o", str(out), "--cut", mode,
                                   "-r", _recipe(tmp_path, "rot", ROT_RECIPE), "-q"])
    assert res.exit_code == 0, res.output
    rows = read_manifest(out / "manifest.parquet")
    assert len(rows) == len(rotated) and all(r["keep"] and not r["error"] for r in rows)
    for r in rows:
        what = f"{mode} clip of {r['source']}"
        assert (r["width"], r["height"]) == (DISPLAY_W, DISPLAY_H), what
        assert r["aspect_ratio"] == pytest.approx(DISPLAY_H / DISPLAY_W), what
        assert r["bucket"] == "144p_17f_1.33" and r["bucket_height"] > r["bucket_width"], (what, r["bucket"])
        assert r["cut_mode"] == mode and r["num_frames"] == 20, what
        clip = resolve_path(out / "manifest.parquet", r["path"])
        _assert_upright(_shown(clip), what)
        if mode != "exact" and "prores" in clip:
            assert clip.endswith(".mkv")  # ProRes does not go into MP4: Matroska keeps the display matrix
        # soraprep's own view of the written clip agrees with what it wrote in the manifest
        info = json.loads(CliRunner().invoke(app, ["probe", "--json", clip]).output.splitlines()[0])
        assert (info["width"], info["height"]) == (DISPLAY_W, DISPLAY_H), what
        cw = rotated[r["source"].rsplit("/", 1)[-1]][0]
        assert info["rotation"] == (0 if mode == "exact" else cw), what  # exact clips are turned upright
        # the report thumbnail is upright too
        thumb = cv2.imread(str(out / "thumbs" / f"{r['clip_id']}.jpg"))
        assert thumb is not None and thumb.shape[0] > thumb.shape[1], what


def test_soraprep_readers_deliver_upright_frames(rotated):
    from soraprep.caption.frames import load_frames
    from soraprep.train.latents import load_clip
    from soraprep.video.io import read_frames

    for cw, path in rotated.values():
        _assert_upright(read_frames(path, [0], upright=True)[0], f"read_frames rot{cw}")
        if cw:  # without asking, the coded picture (what decoders that ignore the matrix see)
            assert read_frames(path, [0])[0].shape[:2] == ((DISPLAY_H, DISPLAY_W) if cw == 180 else
                                                          (DISPLAY_W, DISPLAY_H))
        small = read_frames(path, [0], size=(60, 80), upright=True)[0]   # (width, height) as displayed
        assert small.shape[:2] == (80, 60)
        cap = load_frames(path, [0], size=120)[0]                         # caption frames
        assert cap.shape[:2] == (160, 120) and cap[10:30, 10:30].mean(axis=(0, 1))[0] > 180
        clip = load_clip({"source": str(path), "width": DISPLAY_W, "height": DISPLAY_H, "num_frames": 20},
                         str(path.parent / "m.parquet"), (4, 64, 48))    # latent encoding input (F, H, W)
        assert clip.shape == (4, 64, 48, 3)
        assert clip[0, 2:10, 2:10].mean(axis=(0, 1))[0] > 180 and clip[0, 2:10, -10:-2].mean(axis=(0, 1))[2] > 180


# --- item 5: limited-range colour in the analysis ----------------------------------------------------

def _gray_shots(levels, n=12, size=(160, 120)):
    w, h = size
    rng = np.random.default_rng(0)
    for level in levels:
        for _ in range(n):
            noise = rng.integers(-2, 3, (h, w, 1))
            yield np.clip(level + noise, 0, 255).astype(np.uint8).repeat(3, axis=2)


def _psd_cuts(path, threshold: float, min_scene_len: int) -> list[int]:
    from scenedetect import ContentDetector, detect

    scenes = detect(str(path), ContentDetector(threshold=threshold, min_scene_len=min_scene_len), backend="pyav")
    return [int(s[0].frame_num) for s in scenes[1:]]


@pytest.mark.parametrize("codec,pix_fmt,ext", [("libx264", "yuv420p", "mp4"), ("mjpeg", "yuvj420p", "avi")])
def test_content_detector_threshold_means_what_pyscenedetect_means(tmp_path, codec, pix_fmt, ext):
    # luma steps of 90 (content score 30: a cut at threshold 27) and 72 (score 24: no cut). With the TV range
    # squeezed (219/255) the 90 steps scored ~25.8 and both cuts were missed.
    path = tmp_path / f"steps.{ext}"
    _write(path, _gray_shots([40, 130, 202, 112]), codec=codec, pix_fmt=pix_fmt)
    expected = _psd_cuts(path, 27.0, 6)
    assert expected == [12, 36], expected  # PySceneDetect on its own decode: scores 30, 24, 30
    out = tmp_path / "out"
    recipe = _recipe(tmp_path, "content", """version: 1
base: none
analyze: {short_side: 64, detector: {name: content, threshold: 27.0, min_scene_len: 6}, scorers: {}}
split: {max_clip_s: 20.0}
filter: {}
cut: {mode: none}
bucket: {}
""")
    _curate([str(path), "-o", str(out), "-r", recipe])
    starts = sorted(r["start_frame"] for r in read_manifest(out / "manifest.parquet"))
    assert starts[1:] == expected


@pytest.mark.parametrize("codec,pix_fmt,ext,colorspace", [
    ("libx264", "yuv420p", "mp4", None), ("libx264", "yuv420p", "mp4", 1),      # TV range, BT.601 / BT.709
    ("libx264", "yuvj420p", "mp4", None), ("mjpeg", "yuvj420p", "avi", None),   # full range
])
def test_per_frame_content_scores_match_pyscenedetect(tmp_path, monkeypatch, codec, pix_fmt, ext, colorspace):
    """soraprep's cheap analysis views give PySceneDetect's own per-frame content scores (within 2.5 %)."""
    from scenedetect import open_video
    from scenedetect.detectors import ContentDetector

    from soraprep.curate import split
    from soraprep.curate.analyze import AnalyzeStage, ProbeStage

    rng = np.random.default_rng(3)
    shots = []
    for _ in range(5):  # flat colour blocks: the resize to analysis size changes nothing, colour does
        blocks = cv2.resize(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8), (320, 240),
                            interpolation=cv2.INTER_NEAREST)
        shots += [blocks] * 6
    path = tmp_path / f"blocks.{ext}"
    _write(path, shots, codec=codec, pix_fmt=pix_fmt)
    if colorspace:  # re-tag as BT.709 (and convert for it): the decoder then reports colorspace 1
        path2 = tmp_path / f"blocks709.{ext}"
        c = av.open(str(path2), "w")
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        s.codec_context.colorspace = colorspace
        s.options = {"preset": "ultrafast", "crf": "10"}
        for i, rgb in enumerate(shots):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p", dst_colorspace=colorspace)
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
        c.close()
        path = path2

    theirs, det = [], ContentDetector()
    video = open_video(str(path), backend="pyav")
    while (frame := video.read()) is not False:
        det.process_frame(video.position, frame)
        theirs.append(det._frame_score)

    ours: list[float] = []

    class Recorder(split._SceneDetectBackend):
        def process(self, index, bgr):
            cuts = super().process(index, bgr)
            ours.append(self._det._frame_score)
            return cuts

    monkeypatch.setitem(split.DETECTORS, "content",
                        lambda fps, **kw: Recorder(ContentDetector(threshold=27.0), fps))
    rows = ProbeStage()([{"source": str(path)}])
    AnalyzeStage(short_side=144, detector={"name": "content"})(rows)
    assert not rows[0].get("error")
    theirs, ours = np.array(theirs), np.array(ours)
    assert len(theirs) == len(ours) == 30
    cuts = np.flatnonzero(theirs > 10)
    assert list(cuts) == [6, 12, 18, 24]
    np.testing.assert_allclose(ours[cuts], theirs[cuts], rtol=0.025)
    assert np.abs(np.delete(ours, cuts) - np.delete(theirs, cuts)).max() < 1.0


# --- item 6: tiny frames ------------------------------------------------------------------------------

TINY_RECIPE = """version: 1
base: none
analyze: {short_side: 144}
split: {max_clip_s: 20.0}
filter: {}
cut: {mode: exact}
bucket: {}
"""


def test_tiny_videos_curate_or_say_too_small(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    cases = {  # name -> (width, height, codec, pix_fmt, usable)
        "1x1.mp4": (1, 1, "mpeg4", "yuv420p", False), "2x2.mp4": (2, 2, "libx264", "yuv420p", False),
        "8x8.mp4": (8, 8, "libx264", "yuv420p", False), "64x1.mkv": (64, 1, "ffv1", "yuv444p", False),
        "16x16.mp4": (16, 16, "libx264", "yuv420p", True), "33x17.mp4": (33, 17, "mpeg4", "yuv420p", True),
        "17x33.mp4": (17, 33, "libx264", "yuv444p", True),
    }
    for name, (w, h, codec, pix, _) in cases.items():
        frames = [cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
                  for _ in range(30)]
        _write(d / name, frames, codec=codec, pix_fmt=pix)
    res = CliRunner().invoke(app, ["probe", "--json", str(d / "1x1.mp4")])
    assert res.exit_code == 1 and json.loads(res.output)["error"]["kind"] == "too_small"
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["curate", str(d), "-o", str(out), "-r", _recipe(tmp_path, "tiny", TINY_RECIPE),
                                   "-q", "--no-report"])
    assert res.exit_code == 1, res.output  # some rows failed: the unusable ones
    rows = {r["source"].rsplit("/", 1)[-1]: r for r in read_manifest(out / "manifest.parquet")}
    assert set(rows) == set(cases)
    for name, (w, h, *_, usable) in cases.items():
        r = rows[name]
        if usable:
            assert not r["error"] and r["keep"], (name, r["error"])
            clip = resolve_path(out / "manifest.parquet", r["path"])
            with av.open(clip) as c:
                n = sum(1 for _ in c.decode(video=0))
            assert n == r["num_frames"] == 30
            assert (r["width"], r["height"]) == (w - w % 2, h - h % 2)  # the exact re-encode evens sizes
        else:
            assert r["error"]["kind"] == "too_small" and r["error"]["stage"] == "probe", (name, r["error"])
            assert "16x16" in r["error"]["message"] and f"{w}x{h}" in r["error"]["message"]


def test_tiny_frames_behind_a_lying_header_fail_too_small_in_analyze(tmp_path):
    from soraprep.curate.analyze import AnalyzeStage
    from soraprep.video.io import probe, scan_packets

    big, tiny = tmp_path / "big.mp4", tmp_path / "tiny.mp4"
    _write(big, [np.zeros((32, 32, 3), np.uint8)] * 3)
    _write(tiny, [np.zeros((8, 8, 3), np.uint8)] * 3)
    row = {"source": str(tiny), "_info": probe(big), "_index": scan_packets(tiny)}  # header said 32x32
    AnalyzeStage()([row])
    assert row["error"]["kind"] == "too_small" and "8x8" in row["error"]["message"]
