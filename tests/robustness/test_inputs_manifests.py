"""Real-world inputs and hostile manifests end in true rows (issue 10, items 11-12), through the CLI.

Folders holding a file name that is not UTF-8, a FIFO, a socket, a device, broken links, symlink loops
and folders named like videos; manifests with sources of the wrong type, FFmpeg protocols, duplicate
clip ids, hostile ids, bad spans, malformed lines, files that are no manifest at all; ``export -o`` onto
its own input. Each case: a row with a precise error kind (or a kept row), or exit 2 with one message,
never a traceback, a hang or another video's footage.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from soraprep.cli import app
from soraprep.manifest import read_manifest
from soraprep.video.io import probe
from soraprep.video.synth import Shot, make_video

ROOT = Path(__file__).resolve().parents[2]
NON_UTF8 = b"caf\xe9.mp4"


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """Two small videos that pass the default filters, told apart by their size."""
    d = tmp_path_factory.mktemp("videos")
    a, b = d / "a.mp4", d / "b.mp4"
    make_video(a, [Shot(40, speed=3)], width=256, height=144)
    make_video(b, [Shot(40, speed=-3)], width=320, height=176)
    return {"a": a, "b": b}


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """The real command in a child process: a FIFO opened by mistake would hang it, the timeout fails it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "soraprep.cli", *args], capture_output=True, timeout=timeout,
                          env=env, cwd=str(ROOT))


def _by_name(rows: list[dict]) -> dict[str, dict]:
    return {os.fsencode(r["source"]).rsplit(b"/", 1)[-1]: r for r in rows}


def test_odd_folder_entries_become_rows_and_non_utf8_name_survives(videos, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(videos["a"], d / "ok.mp4")
    shutil.copy(videos["a"], os.path.join(os.fsencode(d), NON_UTF8))
    os.mkfifo(d / "fifo.mp4")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock.mp4"))
    (d / "broken.mp4").symlink_to(d / "missing-target.mp4")
    (d / "loop.mp4").symlink_to("loop.mp4")
    (d / "folder.mp4").mkdir()
    shutil.copy(videos["b"], d / "folder.mp4" / "inner.mp4")  # a folder named like a video is still scanned
    device = False
    if os.geteuid() == 0:
        try:
            os.mknod(d / "device.mp4", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # like /dev/null
            device = True
        except OSError:
            pass
    out = tmp_path / "out"
    res = _cli("curate", str(d), "-o", str(out), "-q", "--cut", "exact")
    sock.close()
    assert res.returncode == 1, res.stderr.decode(errors="replace")
    assert b"Traceback" not in res.stderr
    rows = read_manifest(out / "manifest.parquet")
    by = _by_name(rows)
    kinds = {name: (r["error"] or {}).get("kind") for name, r in by.items()}
    expected = {b"ok.mp4": None, NON_UTF8: None, b"inner.mp4": None, b"fifo.mp4": "not_a_regular_file",
                b"sock.mp4": "not_a_regular_file", b"broken.mp4": "not_found", b"loop.mp4": "symlink_loop",
                b"folder.mp4": "is_a_directory"}
    if device:
        expected[b"device.mp4"] = "not_a_regular_file"
    assert kinds == expected
    assert len(rows) == len(expected)  # one row each, nothing dropped, nothing twice
    # `ingest --dataset folder` makes the same rows (stat only: the FIFO is never opened, no hang)
    ingested = tmp_path / "ingested.parquet"
    res = _cli("ingest", "--dataset", "folder", str(d), "-o", str(ingested))
    assert res.returncode == 1 and b"Traceback" not in res.stderr, res.stderr.decode(errors="replace")
    assert {name: (r["error"] or {}).get("kind") for name, r in _by_name(read_manifest(ingested)).items()} == expected
    # the file whose name is not UTF-8 is curated and kept, and its exact name survives the manifest
    row = by[NON_UTF8]
    assert row["keep"] and row["source"] == os.fsdecode(os.path.join(os.fsencode(d), NON_UTF8))
    assert probe(row["source"]).num_frames == 40  # the name read back re-opens the source
    assert (out / row["path"]).is_file() and row["path"].isascii() and row["clip_id"].isascii()
    assert row["clip_id"] in (out / "report.html").read_text(encoding="utf-8")  # the report was written
    jsonl = [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert "fsbytes:" + os.fsencode(str(d)).decode() + "/caf%E9.mp4" in {r["source"] for r in jsonl}
    assert {r["source"] for r in read_manifest(out / "manifest.jsonl")} == {r["source"] for r in rows}
    # the manifest is an input: curating it again re-opens the same source
    again = _cli("curate", str(out / "manifest.parquet"), "-o", str(tmp_path / "again"), "-q", "--no-report",
                 "--cut", "none")
    assert again.returncode == 1, again.stderr.decode(errors="replace")  # the error rows pass through
    redo = [r for r in read_manifest(tmp_path / "again" / "manifest.parquet") if r["source"] == row["source"]]
    assert redo and redo[0]["keep"] and redo[0]["path"] == row["source"] and not redo[0]["error"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_and_folder_are_rows(videos, tmp_path):
    d = tmp_path / "in"
    (d / "locked").mkdir(parents=True)
    shutil.copy(videos["a"], d / "ok.mp4")
    shutil.copy(videos["a"], d / "noperm.mp4")
    os.chmod(d / "noperm.mp4", 0)
    os.chmod(d / "locked", 0)
    try:
        res = _cli("curate", str(d), "-o", str(tmp_path / "out"), "-q", "--no-report")
    finally:
        os.chmod(d / "locked", 0o755)
    assert res.returncode == 1
    kinds = {k: (r["error"] or {}).get("kind") for k, r in _by_name(read_manifest(tmp_path / "out/manifest.parquet")).items()}
    assert kinds == {b"ok.mp4": None, b"noperm.mp4": "unreadable", b"locked": "unreadable"}


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


HOSTILE_SOURCES = {  # clip_id -> source that names no local file (FFmpeg would open several of them)
    "file": "file://{a}", "concat": "concat:{a}|{b}", "pipe": "pipe:0", "data": "data:video/mp4;base64,AAAA",
    "subfile": "subfile,,start,0,end,100,,:{a}", "ftp": "ftp://127.0.0.1:9/x.mp4", "http": "http://127.0.0.1:9/x.mp4",
}


def test_hostile_manifest_rows_in_curate(videos, tmp_path):
    a, b = str(videos["a"]), str(videos["b"])
    os.mkfifo(tmp_path / "fifo.mp4")
    rows = [
        {"source": a, "clip_id": "good", "text": "a"},
        {"source": "fifo.mp4", "clip_id": "fifo"},               # relative to the manifest; never opened
        {"source": str(tmp_path), "clip_id": "folder"},
        {"source": "/nowhere/a\x00b.mp4", "clip_id": "nul"}, {"source": "/" + "p" * 5000 + ".mp4", "clip_id": "longpath"},
        {"source": b, "clip_id": "good", "text": "b"},          # reuses the id for other footage
        {"source": 5, "clip_id": "int"}, {"source": [a], "clip_id": "list"}, {"source": {"p": a}, "clip_id": "dict"},
        {"source": True, "clip_id": "bool"},
        {"source": a, "clip_id": "nan", "start_s": float("nan"), "end_s": 1.0},
        {"source": a, "clip_id": "neg", "start_s": -1.0, "end_s": 1.0},
        {"source": a, "clip_id": "inverted", "start_s": 1.2, "end_s": 0.2},
        {"source": a, "clip_id": "inf", "start_s": 0.0, "end_s": float("inf")},
        {"source": a, "clip_id": "../../etc/passwd", "video_id": "../../etc"},
        {"source": a, "clip_id": "L" * 5000},
        *[{"source": s.format(a=a, b=b), "clip_id": k} for k, s in HOSTILE_SOURCES.items()],
        '{"source": "broken json',
        "[1, 2]",
    ]
    m = _jsonl(tmp_path / "m.jsonl", rows)
    out = tmp_path / "out"
    res = _cli("curate", str(m), "-o", str(out), "-q", "--no-report", "--cut", "exact")
    assert res.returncode == 1, res.stderr.decode(errors="replace")
    assert b"Traceback" not in res.stderr
    got = read_manifest(out / "manifest.parquet")
    kind = {}
    for r in got:
        kind.setdefault(r["clip_id"].rsplit("-", 1)[0] if not r["error"] else r["clip_id"], (r["error"] or {}).get("kind"))
    assert kind["good"] is None and kind["../../etc/passwd"] is None
    expected = {"int": "bad_value", "list": "bad_value", "dict": "bad_value", "bool": "bad_value",
                "nan": "bad_span", "neg": "bad_span", "inverted": "bad_span", "inf": "bad_span",
                "fifo": "not_a_regular_file", "folder": "not_a_regular_file", "nul": "bad_source", "longpath": "not_found",
                **{k: "unsupported_source" for k in HOSTILE_SOURCES}}
    assert {k: kind.get(k) for k in expected} == expected
    assert sum(1 for r in got if (r["error"] or {}).get("kind") == "bad_id") == 1
    # the reused clip_id: the first row keeps its footage, the second is an error, never a's file for b
    good = [r for r in got if r["source"] == a and r["clip_id"].startswith("good")]
    dup = [r for r in got if r["source"] == b]
    assert good and all(r["keep"] and r["width"] == 256 for r in good)
    assert [r["error"]["kind"] for r in dup] == ["duplicate_clip_id"]
    assert probe(out / good[0]["path"]).width == 256
    # malformed lines are error rows that say where they are (file:line), like ingest's
    lines = sorted(r["error"]["message"] for r in got if r["error"] and r["error"]["kind"] == "bad_json")
    assert len(lines) == 2 and lines[0].startswith(f"{m}:{len(rows) - 1}: ")
    # every file written stays inside OUT, ids and all
    assert all(out.resolve() in p.resolve().parents for p in tmp_path.rglob("*") if p.is_file() and p != m)
    # every input line is accounted for: two kept videos (their clips), one error row for each other line
    assert sum(1 for r in got if r["error"]) == len(rows) - 2
    assert all(r["keep"] for r in got if not r["error"])


@pytest.mark.parametrize("bad", [5, True], ids=["int", "bool"])
def test_parquet_source_column_of_wrong_type(tmp_path, bad):
    m = tmp_path / "m.parquet"
    pq.write_table(pa.table({"source": [bad, bad], "clip_id": ["x", "y"]}), m)
    res = CliRunner().invoke(app, ["curate", str(m), "-o", str(tmp_path / "out"), "-q", "--no-report"])
    assert res.exit_code == 1, res.output
    rows = read_manifest(tmp_path / "out" / "manifest.parquet")
    assert [(r["clip_id"], r["error"]["kind"]) for r in rows] == [("x", "bad_source"), ("y", "bad_source")]


def test_parquet_known_columns_of_wrong_type(videos, tmp_path):
    m = tmp_path / "m.parquet"
    pq.write_table(pa.table({"source": [str(videos["a"])] * 3, "clip_id": ["ok", "t", "e"], "text": [None, 5, None],
                             "error": [None, None, "oops"]}).cast(pa.schema([
                                 ("source", pa.string()), ("clip_id", pa.string()), ("text", pa.int64()),
                                 ("error", pa.string())])), m)
    res = CliRunner().invoke(app, ["curate", str(m), "-o", str(tmp_path / "out"), "-q", "--no-report"])
    assert res.exit_code == 1, res.output
    kinds = {r["clip_id"].split("-")[0]: (r["error"] or {}).get("kind") for r in read_manifest(tmp_path / "out/manifest.parquet")}
    assert kinds == {"ok": None, "t": "bad_value", "e": "bad_value"}
    res = CliRunner().invoke(app, ["download", str(m), "-o", str(tmp_path / "dl"), "--cut", "none"])
    assert res.exit_code == 1, res.output
    got = read_manifest(tmp_path / "dl/manifest.parquet")
    assert [(r["clip_id"], (r["error"] or {}).get("kind")) for r in got] == [("ok", None), ("t", "bad_value"),
                                                                              ("e", "bad_value")]


def test_hostile_manifest_rows_in_download(videos, tmp_path):
    a, b = str(videos["a"]), str(videos["b"])
    rows = [
        {"source": a, "clip_id": "same", "video_id": "va", "start_s": 0.0, "end_s": 1.0},
        {"source": b, "clip_id": "same", "video_id": "vb", "start_s": 0.0, "end_s": 1.0},  # crashed the run
        {"source": a, "video_id": "v", "start_s": 0.0, "end_s": 1.0},
        {"source": b, "video_id": "v", "start_s": 0.0, "end_s": 1.0},  # a reused video_id, no clip_id
        {"source": a, "clip_id": "nan", "start_s": float("nan"), "end_s": 1.0},
        {"source": a, "clip_id": "inverted", "start_s": 1.2, "end_s": 0.2},
        {"source": a, "clip_id": "../../etc/passwd", "video_id": "../../etc", "start_s": 0.0, "end_s": 1.0},
        {"source": a, "clip_id": "L" * 5000, "start_s": 0.0, "end_s": 1.0},
        *[{"source": s.format(a=a, b=b), "clip_id": k} for k, s in HOSTILE_SOURCES.items() if k != "http"],
        {"source": "fifo.mp4", "clip_id": "fifo"},
        {"source": "/nowhere/a\x00b.mp4", "clip_id": "nul"}, {"source": "/" + "p" * 5000 + ".mp4", "clip_id": "longpath"},
    ]
    os.mkfifo(tmp_path / "fifo.mp4")
    m = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist(rows), m)
    pq.write_table(pa.table({"source": [7], "clip_id": ["int"]}), tmp_path / "int.parquet")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["download", str(m), "-o", str(out), "--cut", "exact", "--concurrency", "4"])
    assert res.exit_code == 1, res.output
    got = read_manifest(out / "manifest.parquet")
    assert len(got) == len(rows)
    kinds = [(r["error"] or {}).get("kind") for r in got]
    assert kinds == [None, "duplicate_clip_id", None, None, "bad_span", "bad_span", None, "bad_id",
                     "unsupported_scheme", "unsupported_scheme", "unsupported_scheme", "unsupported_scheme",
                     "not_found", "unsupported_scheme", "not_a_regular_file", "bad_source", "not_found"]
    # each clip holds its own source's footage (a: 256x144, b: 320x176)
    sizes = [(probe(out / r["path"]).width if r["path"] else None) for r in got[:4]]
    assert sizes == [256, None, 256, 320] and got[2]["path"] != got[3]["path"]
    assert all(out.resolve() in p.resolve().parents for p in out.rglob("*") if p.is_file())
    res = CliRunner().invoke(app, ["download", str(tmp_path / "int.parquet"), "-o", str(tmp_path / "o2")])
    assert res.exit_code == 1, res.output
    assert read_manifest(tmp_path / "o2" / "manifest.parquet")[0]["error"]["kind"] == "bad_source"


@pytest.mark.parametrize("name,data", [("m.parquet", b"PAR1 this is not parquet at all" * 4),
                                       ("m.jsonl", b"\xff\xfe\x00 binary \x89PNG\n" * 4),
                                       ("m.jsonl", b"not json\nneither this\n")],
                         ids=["parquet", "binary-jsonl", "text-jsonl"])
def test_file_that_is_no_manifest_exits_2_with_one_message(tmp_path, name, data):
    m = tmp_path / name
    m.write_bytes(data)
    for args in (["curate", str(m), "-o", str(tmp_path / "o1"), "-q"], ["download", str(m), "-o", str(tmp_path / "o2")],
                 ["export", str(m), "-o", str(tmp_path / "x.csv")]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert "error:" in res.output and "Traceback" not in res.output
        assert res.exception is None or isinstance(res.exception, SystemExit)


def test_export_never_overwrites_its_input(tmp_path, monkeypatch):
    from soraprep.manifest import write_manifest

    d = tmp_path / "run"
    m = write_manifest(d / "manifest.parquet", [{"clip_id": "a", "path": "/v/a.mp4", "keep": True},
                                                {"clip_id": "b", "path": os.fsdecode(b"/v/caf\xe9.mp4"), "keep": True}],
                       jsonl=True)
    os.symlink(m, tmp_path / "link.parquet")
    os.link(m, tmp_path / "hard.parquet")
    before = {p: p.read_bytes() for p in (m, m.with_suffix(".jsonl"))}
    monkeypatch.chdir(tmp_path)
    for target in (str(m), "run/../run/manifest.parquet", "link.parquet", "hard.parquet", "run/manifest.jsonl"):
        for fmt in ("opensora-csv", "jsonl"):
            res = CliRunner().invoke(app, ["export", "run/manifest.parquet", "-o", target, "--format", fmt])
            assert res.exit_code == 2, (target, res.output)
            assert "itself" in res.output
    res = CliRunner().invoke(app, ["export", "link.parquet", "-o", str(m)])
    assert res.exit_code == 2
    assert {p: p.read_bytes() for p in before} == before
    # a path that is not UTF-8 cannot be a line of Open-Sora's CSV: named, left out, exit 1
    res = CliRunner().invoke(app, ["export", str(m), "-o", "train.csv"])
    assert res.exit_code == 1, res.output
    assert (tmp_path / "train.csv").read_text().splitlines()[1:] == ["/v/a.mp4,,,,,,,"]
    assert "caf%E9" in res.output
    # JSONL keeps every row, the name escaped as in the manifest, and reads back to the exact name
    res = CliRunner().invoke(app, ["export", str(m), "-o", "all.jsonl", "--format", "jsonl"])
    assert res.exit_code == 0, res.output
    assert "fsbytes:/v/caf%E9.mp4" in (tmp_path / "all.jsonl").read_text(encoding="utf-8")
    assert [r["path"] for r in read_manifest(tmp_path / "all.jsonl")] == ["/v/a.mp4", os.fsdecode(b"/v/caf\xe9.mp4")]


def test_a_local_name_is_never_read_as_an_ffmpeg_protocol(videos, tmp_path, monkeypatch):
    """A file really named ``concat:in/ok.mp4`` is that file, not FFmpeg's concat of ``in/ok.mp4``."""
    (tmp_path / "in").mkdir()
    (tmp_path / "concat:in").mkdir()
    shutil.copy(videos["a"], tmp_path / "in" / "ok.mp4")           # 256x144
    shutil.copy(videos["b"], tmp_path / "concat:in" / "ok.mp4")    # 320x176
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["probe", "concat:in/ok.mp4", "pipe:0", "--json"])
    assert res.exit_code == 1, res.output
    first, second = (json.loads(line) for line in res.stdout.splitlines())
    assert first["width"] == 320  # before: 256, the footage of in/ok.mp4
    assert second["error"]["kind"] == "unsupported_source"


def test_non_utf8_name_survives_a_rerun_from_the_stored_analysis(videos, tmp_path):
    """A rerun with other decisions (here --cut copy -> keyframe) re-cuts from the stored analysis rows; their
    `source` must be the OS path again, not its fsbytes: escape (which curate refuses as a URL)."""
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(videos["a"], os.path.join(os.fsencode(d), NON_UTF8))
    out = tmp_path / "out"
    for cut in ("copy", "keyframe"):
        res = CliRunner().invoke(app, ["curate", str(d), "-o", str(out), "-q", "--no-report", "--cut", cut])
        assert res.exit_code == 0, res.output
        [row] = read_manifest(out / "manifest.parquet")
        assert row["keep"] and not row["error"] and row["cut_mode"] == cut
        assert row["source"] == os.fsdecode(os.path.join(os.fsencode(d), NON_UTF8))
