"""Folder ingestion: recursive, content-sniffed (not extension-trusting), sidecar captions, error rows
for files that claim to be videos and are not; and the ingest command's exit codes and summary."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import pytest
from typer.testing import CliRunner

from soraprep.cli import app
from soraprep.datasets import MetadataError, ingest_rows
from soraprep.manifest import read_manifest
from soraprep.video.sniff import sniff_container, sniff_file
from soraprep.video.synth import Shot, make_video

DATA = Path(__file__).resolve().parents[1] / "data" / "datasets"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    make_video(root / "a.mp4", [Shot(20, seed=1)], fps=Fraction(30000, 1001), width=160, height=120)
    (root / "a.txt").write_text("a caption  with spaces\n", encoding="utf-8")
    make_video(root / "sub" / "deeper" / "b.mkv", [Shot(12, seed=2)], fps=Fraction(25), width=96, height=64)
    os.rename(root / "sub" / "deeper" / "b.mkv", root / "sub" / "deeper" / "noext")  # a video without extension
    (root / "fake.mp4").write_text("<html>404 not found</html>")                      # extension lies
    (root / "trunc.mov").write_bytes((root / "a.mp4").read_bytes()[:64])              # container header only
    (root / "notes.json").write_text("{}")                                              # not a video at all
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)                 # must not recurse forever
    return root


def test_folder_rows_by_content(folder):
    rows, report = ingest_rows(dataset="folder", path=folder)
    by_id = {r["video_id"]: r for r in rows}
    assert list(by_id) == ["a.mp4", "fake.mp4", "sub/deeper/noext", "trunc.mov"]
    a = by_id["a.mp4"]
    assert a["error"] is None and a["text"] == "a caption  with spaces"
    assert (a["num_frames"], a["width"], a["height"], a["fps_rational"]) == (20, 160, 120, "30000/1001")
    assert a["source"] == str((folder / "a.mp4").resolve()) and a["clip_id"] == "a.mp4-0000"
    assert a["start_s"] is None and a["container"] == "mp4"
    b = by_id["sub/deeper/noext"]
    assert b["error"] is None and b["num_frames"] == 12 and b["container"] == "matroska" and b["text"] is None
    assert by_id["fake.mp4"]["error"]["kind"] == "not_video"
    assert by_id["fake.mp4"]["error"]["message"].startswith(str((folder / "fake.mp4").resolve()))
    assert by_id["trunc.mov"]["error"] is not None and by_id["trunc.mov"]["error"]["stage"] == "ingest"
    assert report.records_read == 4 and report.clips == 2 and report.num_errors == 2


def test_sniffing():
    assert sniff_container(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 8) == "mp4"
    assert sniff_container(b"\x00\x00\x00\x18ftypqt  " + b"\x00" * 8) == "mov"
    assert sniff_container(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 8) is None       # a HEIF photo
    assert sniff_container(b"\x00\x00\x00\x18ftypM4A " + b"\x00" * 8) is None       # audio
    assert sniff_container(b"\x1a\x45\xdf\xa3\x01") == "matroska"
    assert sniff_container(b"RIFF\x00\x00\x00\x00AVI LIST") == "avi"
    assert sniff_container(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None
    assert sniff_container(b"FLV\x01\x05") == "flv"
    assert sniff_container(bytes([0x47] + [0] * 187 + [0x47] + [0] * 187 + [0x47] + [0] * 10)) == "mpegts"
    assert sniff_container(b"\x00\x00\x01\xba\x44") == "mpegps"
    assert sniff_container(b"<!DOCTYPE html>") is None and sniff_container(b"") is None
    assert sniff_file("/nonexistent/file") is None


def test_cli_ingest_exit_codes_and_summary(folder, tmp_path):
    runner = CliRunner()
    out = tmp_path / "panda.parquet"
    res = runner.invoke(app, ["ingest", "--dataset", "panda70m", str(DATA / "panda70m_validation.head6.csv"),
                              "-o", str(out), "--limit", "5", "--split", "val"])
    assert res.exit_code == 0, res.output
    rows = read_manifest(out)
    assert len(rows) == 5 and rows[0]["video_id"] == "-1hTK0wGrTg" and {r["split"] for r in rows} == {"val"}
    assert "clips" in res.output and "5" in res.output
    res = runner.invoke(app, ["ingest", "--dataset", "folder", str(folder), "-o", str(tmp_path / "f.parquet")])
    assert res.exit_code == 1  # two error rows, recorded
    assert "not_video" in res.output and len(read_manifest(tmp_path / "f.parquet")) == 4
    assert "error row:" in res.output
    res = runner.invoke(app, ["ingest", "--dataset", "shot2story",
                              str(DATA / "shot2story_annotations.constructed.json"), "-o", str(tmp_path / "s.parquet"),
                              "--fps", "30000/1001"])
    assert res.exit_code == 0 and len(read_manifest(tmp_path / "s.parquet")) == 3
    for args in (["--dataset", "kinetics", str(folder)],
                 ["--dataset", "shot2story", str(DATA / "shot2story_annotations.constructed.json")],
                 ["--dataset", "webvid", str(folder)],
                 ["--dataset", "webvid", str(DATA / "webvid10m.head10.csv"), "--split", "dev"],
                 ["--dataset", "folder", str(DATA / "webvid10m.head10.csv")]):
        res = runner.invoke(app, ["ingest", *args, "-o", str(tmp_path / "x.parquet")])
        assert res.exit_code == 2, (args, res.output)
    res = runner.invoke(app, ["ingest", "--dataset", "webvid", str(DATA / "webvid10m.head10.csv"), "-o",
                              str(tmp_path / "x.csv")])
    assert res.exit_code == 2 and ".parquet" in res.output


def test_folder_needs_a_directory(tmp_path):
    with pytest.raises(MetadataError, match="not a folder"):
        ingest_rows(dataset="folder", path=DATA / "webvid10m.head10.csv")


def test_folder_manifest_downloads_in_place(folder, tmp_path):
    from soraprep.datasets import ingest
    from soraprep.datasets.download import download

    ingest(dataset="folder", path=folder, out=tmp_path / "f.parquet")
    report = download(manifest=tmp_path / "f.parquet", out=tmp_path / "out", cut="exact")
    rows = read_manifest(tmp_path / "out" / "manifest.parquet")
    assert (report.local, report.downloaded, report.upstream_errors, report.num_errors) == (2, 0, 2, 2)
    a = rows[0]
    assert a["path"] == str((folder / "a.mp4").resolve()) and a["cut_mode"] == "none" and a["num_frames"] == 20
    assert rows[1]["error"]["stage"] == "ingest"  # carried through unchanged
    assert not (tmp_path / "out" / "videos").exists()  # local files are used where they are
