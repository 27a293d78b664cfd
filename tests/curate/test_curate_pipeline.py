"""End to end: `soraprep curate` on generated videos, bad inputs, re-thresholding, export, report."""

import json
import random
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from soraprep.cli import app
from soraprep.curate.pipeline import curate, rethreshold
from soraprep.manifest import read_manifest, resolve_path
from soraprep.video.io import decode
from soraprep.video.synth import Shot, make_video


@pytest.fixture(scope="module")
def run(media, tmp_path_factory):
    src = tmp_path_factory.mktemp("inputs")
    for name in ("cuts.mp4", "kinds.mp4", "tree.avi", "cityCC0.mpg"):
        shutil.copy(media[name], src / name)
    out = tmp_path_factory.mktemp("out")
    return curate([str(src)], out, workers=2), src, out


def test_every_kept_clip_file_holds_num_frames(run):
    result, _, out = run
    kept = [r for r in result.rows if r["keep"]]
    assert len(kept) >= 6
    for r in kept:
        path = resolve_path(out / "manifest.parquet", r["path"])
        assert str(out.resolve()) in path  # clips live under OUT
        assert sum(1 for _ in decode(path, size=32, fmt="gray")) == r["num_frames"]
        assert r["cut_mode"] in ("copy", "keyframe", "exact")
        assert r["bucket"] and r["bucket_frames"] <= r["num_frames"]


def test_manifest_columns_and_semantics(run):
    result, _, out = run
    rows = read_manifest(out / "manifest.parquet")
    assert rows == read_manifest(out / "manifest.jsonl")
    for r in rows:
        for col in ("path", "text", "num_frames", "height", "width", "aspect_ratio", "resolution", "fps", "source",
                    "video_id", "start_s", "end_s", "start_frame", "end_frame", "keep", "filter_reason", "error"):
            assert col in r
        if not r["error"]:
            assert r["aspect_ratio"] == pytest.approx(r["height"] / r["width"])
            assert r["resolution"] == r["height"] * r["width"]
            assert r["num_frames"] == r["end_frame"] - r["start_frame"]
            assert r["keep"] == (r["filter_reason"] is None)
    assert len({r["clip_id"] for r in rows}) == len(rows)
    # the static, black and blurred shots of kinds.mp4 are dropped with the right reasons
    kinds = [r for r in rows if r["source"].endswith("kinds.mp4")]
    reasons = [r["filter_reason"] or "" for r in kinds]
    assert "static_ratio" in reasons[1] and "black_ratio" in reasons[2] and "sharpness" in reasons[3]
    assert kinds[0]["keep"] and kinds[4]["keep"]
    # legacy files are curated like any other
    assert any(r["keep"] for r in rows if r["source"].endswith("cityCC0.mpg"))
    assert any(r["keep"] for r in rows if r["source"].endswith("tree.avi"))


def test_report_sections(run):
    _, _, out = run
    html = (out / "report.html").read_text()
    for section in ("id='stages'", "id='scores'", "id='kept'", "id='dropped'", "id='timing'", "id='errors'",
                    "<svg", "data:image/jpeg;base64", "stroke-dasharray"):
        assert section in html


def test_rethreshold_does_not_decode(run, tmp_path, monkeypatch):
    _, _, out = run
    work = tmp_path / "out"
    shutil.copytree(out, work)
    import soraprep.video.io as vio

    def boom(*a, **k):
        raise AssertionError("re-thresholding must not decode")

    monkeypatch.setattr(vio, "decode", boom)
    strict = tmp_path / "strict.yaml"
    strict.write_text("filter:\n  duration_s: {min: 2.5}\n")  # on top of the default recipe's other rules
    res = rethreshold(work, recipe=strict)
    before = {r["clip_id"]: r for r in read_manifest(out / "manifest.parquet")}
    for r in res.rows:
        if r["error"]:
            continue
        assert r["keep"] == (before[r["clip_id"]]["keep"] and r["duration_s"] >= 2.5), r
        assert r["motion_score"] == before[r["clip_id"]]["motion_score"]  # scores untouched


def test_export_opensora_csv(run, tmp_path):
    _, _, out = run
    csv_path = tmp_path / "train.csv"
    res = CliRunner().invoke(app, ["export", str(out / "manifest.parquet"), "-o", str(csv_path)])
    assert res.exit_code == 0, res.output
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "path,text,num_frames,height,width,aspect_ratio,resolution,fps"
    kept = sum(1 for r in read_manifest(out / "manifest.parquet") if r["keep"])
    assert len(lines) == kept + 1
    assert all(line.split(",")[0].startswith("/") for line in lines[1:])


def _bad_inputs(media, d):
    (d / "zero.mp4").write_bytes(b"")
    good = media["cuts.mp4"].read_bytes()
    (d / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (d / "text.mp4").write_text("definitely not a video\n" * 50)
    import av

    c = av.open(str(d / "audio_only.m4a"), "w")
    s = c.add_stream("aac", rate=16000)
    for i in range(20):
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = 16000, i * 1024
        for p in s.encode(f):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    make_video(d / "mj.avi", [Shot(10)], codec="mjpeg", width=64, height=48)
    (d / "unsupported.avi").write_bytes((d / "mj.avi").read_bytes().replace(b"MJPG", b"ZZZZ"))
    b = bytearray((d / "mj.avi").read_bytes())
    i = b.find(b"\xff\xc0")
    while i >= 0:  # JPEG frame headers claim 12000x12000
        struct.pack_into(">HH", b, i + 5, 12000, 12000)
        i = b.find(b"\xff\xc0", i + 2)
    (d / "huge.avi").write_bytes(bytes(b))
    (d / "mj.avi").unlink()
    make_video(d / "single.mp4", [Shot(1)], width=64, height=48)
    (d / "dangling.mp4").symlink_to(d / "missing-target.mp4")
    make_video(d / "damaged.ts", [Shot(60, speed=3), Shot(60, speed=2)], width=320, height=240)
    data = bytearray((d / "damaged.ts").read_bytes())
    rng = random.Random(0)
    for k in range(len(data) // 3, len(data) // 3 + 15000):
        data[k] = rng.randrange(256)
    (d / "damaged.ts").write_bytes(bytes(data))


def test_bad_inputs_become_rows_and_exit_1(media, tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    _bad_inputs(media, d)
    inputs = sorted(str(p) for p in d.iterdir()) + [str(tmp_path / "does-not-exist.mp4")]
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["curate", *inputs, "-o", str(out), "-q"])
    assert res.exit_code == 1, res.output
    rows = read_manifest(out / "manifest.parquet")
    by_src = {}
    for r in rows:
        by_src.setdefault(r["source"].rsplit("/", 1)[-1], []).append(r)
    assert set(by_src) == {p.rsplit("/", 1)[-1] for p in inputs}  # every input accounted for
    kinds = {name: rs[0]["error"]["kind"] for name, rs in by_src.items() if rs[0]["error"]}
    assert kinds["zero.mp4"] == "empty_file"
    assert kinds["text.mp4"] == "not_a_video"
    assert kinds["audio_only.m4a"] == "audio_only"
    assert kinds["unsupported.avi"] == "unsupported_codec"
    assert kinds["dangling.mp4"] == "not_found" and kinds["does-not-exist.mp4"] == "not_found"
    assert "truncated.mp4" in kinds and "huge.avi" in kinds
    assert all(r["error"]["message"] for rs in by_src.values() for r in rs if r["error"])
    # a single-frame video is a row dropped by the duration filter, not an error
    single = by_src["single.mp4"]
    assert len(single) == 1 and not single[0]["error"] and "duration_s" in single[0]["filter_reason"]
    # the damaged stream still yields clips from what decodes
    assert any(not r["error"] for r in by_src["damaged.ts"])
    html = (out / "report.html").read_text()
    assert "empty_file" in html and "unsupported_codec" in html


def test_decoded_size_guard(media, monkeypatch):
    import soraprep.video.io as vio

    monkeypatch.setattr(vio, "MAX_PIXELS", 100)
    with pytest.raises(vio.VideoError) as e:
        vio.probe(media["cuts.mp4"])
    assert e.value.kind == "too_large"


def _comparable(rows):
    return [{k: v for k, v in r.items() if not any(t in k for t in ("time", "elapsed", "latency"))} for r in rows]


def test_resume_after_kill_equals_uninterrupted_run(media, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i, name in enumerate(["cuts.mp4", "kinds.mp4", "ntsc.mp4", "bframes.mp4", "odd_size.mp4", "long_shot.mp4"]):
        shutil.copy(media[name], src / f"{i}_{name}")
    ref = curate([str(src)], tmp_path / "ref", workers=1, report=False)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "soraprep.cli", "curate", str(src), "-o", str(out), "-q", "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    units = out / ".soraprep" / "units"
    import time

    deadline = time.time() + 120
    while time.time() < deadline and (not units.exists() or len(list(units.glob("*.parquet"))) < 2):
        time.sleep(0.02)
    proc.kill()  # SIGKILL mid-run
    proc.wait()
    done = len(list(units.glob("*.parquet")))
    assert 1 <= done < 6, "the kill should land mid-run"
    assert not (out / "manifest.parquet").exists()
    res = subprocess.run(cmd, capture_output=True)
    assert res.returncode == 0, res.stderr.decode()
    rows = read_manifest(out / "manifest.parquet")
    assert _comparable(rows) == _comparable(ref.rows)
    # no half-written or duplicated clip files
    clips = sorted(p.relative_to(out) for p in (out / "clips").rglob("*") if p.is_file())
    ref_clips = sorted(p.relative_to(tmp_path / "ref") for p in (tmp_path / "ref" / "clips").rglob("*") if p.is_file())
    assert clips == ref_clips
    assert not list(out.rglob(".partial-*")) and not list(out.rglob(".soraprep-tmp-*"))
    assert json.loads((out / "run.json").read_text())["rows"] == len(rows)


def test_manifest_input_with_spans(media, tmp_path):
    from soraprep.manifest import write_manifest

    src = str(media["cuts.mp4"])
    m = tmp_path / "in.parquet"
    write_manifest(m, [
        {"source": src, "video_id": "yt123", "clip_id": "yt123_0", "start_s": 0.0, "end_s": 2.4, "text": "a pan",
         "dataset": "panda70m"},
        {"source": src, "video_id": "yt123", "clip_id": "yt123_1", "start_s": 3.0, "end_s": 4.6, "text": "b"},
    ])
    res = curate([str(m)], tmp_path / "out", report=False)
    first = [r for r in res.rows if r["clip_id"].startswith("yt123_0")]
    second = [r for r in res.rows if r["clip_id"].startswith("yt123_1")]
    assert first and second
    assert first[0]["start_frame"] == 0 and first[-1]["end_frame"] <= 60
    assert second[0]["start_frame"] >= 75 and second[-1]["end_frame"] <= 115
    assert {r["text"] for r in first} == {"a pan"} and first[0]["dataset"] == "panda70m"


def test_manifest_error_rows_pass_through(media, tmp_path):
    from soraprep.manifest import write_manifest

    m = tmp_path / "ingested.parquet"
    write_manifest(m, [
        {"source": str(media["cuts.mp4"]), "video_id": "ok", "clip_id": "ok_0", "start_s": 0.0, "end_s": 1.5},
        {"source": None, "video_id": "w2", "clip_id": "w2_0",
         "error": {"stage": "ingest", "kind": "missing_field", "message": "w.csv:3: no videoid"}},
        {"source": "https://example.com/x.mp4", "video_id": "w3", "clip_id": "w3_0",
         "error": {"stage": "ingest", "kind": "bad_duration", "message": "w.csv:4: PT?"}},
    ])
    res = curate([str(m)], tmp_path / "out", report=False)
    assert res.exit_code == 1
    by_id = {r["clip_id"]: r for r in res.rows}
    assert by_id["w2_0"]["error"]["kind"] == "missing_field" and not by_id["w2_0"]["keep"]
    assert by_id["w3_0"]["error"]["stage"] == "ingest"  # not fetched or re-probed
    assert any(r["clip_id"].startswith("ok_0") and not r["error"] for r in res.rows)


def test_hostile_ids_stay_inside_out(media, tmp_path):
    from soraprep.manifest import write_manifest

    m = tmp_path / "in.parquet"
    write_manifest(m, [{"source": str(media["cuts.mp4"]), "video_id": "../../escape", "clip_id": "/abs/../x y",
                        "start_s": 0.0, "end_s": 1.6}])
    out = tmp_path / "deep" / "out"
    res = curate([str(m)], out)
    assert res.kept == 1
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != m]
    assert written and all(out.resolve() in p.resolve().parents for p in written)
    html = (out / "report.html").read_text()
    assert html.count("data:image/jpeg;base64") == 1  # the thumbnail is found under its sanitised name
