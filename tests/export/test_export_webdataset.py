"""WebDataset and Parquet exports on real clips: read back with the `webdataset` library and pyarrow.dataset,
every kept clip exactly once with its bytes and row, shard sizes as planned, deterministic bytes, reruns,
and the same shards from and to a real S3 server (moto)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

from soraprep.cli import app
from soraprep.export import export_parquet, export_webdataset, parse_bytes, sample_key
from soraprep.export.webdataset import member_bytes, tar_bytes
from soraprep.manifest import read_manifest, write_manifest
from soraprep.storage import Store
from soraprep.video.synth import Shot, make_video

wds = pytest.importorskip("webdataset")

IDS = ["v0-0000", "v1-0000", "odd.id/with spaces-0001", "v3-0000", "v4-0000", "v5-0000", "v6-0000"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run folder: 7 clips of growing size (one id with a dot, a slash and spaces), one dropped, one failed row."""
    d = tmp_path_factory.mktemp("run")
    rows = []
    for k, cid in enumerate(IDS):
        p = d / "clips" / f"c{k}.mp4"
        p.parent.mkdir(parents=True, exist_ok=True)
        make_video(p, [Shot(8 + 6 * k, seed=k)], fps=Fraction(25), width=64, height=48)
        rows.append({"clip_id": cid, "video_id": f"v{k}", "source": f"/videos/v{k}.mp4", "path": f"clips/c{k}.mp4",
                     "text": f"a caption {k}" if k % 3 else None, "num_frames": 8 + 6 * k, "height": 48, "width": 64,
                     "fps": 25.0, "start_s": 0.0, "end_s": (8 + 6 * k) / 25, "keep": k != 4,
                     "filter_reason": "too dark" if k == 4 else None, "bucket": "48x64x8", "motion_score": 0.5 + k,
                     "error": None})
    rows.append({"clip_id": "failed", "video_id": "v9", "path": None, "keep": None,
                 "error": {"stage": "probe", "kind": "corrupt", "message": "bad"}})
    write_manifest(d / "manifest.parquet", rows)
    return d


def kept(run: Path) -> dict[str, dict]:
    return {r["clip_id"]: r for r in read_manifest(run / "manifest.parquet") if r["keep"] and not r["error"]}


def read_shards(folder: Path) -> list[dict]:
    urls = [str(p) for p in sorted(folder.glob("shard-*.tar"))]
    return list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))


def test_keys_are_webdataset_safe_and_distinct():
    keys = [sample_key(c) for c in ["v0-0000", "a.b", "a_2eb", "a+2eb", "x/y", "é", "a" * 300, "a" * 299 + "b"]]
    assert keys[0] == "v0-0000" and len(set(keys)) == len(keys)
    assert all("." not in k and "/" not in k and len(k) <= 80 for k in keys)
    assert parse_bytes("1GiB") == 2**30 and parse_bytes("500MB") == 500_000_000 and parse_bytes("4096") == 4096
    with pytest.raises(ValueError):
        parse_bytes("lots")


def test_every_kept_clip_once_with_its_bytes_row_and_caption(run, tmp_path):
    want = kept(run)
    limit = 40_000
    res = export_webdataset(run / "manifest.parquet", tmp_path / "a", shard_size=limit)
    samples = read_shards(tmp_path / "a")
    got = [json.loads(s["json"])["clip_id"] for s in samples]
    assert sorted(got) == sorted(want) and len(got) == len(set(got))        # exactly once each
    assert got == [c for c in IDS if c in want]                              # manifest order
    for s in samples:
        row = json.loads(s["json"])
        assert row == want[row["clip_id"]]                                   # the manifest row, unchanged
        assert s["mp4"] == (run / row["path"]).read_bytes()                 # the clip file's bytes
        assert s["__key__"] == sample_key(row["clip_id"])
        assert s.get("txt", b"").decode() == (row["text"] or "")
    assert res.error_count == 0 and res.samples == len(want)
    index = json.loads((tmp_path / "a" / "shards.json").read_text())
    assert index["num_samples"] == len(want) and index["num_shards"] == len(res.shards) > 1
    for entry in index["shards"]:
        size = (tmp_path / "a" / entry["name"]).stat().st_size
        assert size == entry["bytes"]
        assert size <= limit or entry["samples"] == 1                       # only a lone big sample exceeds it
    assert index["total_bytes"] == sum(p.stat().st_size for p in (tmp_path / "a").glob("shard-*.tar"))
    # a shard is full: the next sample would not have fitted (the planner's sizes are the tar's sizes)
    names = [e["name"] for e in index["shards"]]
    first = [s for s in samples if s["__url__"].endswith(names[0])]
    nxt = [s for s in samples if s["__url__"].endswith(names[1])][0]
    members = sum(member_bytes(len(s["mp4"])) + member_bytes(len(s["json"])) + member_bytes(len(s.get("txt", b"")))
                  * ("txt" in s) for s in first)
    extra = member_bytes(len(nxt["mp4"])) + member_bytes(len(nxt["json"])) + member_bytes(len(nxt.get("txt", b""))) \
        * ("txt" in nxt)
    assert tar_bytes(members) == index["shards"][0]["bytes"] and tar_bytes(members + extra) > limit
    # deterministic bytes: a second export elsewhere is byte-identical
    export_webdataset(run / "manifest.parquet", tmp_path / "b", shard_size=limit)
    for entry in index["shards"]:
        assert (tmp_path / "a" / entry["name"]).read_bytes() == (tmp_path / "b" / entry["name"]).read_bytes()


def test_shard_samples_all_rows_and_samples_larger_than_a_shard(run, tmp_path):
    res = export_webdataset(run / "manifest.parquet", tmp_path / "one", shard_size=1)
    assert [e["samples"] for e in res.shards] == [1] * len(kept(run))        # each alone, none lost
    res = export_webdataset(run / "manifest.parquet", tmp_path / "three", shard_samples=3, include="all")
    assert [e["samples"] for e in res.shards] == [3, 3, 1]                  # 7 rows without an error
    assert {json.loads(s["json"])["clip_id"] for s in read_shards(tmp_path / "three")} == set(IDS)


def test_rerun_skips_complete_shards_rewrites_changed_and_removes_stale(run, tmp_path):
    out = tmp_path / "w"
    first = export_webdataset(run / "manifest.parquet", out, shard_size=1)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")}
    again = export_webdataset(run / "manifest.parquet", out, shard_size=1)
    assert (again.written, again.reused) == (0, len(first.shards))
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")} == before
    (out / "shard-000001.tar").write_bytes(b"cut short")                   # a damaged shard is redone
    again = export_webdataset(run / "manifest.parquet", out, shard_size=1)
    assert (again.written, again.reused) == (1, len(first.shards) - 1)
    fewer = export_webdataset(run / "manifest.parquet", out, shard_samples=4, shard_size=2**30)
    assert len(fewer.shards) == 2 and fewer.removed == len(first.shards) - 2
    assert sorted(p.name for p in out.glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar"]
    assert sorted(json.loads(s["json"])["clip_id"] for s in read_shards(out)) == sorted(kept(run))
    assert not [p for p in out.rglob("*") if ".soraprep-tmp" in p.name]


def test_webdataset_from_and_to_s3_matches_local(run, tmp_path, s3_bucket):
    src = Store(f"{s3_bucket}/runs/r1")
    for p in sorted(run.rglob("*")):
        if p.is_file():
            src.put_file(p, p.relative_to(run).as_posix())
    export_webdataset(run / "manifest.parquet", tmp_path / "local", shard_size=40_000)
    res = export_webdataset(f"{s3_bucket}/runs/r1", f"{s3_bucket}/shards", shard_size=40_000, workers=3)
    out = Store(f"{s3_bucket}/shards")
    listing = out.list("")
    assert sorted(k for k in listing if k.endswith(".tar")) == sorted(p.name for p in (tmp_path / "local").glob("*.tar"))
    for name in (e["name"] for e in res.shards):
        assert out.read_bytes(name) == (tmp_path / "local" / name).read_bytes()
    assert json.loads(out.read_text("shards.json"))["num_samples"] == len(kept(run))
    assert set(listing) == {*(e["name"] for e in res.shards), "shards.json",
                            *(f".soraprep/shards/{e['name']}.json" for e in res.shards)}
    again = export_webdataset(f"{s3_bucket}/runs/r1/manifest.parquet", f"{s3_bucket}/shards", shard_size=40_000)
    assert again.written == 0 and again.reused == len(res.shards)


def test_parquet_dataset_equals_manifest_rows(run, tmp_path, s3_bucket):
    want = [dict(r, path=str(run / r["path"])) for r in read_manifest(run / "manifest.parquet")
            if r["keep"] and not r["error"]]
    res = export_parquet(run / "manifest.parquet", tmp_path / "pq", rows_per_part=4)
    assert [p["rows"] for p in res.parts] == [4, 2]
    assert ds.dataset(tmp_path / "pq").to_table().to_pylist() == want
    everything = export_parquet(run / "manifest.parquet", tmp_path / "all", include="all", rows_per_part=100)
    assert everything.rows == 8 and ds.dataset(tmp_path / "all").to_table().num_rows == 8
    # from and to the store: paths become URLs of the clips on the store
    src = Store(f"{s3_bucket}/r1")
    src.put_file(run / "manifest.parquet", "manifest.parquet")
    export_parquet(f"{s3_bucket}/r1/manifest.parquet", f"{s3_bucket}/pq", rows_per_part=4)
    store = Store(f"{s3_bucket}/pq")
    table = ds.dataset(store.url("").split("://", 1)[1], filesystem=store.fs, format="parquet").to_table()
    assert table.to_pylist() == [dict(r, path=f"{s3_bucket}/r1/{Path(r['path']).relative_to(run).as_posix()}")
                                 for r in want]


def test_cli_webdataset_parquet_and_refusals(run, tmp_path):
    r = CliRunner().invoke(app, ["export", str(run / "manifest.parquet"), "--format", "webdataset",
                                 "-o", str(tmp_path / "s"), "--shard-size", "40kB"])
    assert r.exit_code == 0, r.output
    assert len(read_shards(tmp_path / "s")) == len(kept(run))
    r = CliRunner().invoke(app, ["export", str(run), "--format", "parquet", "-o", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    assert ds.dataset(tmp_path / "p").to_table().num_rows == len(kept(run))
    r = CliRunner().invoke(app, ["export", str(run / "manifest.parquet"), "--format", "webdataset", "-o", str(tmp_path),
                                 "--shard-size", "big"])
    assert r.exit_code == 2 and "--shard-size" in r.output
    r = CliRunner().invoke(app, ["export", str(run / "manifest.parquet"), "--format", "parquet", "-o", str(run)])
    assert r.exit_code == 2 and "where the manifest lives" in r.output
    # a kept row whose clip file is missing: named, the rest exported, exit 1
    rows = read_manifest(run / "manifest.parquet")
    rows[0]["path"] = "clips/gone.mp4"
    write_manifest(tmp_path / "m.parquet", [dict(r, path=str(run / r["path"]) if r["path"] else None) for r in rows])
    r = CliRunner().invoke(app, ["export", str(tmp_path / "m.parquet"), "--format", "webdataset", "-o",
                                 str(tmp_path / "m")])
    assert r.exit_code == 1 and "gone.mp4" in r.output
    assert len(read_shards(tmp_path / "m")) == len(kept(run)) - 1


def test_run_folder_with_a_manifest_dataset_and_csv_on_the_store(run, tmp_path, s3_bucket):
    """A run folder holding the manifest as a Parquet dataset (OUT/manifest/part-*.parquet, paths relative to
    OUT) exports like the single file; Open-Sora CSV and JSONL read from and write to the store too."""
    import pyarrow.parquet as pq

    from soraprep.manifest import rows_to_table

    rows = read_manifest(run / "manifest.parquet")
    alt = tmp_path / "out"
    (alt / "manifest").mkdir(parents=True)
    (alt / "clips").symlink_to(run / "clips")
    pq.write_table(rows_to_table(rows[:3]), alt / "manifest" / "part-00000.parquet")
    pq.write_table(rows_to_table(rows[3:]), alt / "manifest" / "part-00001.parquet")
    (alt / "manifest" / "_index.json").write_text("{}")
    export_webdataset(alt, tmp_path / "from-dataset", shard_size=40_000)
    export_webdataset(run / "manifest.parquet", tmp_path / "from-file", shard_size=40_000)
    tars = sorted(p.name for p in (tmp_path / "from-file").glob("*.tar"))
    assert tars == sorted(p.name for p in (tmp_path / "from-dataset").glob("*.tar"))
    for name in tars:
        assert (tmp_path / "from-file" / name).read_bytes() == (tmp_path / "from-dataset" / name).read_bytes()
    src = Store(f"{s3_bucket}/r1")
    src.put_file(run / "manifest.parquet", "manifest.parquet")
    r = CliRunner().invoke(app, ["export", src.url(""), "-o", f"{s3_bucket}/train.csv"])
    assert r.exit_code == 0, r.output
    lines = Store(s3_bucket).read_text("train.csv").splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == [src.url(r["path"]) for r in kept(run).values()]
    r = CliRunner().invoke(app, ["export", src.url("manifest.parquet"), "-o", str(tmp_path / "k.jsonl"),
                                 "--format", "jsonl"])
    assert r.exit_code == 0, r.output
    assert [x["clip_id"] for x in read_manifest(tmp_path / "k.jsonl")] == list(kept(run))
