"""Corrupt packets in the middle of a stream (issue 10: "no silently wrong row").

The tolerant decoder skips packets it rejects, so analysis goes on; but a stream-copied clip of that span
would carry the broken packets and hold fewer decodable frames than its ``num_frames``. Each clip records
``damaged_frames`` (listed by the demuxer, rejected by the decoder) and the default recipe drops clips that
have any; clean clips of the same video are kept, and every kept clip decodes, with plain PyAV and no error
tolerance, to exactly ``num_frames`` frames.
"""

from __future__ import annotations

import av
import numpy as np
from typer.testing import CliRunner

from soraprep.cli import app
from soraprep.manifest import read_manifest, resolve_path
from soraprep.video.io import scan_packets
from soraprep.video.synth import Shot, make_video


def _damaged_video(path) -> int:
    """Two shots of 50 frames (one GOP each); 3 KiB of fixed noise inside a P-frame of the first shot.
    Returns the number of frames the decoder rejects."""
    make_video(path, [Shot(50, speed=3), Shot(50, speed=-2)], gop=50)
    index = scan_packets(path)
    with av.open(str(path)) as c:
        packets = [p for p in c.demux(video=0) if p.size]
    target = next(p for p in packets if p.pts == int(index.pts[20]))
    data = bytearray(path.read_bytes())
    noise = np.random.default_rng(7).integers(0, 256, size=min(3072, target.size - 16), dtype=np.uint8)
    data[target.pos + 8: target.pos + 8 + len(noise)] = noise.tobytes()
    path.write_bytes(bytes(data))
    rejected = 0
    with av.open(str(path)) as c:
        for p in c.demux(video=0):
            try:
                p.decode()
            except av.error.InvalidDataError:
                rejected += 1
    return rejected


def _strict_frame_count(path: str) -> int:
    with av.open(path) as c:
        return sum(1 for _ in c.decode(video=0))  # raises on a corrupt packet


def test_clips_with_damaged_packets_are_dropped_with_a_reason_and_kept_clips_are_whole(tmp_path):
    src = tmp_path / "damaged.mp4"
    rejected = _damaged_video(src)
    assert rejected >= 1  # the noise really breaks packets (else this test proves nothing)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["curate", str(src), "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    rows = read_manifest(out / "manifest.parquet")
    assert [r["damaged_frames"] for r in rows] == [rejected, 0]
    assert not rows[0]["keep"] and "damaged_frames" in rows[0]["filter_reason"]
    assert rows[1]["keep"]
    for r in rows:
        if r["keep"]:
            assert _strict_frame_count(resolve_path(out / "manifest.parquet", r["path"])) == r["num_frames"]
    # score once, decide later: allowing damaged clips is a threshold change, no re-analysis
    recipe = tmp_path / "lenient.yaml"
    recipe.write_text("filter: {damaged_frames: null}\n")
    res = CliRunner().invoke(app, ["curate", str(src), "-o", str(out), "-q", "-r", str(recipe)])
    assert res.exit_code == 0, res.output
    rows = read_manifest(out / "manifest.parquet")
    assert rows[0]["keep"] and rows[0]["damaged_frames"] == rejected


def test_truncated_download_is_named_as_such(tmp_path):
    """An MP4 cut short (moov never written): its header is a video container's, so the row says the file is
    damaged and suggests fetching it again, rather than 'not a video'."""
    good = tmp_path / "good.mp4"
    make_video(good, [Shot(30, speed=3)])
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "partial.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "in" / "page.mp4").write_text("<html>404</html>" * 50)
    res = CliRunner().invoke(app, ["curate", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-q"])
    assert res.exit_code == 1, res.output
    kinds = {r["source"].rsplit("/", 1)[-1]: r["error"]["kind"] for r in read_manifest(tmp_path / "out" / "manifest.parquet")}
    assert kinds == {"partial.mp4": "damaged_container", "page.mp4": "not_a_video"}
    assert "fetch it again" in " ".join(res.output.split())
