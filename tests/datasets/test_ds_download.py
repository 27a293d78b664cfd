"""``soraprep download`` end to end: metadata -> ingest -> a real HTTP server on 127.0.0.1 serving
generated videos (404, dropped connection resumed with Range) and local files -> frame-exact clips,
the other cut modes, re-runs that skip finished work, and file names that cannot escape OUT."""

from __future__ import annotations

import json
import os
import re
from fractions import Fraction
from pathlib import Path

import pytest
from ds_server import FakeClock, VideoServer
from typer.testing import CliRunner

from soraprep.cli import app
from soraprep.datasets import ingest
from soraprep.datasets.download import classify, download
from soraprep.datasets.fetch import HttpFetcher, RateLimiter
from soraprep.manifest import read_manifest, write_manifest
from soraprep.storage.files import confined, safe_name
from soraprep.video.io import probe
from soraprep.video.synth import Shot, make_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("src")
    make_video(d / "a.mp4", [Shot(40, seed=1), Shot(35, seed=2)], fps=Fraction(25), width=160, height=120, gop=25)
    make_video(d / "b.mp4", [Shot(50, seed=3)], fps=Fraction(25), width=128, height=96)
    return d


@pytest.fixture()
def server(videos):
    with VideoServer() as s:
        s.files["/a.mp4"] = (videos / "a.mp4").read_bytes()
        s.files["/drop.mp4"] = (videos / "b.mp4").read_bytes()
        yield s


def fake_fetcher() -> HttpFetcher:
    clock = FakeClock()
    return HttpFetcher(limiter=RateLimiter(clock=clock.time, sleep=clock.sleep), timeout_s=10)


def internvid_line(video: str, start: str, end: str, caption: str = "c") -> str:
    return json.dumps({"YoutubeID": video, "Start_timestamp": start, "End_timestamp": end, "Caption": caption,
                       "Aesthetic_Score": 5.0, "UMT_Score": 0.5})


def test_ingest_then_download_cuts_exact_spans(server, videos, tmp_path):
    size_b = len(server.files["/drop.mp4"])
    server.actions["/drop.mp4"] = [("drop", size_b // 2)]
    meta = tmp_path / "internvid.jsonl"
    meta.write_text("\n".join([
        internvid_line(server.url("/a.mp4"), "00:00:00.400", "00:00:01.600", "first"),   # frames 10..40
        internvid_line(server.url("/a.mp4"), "00:00:02.000", "00:00:02.800"),            # frames 50..70
        internvid_line(server.url("/missing.mp4"), "00:00:00.000", "00:00:01.000"),
        internvid_line(server.url("/drop.mp4"), "00:00:00.000", "00:00:01.000"),         # frames 0..25
        internvid_line("ftp://127.0.0.1/x.mp4", "00:00:00.000", "00:00:01.000"),
        internvid_line(str(videos / "b.mp4"), "00:00:00.200", "00:00:01.000"),           # local, frames 5..25
        internvid_line(server.url("/a.mp4"), "00:01:00.000", "00:01:05.000"),            # past the end
    ]) + "\n")
    manifest = tmp_path / "m.parquet"
    assert ingest(dataset="internvid", path=meta, out=manifest).clips == 7
    out = tmp_path / "out"
    report = download(manifest=manifest, out=out, concurrency=3, cut="exact", fetcher=fake_fetcher())
    rows = read_manifest(out / "manifest.parquet")
    assert len(rows) == 7
    frames = [(r["start_frame"], r["end_frame"], r["num_frames"]) for r in rows]
    assert frames[0] == (10, 40, 30) and frames[1] == (50, 70, 20) and frames[3] == (0, 25, 25)
    assert frames[5] == (5, 25, 20)
    for i in (0, 1, 3, 5):
        r = rows[i]
        assert r["error"] is None and r["cut_mode"] == "exact" and not os.path.isabs(r["path"])
        assert probe(out / r["path"]).num_frames == r["num_frames"]  # the file holds exactly the span
        assert (r["width"], r["height"]) == ((160, 120) if i < 2 else (128, 96))
        assert r["fps_rational"] == "25"
    assert rows[0]["text"] == "first" and rows[0]["aesthetic_score"] == 5.0  # columns pass through
    assert (rows[0]["start_s"], rows[0]["end_s"]) == (0.4, 1.6)
    assert [r["error"]["kind"] if r["error"] else None for r in rows] == [
        None, None, "http_404", None, "unsupported_scheme", None, "span_outside_video"]
    assert all(r["error"]["stage"] == "download" for r in rows if r["error"])
    assert rows[5]["source"] == str((videos / "b.mp4").resolve())  # local files are not copied
    assert rows[5]["source_url"] == str(videos / "b.mp4")
    assert rows[0]["source"].startswith("videos/") and rows[0]["source_url"] == server.url("/a.mp4")
    assert len(server.requests("/a.mp4")) == 1  # two clips, one download
    assert server.requests("/drop.mp4") == [None, f"bytes={size_b // 2}-"]
    assert (report.downloaded, report.local, report.clips_cut) == (2, 1, 4)
    assert report.errors == {"http_404": 1, "unsupported_scheme": 1, "span_outside_video": 1}

    # a second run finds everything done: no request, no cut, the same manifest
    n_requests = len(server.log)
    again = download(manifest=manifest, out=out, concurrency=2, cut="exact", fetcher=fake_fetcher())
    assert (again.downloaded, again.already_complete, again.clips_cut, again.clips_skipped) == (0, 2, 0, 4)
    assert len(server.log) == n_requests + 1  # only the 404 is asked again
    rows2 = read_manifest(out / "manifest.parquet")
    assert [(r["path"], r["num_frames"]) for r in rows2] == [(r["path"], r["num_frames"]) for r in rows]


def test_other_cut_modes_and_whole_videos(server, tmp_path):
    url = server.url("/a.mp4")
    rows = [{"clip_id": f"a-{i}", "video_id": "a", "source": url, "start_s": 0.4, "end_s": 2.4} for i in range(1)]
    rows.append({"clip_id": "whole", "video_id": "a", "source": url, "start_s": None, "end_s": None, "text": "w"})
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    got = {}
    for mode in ("keyframe", "copy", "none"):
        out = tmp_path / mode
        download(manifest=manifest, out=out, cut=mode, fetcher=fake_fetcher())
        got[mode] = read_manifest(out / "manifest.parquet")
    k = got["keyframe"][0]
    assert (k["start_frame"], k["end_frame"], k["cut_mode"]) == (25, 50, "keyframe")  # keyframes every 25
    assert probe(tmp_path / "keyframe" / k["path"]).num_frames == 25
    c = got["copy"][0]
    assert c["start_frame"] == 25 and 25 < c["end_frame"] <= 60 and c["cut_mode"] == "copy"
    assert probe(tmp_path / "copy" / c["path"]).num_frames == c["num_frames"]
    n = got["none"][0]
    assert (n["start_frame"], n["end_frame"], n["cut_mode"]) == (10, 60, "none")
    assert n["path"].startswith("videos/") and n["path"] == n["source"]
    for mode in got:
        w = got[mode][1]
        assert (w["cut_mode"], w["start_frame"], w["end_frame"], w["num_frames"]) == ("none", 0, 75, 75)
        assert w["start_s"] is None and w["text"] == "w"


def test_nothing_is_written_outside_out(server, tmp_path):
    url = server.url("/a.mp4")
    evil = [
        {"clip_id": "../../../escape", "video_id": "../../etc/passwd", "source": url},
        {"clip_id": "/abs/path/clip", "video_id": "/tmp/x", "source": url + "?name=../../y"},
        {"clip_id": "weird name ☃ <>|:*?\x00", "video_id": "C:\\Windows\\evil", "source": url},
        {"clip_id": "..", "video_id": ".", "source": url},
        {"clip_id": "f", "video_id": "f", "source": "file:///etc/passwd"},
        {"clip_id": "d", "video_id": "d", "source": "data:video/mp4;base64,AAAA"},
    ]
    for r in evil:
        r.update(start_s=0.4, end_s=1.2)
    manifest = write_manifest(tmp_path / "in" / "m.parquet", evil)
    out = tmp_path / "out"
    before = {p for p in tmp_path.rglob("*")}
    download(manifest=manifest, out=out, cut="exact", fetcher=fake_fetcher())
    created = {p for p in tmp_path.rglob("*")} - before
    assert created and all(p == out or out in p.parents for p in created)
    rows = read_manifest(out / "manifest.parquet")
    assert [r["error"]["kind"] if r["error"] else None for r in rows] == [None] * 4 + ["unsupported_scheme"] * 2
    names = [Path(r["path"]).name for r in rows[:4]]
    assert len(set(names)) == 4
    for r in rows[:4]:
        assert (out / r["path"]).resolve().parent == (out / "clips").resolve()
        assert re.fullmatch(r"[A-Za-z0-9._-]+", Path(r["path"]).name) and not Path(r["path"]).name.startswith(".")
        assert r["num_frames"] == 20
    assert {p.parent.name for p in out.rglob("*.mp4")} == {"clips", "videos"}


def test_safe_names_and_sources():
    assert safe_name("../../etc/passwd") == safe_name("../../etc/passwd")  # deterministic
    assert safe_name("../../etc/passwd").startswith("etc_passwd-")
    assert safe_name("a/b") != safe_name("a_b")
    assert re.fullmatch(r"[0-9a-f]{8}", safe_name(".."))
    assert len(safe_name("x" * 1000)) <= 80 + 9
    with pytest.raises(ValueError):
        confined(Path("/tmp/out"), "../x")
    assert [classify(s) for s in ("https://a/b.mp4", "https://youtu.be/dQw4w9WgXcQ", "rel/v.mp4", "/abs/v.mp4",
                                  "C:\\v.mp4", "ftp://h/v", "file:///v", "s3://b/v")] == [
        "http", "youtube", "local", "local", "local", "unsupported", "unsupported", "unsupported"]


def test_cli_ingest_and_download(server, tmp_path):
    runner = CliRunner()
    meta = tmp_path / "internvid.jsonl"
    meta.write_text(internvid_line(server.url("/a.mp4"), "00:00:00.400", "00:00:01.600") + "\n")
    m = tmp_path / "m.parquet"
    res = runner.invoke(app, ["ingest", "--dataset", "internvid", str(meta), "-o", str(m)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    res = runner.invoke(app, ["download", str(m), "-o", str(out), "--concurrency", "2",
                              "--rate-limit", "127.0.0.1=50/s", "--cut", "exact"])
    assert res.exit_code == 0, res.output
    (row,) = read_manifest(out / "manifest.parquet")
    assert row["num_frames"] == 30 and row["cut_mode"] == "exact"
    meta.write_text(meta.read_text() + internvid_line(server.url("/missing.mp4"), "00:00:00.000", "00:00:01.000") + "\n")
    runner.invoke(app, ["ingest", "--dataset", "internvid", str(meta), "-o", str(m)])
    res = runner.invoke(app, ["download", str(m), "-o", str(out)])
    assert res.exit_code == 1  # a row failed, recorded in the manifest
    assert read_manifest(out / "manifest.parquet")[1]["error"]["kind"] == "http_404"
    for bad in (["--rate-limit", "127.0.0.1"], ["--cut", "fancy"], ["--concurrency", "0"]):
        res = runner.invoke(app, ["download", str(m), "-o", str(out), *bad])
        assert res.exit_code == 2, (bad, res.output)
    res = runner.invoke(app, ["download", str(tmp_path / "nope.parquet"), "-o", str(out)])
    assert res.exit_code == 2


def test_curate_accepts_the_downloaded_manifest(server, tmp_path):
    url = server.url("/a.mp4")
    rows = [{"clip_id": "a-0", "video_id": "a", "source": url, "start_s": 0.0, "end_s": 1.2, "text": "one",
             "dataset": "panda70m", "matching_score": 0.5},
            {"clip_id": "a-1", "video_id": "a", "source": url, "start_s": 1.6, "end_s": 2.8, "text": "two",
             "dataset": "panda70m", "matching_score": 0.4}]
    write_manifest(tmp_path / "m.parquet", rows)
    download(manifest=tmp_path / "m.parquet", out=tmp_path / "dl", cut="exact", fetcher=fake_fetcher())
    res = CliRunner().invoke(app, ["curate", str(tmp_path / "dl" / "manifest.parquet"), "-o", str(tmp_path / "cur"),
                                   "-q", "--no-report"])
    assert res.exit_code == 0, res.output
    cur = read_manifest(tmp_path / "cur" / "manifest.parquet")
    assert sorted(r["text"] for r in cur) == ["one", "two"]  # published captions ride through curation
    assert {r["source_url"] for r in cur} == {url} and {r["dataset"] for r in cur} == {"panda70m"}
    assert sum(r["num_frames"] for r in cur) <= 30 + 30 and all(r["error"] is None for r in cur)


class _FakeYDL:
    """Stands in for yt_dlp.YoutubeDL (no network here): 'downloads' a generated video to outtmpl."""

    calls: list[dict] = []
    video: Path | None = None

    def __init__(self, opts):
        self.opts = opts

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def download(self, urls):
        _FakeYDL.calls.append({"opts": self.opts, "urls": urls})
        if "fail" in urls[0] or "FAIL" in urls[0]:
            raise RuntimeError("ERROR: [youtube] Video unavailable")
        Path(self.opts["outtmpl"].replace("%(ext)s", "mp4")).write_bytes(self.video.read_bytes())


def test_youtube_sources_go_through_ytdlp(videos, tmp_path, monkeypatch):
    import types

    fake = types.ModuleType("yt_dlp")
    fake.YoutubeDL = _FakeYDL
    _FakeYDL.video, _FakeYDL.calls = videos / "a.mp4", []
    monkeypatch.setitem(__import__("sys").modules, "yt_dlp", fake)
    rows = [{"clip_id": "yt-0", "video_id": "../../dQw4w9WgXcQ", "source": "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
             "start_s": 0.4, "end_s": 1.6},
            {"clip_id": "yt-1", "video_id": "FAILFAILFAI", "source": "https://youtu.be/FAILFAILFAI"}]
    write_manifest(tmp_path / "m.parquet", rows)
    out = tmp_path / "out"
    report = download(manifest=tmp_path / "m.parquet", out=out, cut="exact", fetcher=fake_fetcher())
    got = read_manifest(out / "manifest.parquet")
    assert got[0]["error"] is None and got[0]["num_frames"] == 30 and got[0]["source"].startswith("videos/")
    assert got[1]["error"]["kind"] == "ytdlp_failed" and "Video unavailable" in got[1]["error"]["message"]
    (call,) = [c for c in _FakeYDL.calls if "dQw4w9WgXcQ" in c["urls"][0]]
    tmpl = Path(call["opts"]["outtmpl"])
    assert tmpl.parent == (out / "videos").resolve() and ".." not in tmpl.name
    assert call["opts"]["noplaylist"] is True
    assert report.downloaded == 1
    # the complete file is found on a re-run: yt-dlp is not called again
    download(manifest=tmp_path / "m.parquet", out=out, cut="exact", fetcher=fake_fetcher())
    assert sorted(c["urls"][0] for c in _FakeYDL.calls) == sorted([rows[0]["source"]] + [rows[1]["source"]] * 2)
    # without the extra: a clear error naming it
    monkeypatch.setitem(__import__("sys").modules, "yt_dlp", None)
    download(manifest=tmp_path / "m.parquet", out=tmp_path / "out2", cut="exact", fetcher=fake_fetcher())
    err = read_manifest(tmp_path / "out2" / "manifest.parquet")[0]["error"]
    assert err["kind"] == "missing_extra" and "soraprep[download]" in err["message"]


def test_cut_modes_share_an_output_folder_without_clobbering(server, tmp_path):
    url = server.url("/a.mp4")
    m = write_manifest(tmp_path / "m.parquet", [{"clip_id": "c", "video_id": "a", "source": url,
                                                 "start_s": 0.4, "end_s": 2.4}])
    out = tmp_path / "out"
    runs = {}
    for mode in ("exact", "keyframe", "exact"):
        rep = download(manifest=m, out=out, cut=mode, fetcher=fake_fetcher())
        (row,) = read_manifest(out / "manifest.parquet")
        runs.setdefault(mode, []).append((rep.clips_cut, rep.clips_skipped, row["path"], row["num_frames"]))
    assert runs["exact"][0][0] == 1 and runs["exact"][1][:2] == (0, 1)  # second exact run reuses the first
    assert runs["exact"][0][2:] == runs["exact"][1][2:] and runs["exact"][1][3] == 50
    assert runs["keyframe"][0][2] != runs["exact"][0][2] and runs["keyframe"][0][3] == 25
    assert probe(out / runs["exact"][1][2]).num_frames == 50
    # the published span changed: the clip is cut again, not reused
    write_manifest(m, [{"clip_id": "c", "video_id": "a", "source": url, "start_s": 0.4, "end_s": 1.2}])
    rep = download(manifest=m, out=out, cut="exact", fetcher=fake_fetcher())
    assert rep.clips_cut == 1 and read_manifest(out / "manifest.parquet")[0]["num_frames"] == 20


def test_symlinked_subfolder_cannot_lead_outside_out(server, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "videos").symlink_to(outside, target_is_directory=True)
    m = write_manifest(tmp_path / "m.parquet", [{"clip_id": "c", "video_id": "a", "source": server.url("/a.mp4")}])
    download(manifest=m, out=out, cut="exact", fetcher=fake_fetcher())
    (row,) = read_manifest(out / "manifest.parquet")
    assert row["error"]["kind"] == "unsafe_path" and list(outside.iterdir()) == []
