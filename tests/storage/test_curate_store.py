"""`soraprep curate` from and to object storage: a real S3 server (moto), the real s3fs client stack.

The same inputs give the same manifest rows whether they are read from local files or the store and
whether OUT is a folder or a store prefix; clips on the store hold the frames their rows say; a run killed
with SIGKILL resumes to the same manifest; a changed threshold is re-decided on the store without the
sources; one run per store OUT.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from soraprep.cli import app
from soraprep.curate.inputs import collect_units
from soraprep.curate.lock import OutInUseError, out_lock
from soraprep.curate.pipeline import curate
from soraprep.manifest import table_rows
from soraprep.storage import Store
from soraprep.video.io import decode

VIDEOS = ("cuts.mp4", "kinds.mp4")


@pytest.fixture(scope="module")
def bucket(s3_server):
    """One bucket for the module (the runs below share their inputs)."""
    import s3fs

    name = f"curate-store-{uuid.uuid4().hex[:8]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(name)
    return f"s3://{name}"


@pytest.fixture(scope="module")
def inputs(media, bucket, tmp_path_factory):
    """The same videos (and one corrupt file) in a local folder and under an S3 prefix."""
    local = tmp_path_factory.mktemp("in")
    for name in VIDEOS:
        shutil.copy(media[name], local / name)
    (local / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    store = Store(f"{bucket}/videos")
    for p in sorted(local.iterdir()):
        store.put_file(p, p.name)
    return local, store.root + "/"


def _rows_of_store(out: str) -> list[dict]:
    import pyarrow.parquet as pq

    return table_rows(pq.read_table(io.BytesIO(Store(out).read_bytes("manifest.parquet"))))


def _comparable(rows: list[dict]) -> list[dict]:
    """Rows without what names where they were read from or written to: source / path prefixes and the
    ids derived from a source's location (stem + hash of its path or URL)."""
    out = []
    for r in rows:
        vid = r["video_id"]
        stem = vid.rsplit("-", 1)[0]
        c = {}
        for k, v in r.items():
            if isinstance(v, str):
                v = v.replace(vid, stem)
            if k == "source":
                v = v.rsplit("/", 1)[-1]
            elif k == "path" and v and not v.startswith("clips/"):
                v = v.rsplit("/", 1)[-1]
            elif k == "error" and v:
                v = {"stage": v["stage"], "kind": v["kind"]}
            c[k] = v
        out.append(c)
    return sorted(out, key=lambda r: (r["source"], r["clip_id"]))


@pytest.fixture(scope="module")
def runs(inputs, bucket, tmp_path_factory):
    local, prefix = inputs
    base = tmp_path_factory.mktemp("runs")
    ref = curate([str(local)], base / "local", workers=1)
    s3_s3 = curate([prefix], f"{bucket}/runs/s3", workers=2)  # two workers publish concurrently
    s3_local = curate([prefix], base / "s3-local", workers=1, report=False)
    return ref, s3_s3, s3_local


def test_same_rows_wherever_inputs_and_out_live(runs, bucket):
    ref, s3_s3, s3_local = runs
    assert ref.kept >= 4 and ref.errors == 1  # the corrupt file is an error row; the run went on
    assert _comparable(s3_s3.rows) == _comparable(ref.rows)
    assert _comparable(s3_local.rows) == _comparable(ref.rows)
    assert _comparable(_rows_of_store(f"{bucket}/runs/s3")) == _comparable(ref.rows)
    assert all(r["source"].startswith(f"{bucket}/videos/") for r in s3_s3.rows)
    broken = [r for r in s3_s3.rows if r.get("error")]
    assert broken[0]["error"]["stage"] == "probe" and "/tmp" not in broken[0]["error"]["message"]
    keys = Store(f"{bucket}/runs/s3").list()
    for name in ("manifest.parquet", "manifest.jsonl", "run.json", "report.html", ".soraprep/recipe.json"):
        assert name in keys
    assert ".soraprep/lock" not in keys  # released
    assert "data:image/jpeg;base64" in Store(f"{bucket}/runs/s3").read_text("report.html")  # thumbnails


def test_clips_on_the_store_hold_the_frames_their_rows_say(runs, bucket, tmp_path):
    _, s3_s3, _ = runs
    out = Store(f"{bucket}/runs/s3")
    keys = out.list("clips")
    kept = [r for r in s3_s3.rows if r.get("keep")]
    assert sorted(r["path"] for r in kept) == sorted(keys)  # no orphan, none missing
    for r in kept:
        local = out.get_file(r["path"], tmp_path / r["path"])
        assert sum(1 for _ in decode(local, size=32, fmt="gray")) == r["num_frames"]
    thumbs = out.list("thumbs")
    assert len(thumbs) == len([r for r in s3_s3.rows if not r.get("error")])


def test_kill_9_mid_run_on_a_store_out_then_rerun_gives_the_same_manifest(runs, inputs, bucket):
    _, s3_s3, _ = runs
    _, prefix = inputs
    out = Store(f"{bucket}/runs/killed")
    cmd = [sys.executable, "-m", "soraprep.cli", "curate", prefix, "-o", out.root, "-q", "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # env: the S3 server
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not out.list(".soraprep/units"):
        time.sleep(0.02)
    proc.kill()  # SIGKILL mid-run: its lock object stays behind
    proc.wait()
    done = len(out.list(".soraprep/units"))
    assert 1 <= done < 3, "the kill should land mid-run"
    assert not out.exists("manifest.parquet") and out.exists(".soraprep/lock")
    res = subprocess.run(cmd, capture_output=True)  # takes over the dead run's lock
    assert res.returncode == 1, res.stderr.decode()  # 1: the corrupt file's error row
    rows = _rows_of_store(out.root)
    assert rows == _rows_of_store(f"{bucket}/runs/s3")  # same sources, same relative clip paths
    assert len({r["clip_id"] for r in rows}) == len(rows)
    assert sorted(out.list("clips")) == sorted(Store(f"{bucket}/runs/s3").list("clips"))
    assert not out.exists(".soraprep/lock")


def test_rerun_with_a_changed_threshold_re_decides_on_the_store_without_the_sources(media, bucket, tmp_path):
    videos = Store(f"{bucket}/rethreshold/videos")
    videos.put_file(media["kinds.mp4"], "kinds.mp4")
    out = Store(f"{bucket}/rethreshold/out")
    first = curate([videos.root], out.root, workers=1, report=False)
    kept = sorted(r["motion_score"] for r in first.rows if r.get("keep"))
    assert len(kept) >= 2
    recipe = tmp_path / "strict.yaml"
    recipe.write_text(f"filter: {{motion_score: {{min: {(kept[0] + kept[1]) / 2}}}}}\n")
    videos.write_bytes("kinds.mp4", b"not a video any more")  # re-deciding must not read the source
    unit = next(iter(out.list(".soraprep/units")))
    out.copy(unit, unit.replace("/units/", "/stale/"))  # as if a reconcile was killed between copy and delete
    again = curate([videos.root], out.root, recipe=recipe, workers=1, report=False)
    assert again.redone == {"redecided": 1} and not again.errors
    now_kept = [r for r in again.rows if r.get("keep")]
    assert len(now_kept) == len(kept) - 1
    assert sorted(out.list("clips")) == sorted(r["path"] for r in now_kept)  # the dropped clip's file is gone
    assert not out.list(".soraprep/stale")
    assert [r["clip_id"] for r in again.rows] == [r["clip_id"] for r in first.rows]


def test_one_run_per_store_out(inputs, bucket):
    _, prefix = inputs
    out = f"{bucket}/runs/locked"
    with out_lock(out):
        with pytest.raises(OutInUseError, match="in use by pid"):
            curate([prefix], out, workers=1)
        res = CliRunner().invoke(app, ["curate", prefix, "-o", out, "-q"])
        assert res.exit_code == 2 and "in use" in res.output
    assert not Store(out).exists(".soraprep/lock")


@pytest.mark.parametrize("options", ["{bad", "[1]", "/nonexistent/options.json"])
def test_bad_storage_options_exit_2(options, tmp_path):
    res = CliRunner().invoke(app, ["curate", str(tmp_path), "-o", str(tmp_path / "out"), "--storage-options", options])
    assert res.exit_code == 2 and "--storage-options" in res.output
    assert len(res.output.strip().splitlines()) <= 2  # one message (the console may wrap it)


def test_storage_options_reach_the_store_and_the_workers(inputs, bucket, s3_server, tmp_path, monkeypatch):
    _, prefix = inputs
    Store(bucket).copy("videos/cuts.mp4", "opts/in/cuts.mp4")
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the option names the server now (workers inherit no env)
    options = {"endpoint_url": s3_server}
    units = collect_units([prefix], storage_options=options)
    assert [Path(u["source"]).name for u in units] == ["broken.mp4", *VIDEOS]
    opts = tmp_path / "opts.json"
    opts.write_text(json.dumps(options))
    res = CliRunner().invoke(app, ["curate", f"{bucket}/opts/in/", "-o", f"{bucket}/opts/out", "-q", "--no-report",
                                   "--storage-options", str(opts)])
    assert res.exit_code == 0, res.output
    assert Store(f"{bucket}/opts/out", options).list("clips")


def test_units_from_a_store_prefix_and_a_store_manifest(media, s3_bucket, tmp_path):
    from soraprep.curate.inputs import InputError
    from soraprep.manifest import write_manifest

    store = Store(s3_bucket)
    for key in ("in/a.mp4", "in/sub/b.MOV", "in/notes.txt", "in/.soraprep-tmp-1-x.mp4", "in/.partial-c.mp4",
                "in/oldrun/clips/v/c.mp4", "in/oldrun/.soraprep/recipe.json", "in/out/clips/d.mp4"):
        store.write_bytes(key, b"x")
    units = collect_units([f"{s3_bucket}/in/"], skip_dirs=(f"{s3_bucket}/in/out",))
    assert [u["source"] for u in units] == [f"{s3_bucket}/in/a.mp4", f"{s3_bucket}/in/sub/b.MOV"]
    again = collect_units([f"{s3_bucket}/in"])  # without the slash: the same prefix, the same keys and ids
    assert [(u["_key"], u["video_id"]) for u in again if "/out/" not in u["source"]] == \
        [(u["_key"], u["video_id"]) for u in units]
    assert collect_units([f"{s3_bucket}/in/a.mp4"])[0]["_key"] == units[0]["_key"]  # one object
    gone = collect_units([f"{s3_bucket}/nothing/"])
    assert gone[0]["error"]["kind"] == "not_found"
    with pytest.raises(InputError, match="holds a soraprep run"):
        collect_units([f"{s3_bucket}/in/oldrun"])
    with pytest.raises(InputError, match="output"):
        collect_units([f"{s3_bucket}/in/out"], skip_dirs=(f"{s3_bucket}/in/out",))
    write_manifest(tmp_path / "m.parquet", [
        {"source": "a.mp4", "clip_id": "A"}, {"source": "sub/b.MOV", "clip_id": "B", "start_s": 0.0, "end_s": 1.0},
        {"source": "http://example.com/v.mp4", "clip_id": "C"}, {"source": "concat:a.mp4|b.mp4", "clip_id": "D"},
        {"source": f"{s3_bucket}/in/a.mp4", "clip_id": "E"}])
    store.put_file(tmp_path / "m.parquet", "in/m.parquet")
    rows = {u["clip_id"] if "clip_id" in u else u["_base_id"]: u for u in collect_units([f"{s3_bucket}/in/m.parquet"])}
    assert rows["A"]["source"] == f"{s3_bucket}/in/a.mp4" and rows["B"]["source"] == f"{s3_bucket}/in/sub/b.MOV"
    assert rows["B"]["_span_s"] == (0.0, 1.0) and rows["E"]["source"] == f"{s3_bucket}/in/a.mp4"
    assert rows["C"]["error"]["kind"] == rows["D"]["error"]["kind"] == "unsupported_source"
    assert collect_units([f"{s3_bucket}/in/missing.parquet"])[0]["error"]["kind"] == "not_found"


def test_staged_sources_fetch_once_name_the_url_again_and_clean_up(s3_bucket, tmp_path):
    from soraprep.curate.runners.sources import StagedSources

    store = Store(s3_bucket)
    store.write_bytes("v/a.mp4", b"footage")
    url, gone = store.url("v/a.mp4"), store.url("v/gone.mp4")
    rows = [{"source": url, "path": url}, {"source": url}, {"source": gone}, {"source": str(tmp_path / "local.mp4")}]
    sources = StagedSources(scratch=tmp_path / "scratch")
    sources.localize(rows, "probe")
    local = Path(rows[0]["source"])
    assert local.read_bytes() == b"footage" and rows[1]["source"] == str(local) == rows[0]["path"]  # one copy
    assert rows[2]["error"] == {"stage": "probe", "kind": "not_found", "message": f"no such object: {gone}"}
    assert rows[3]["source"] == str(tmp_path / "local.mp4")  # local sources are used in place
    rows[1]["error"] = {"stage": "probe", "kind": "x", "message": f"{local}: invalid data"}
    sources.restore(rows)
    assert rows[0]["source"] == rows[0]["path"] == rows[1]["source"] == url
    assert rows[1]["error"]["message"] == f"{url}: invalid data"
    sources.close()
    assert not local.exists()


def test_an_unreachable_store_out_is_one_line_exit_2(inputs, tmp_path):
    local, _ = inputs
    res = CliRunner().invoke(app, ["curate", str(local), "-o", "s3://no-such-bucket-h1x/r1", "-q",
                                   "--storage-options", json.dumps({"endpoint_url": "http://127.0.0.1:9", "retries": 1,
                                               "config_kwargs": {"retries": {"max_attempts": 1}}})])
    assert res.exit_code == 2 and "cannot create the lock object" in res.output, res.output


def test_scratch_left_by_killed_processes_is_swept_live_ones_kept(tmp_path):
    """A run or Ray actor killed with -9 cannot remove its scratch folder; the next one on the machine does,
    and never touches the folder of a process that still runs."""
    from soraprep.curate.runners.workspace import scratch_prefix, sweep_scratch

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = [tmp_path / f"soraprep-scratch-{dead.pid}-abc", tmp_path / f"soraprep-ray-decision-{dead.pid}-x",
            tmp_path / f"soraprep-worker-{dead.pid}"]
    kept = [tmp_path / (scratch_prefix("scratch") + "mine"), tmp_path / f"soraprep-export-{dead.pid}-y",
            tmp_path / "other"]
    for d in gone + kept:
        (d / "sources").mkdir(parents=True)
        (d / "sources" / "v.mp4").write_bytes(b"x")
    assert sorted(sweep_scratch(tmp_path)) == sorted(gone)
    assert all(d.exists() for d in kept) and not any(d.exists() for d in gone)
