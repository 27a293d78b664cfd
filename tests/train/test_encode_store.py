"""`soraprep encode` from a manifest on a real S3 server (moto) to latents on the store: clips staged for
decoding, shards uploaded (.pt before its .json), the same tensors as a local encode, and resume."""

from __future__ import annotations

import json
from fractions import Fraction

import torch
from typer.testing import CliRunner

from soraprep.cli import app
from soraprep.manifest import write_manifest
from soraprep.storage import Store, local_copy
from soraprep.train.latents import encode
from soraprep.video.synth import Shot, make_video


def test_encode_from_and_to_the_store_matches_local(tmp_path, s3_bucket):
    run = tmp_path / "run"
    rows = []
    for k in range(3):
        make_video(run / "clips" / f"c{k}.mp4", [Shot(12, seed=k)], fps=Fraction(25), width=48, height=32)
        rows.append({"clip_id": f"v{k}-0000", "path": f"clips/c{k}.mp4", "cut_mode": "exact", "num_frames": 12,
                     "width": 48, "height": 32, "keep": True, "error": None})
    write_manifest(run / "manifest.parquet", rows)
    store = Store(f"{s3_bucket}/r1")
    for p in sorted(run.rglob("*")):
        if p.is_file():
            store.put_file(p, p.relative_to(run).as_posix())
    kw = dict(vae="none", frames=4, size=(16, 16), shard_size=2)
    local = encode(run / "manifest.parquet", tmp_path / "lat", **kw)
    remote = encode(store.url("manifest.parquet"), f"{s3_bucket}/lat", **kw)
    assert (remote.encoded, remote.reused) == (local.encoded, local.reused) == (3, 0)
    out = Store(f"{s3_bucket}/lat")
    assert set(out.list("")) == {p.name for p in (tmp_path / "lat").iterdir()}
    for shard in local.index["shards"]:
        with local_copy(out.url(shard["file"])) as f:
            got = torch.load(f, weights_only=True)
        want = torch.load(tmp_path / "lat" / shard["file"], weights_only=True)
        assert torch.equal(got["latents"], want["latents"]) and got["clip_ids"] == want["clip_ids"]
    index = json.loads(out.read_text("index.json"))
    assert index["manifest"] == store.url("manifest.parquet") and index["num_samples"] == 3
    # resume: a shard whose .json never landed is redone, the other reused
    out.delete("shard-4x16x16-00001.json")
    again = encode(store.url("manifest.parquet"), f"{s3_bucket}/lat", **kw)
    assert (again.encoded, again.reused) == (1, 2)
    res = CliRunner().invoke(app, ["encode", str(store.url("")), "-o", f"{s3_bucket}/cli", "--vae", "none",
                                   "--frames", "4", "--size", "16x16"])
    assert res.exit_code == 0, res.output
    assert json.loads(Store(f"{s3_bucket}/cli").read_text("index.json"))["num_samples"] == 3
