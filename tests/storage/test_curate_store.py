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
    s3_s3 = curate([prefix], f"{bucket}/runs/s3", workers=1)
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
