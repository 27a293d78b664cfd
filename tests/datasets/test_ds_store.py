"""`ingest` and `download` with their output on a real S3 server (moto): the same rows as a local run, the
files on the store, the source URL kept, and a rerun with a kept scratch folder that fetches nothing."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from ds_server import FakeClock, VideoServer
from typer.testing import CliRunner

from soraprep.cli import app
from soraprep.datasets import ingest
from soraprep.datasets.download import download
from soraprep.datasets.fetch import HttpFetcher, RateLimiter
from soraprep.manifest import read_manifest
from soraprep.manifest_store import read_rows
from soraprep.storage import Store, local_copy
from soraprep.video.io import probe
from soraprep.video.synth import Shot, make_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("src")
    make_video(d / "a.mp4", [Shot(40, seed=1), Shot(35, seed=2)], fps=Fraction(25), width=160, height=120, gop=25)
    make_video(d / "b.mp4", [Shot(50, seed=3)], fps=Fraction(25), width=128, height=96)
    return d


def fetcher() -> HttpFetcher:
    clock = FakeClock()
    return HttpFetcher(limiter=RateLimiter(clock=clock.time, sleep=clock.sleep), timeout_s=10)


def test_ingest_to_a_store_url_writes_the_same_rows(videos, tmp_path, s3_bucket):
    local = ingest(dataset="folder", path=videos, out=tmp_path / "m.parquet")
    remote = ingest(dataset="folder", path=videos, out=f"{s3_bucket}/manifests/m.parquet")
    assert remote.output == f"{s3_bucket}/manifests/m.parquet" and remote.clips == local.clips == 2
    assert read_rows(remote.output) == read_manifest(tmp_path / "m.parquet")
    res = CliRunner().invoke(app, ["ingest", str(videos), "--dataset", "folder", "-o", f"{s3_bucket}/cli.parquet"])
    assert res.exit_code == 0, res.output
    assert Store(s3_bucket).isfile("cli.parquet")
    res = CliRunner().invoke(app, ["ingest", str(videos), "--dataset", "folder", "-o", f"{s3_bucket}/x.parquet",
                                   "--storage-options", "[1, 2]"])
    assert res.exit_code == 2 and "JSON object" in res.output


def test_download_to_a_store_matches_local(videos, tmp_path, s3_bucket):
    with VideoServer() as server:
        server.files["/a.mp4"] = (videos / "a.mp4").read_bytes()
        meta = tmp_path / "internvid.jsonl"
        lines = [(server.url("/a.mp4"), "00:00:00.400", "00:00:01.600"), (server.url("/a.mp4"), "00:00:02.000",
                 "00:00:02.800"), (server.url("/missing.mp4"), "00:00:00.000", "00:00:01.000"),
                 (str(videos / "b.mp4"), "00:00:00.200", "00:00:01.000")]
        meta.write_text("".join(json.dumps({"YoutubeID": u, "Start_timestamp": a, "End_timestamp": b, "Caption": "c",
                                            "Aesthetic_Score": 5.0, "UMT_Score": 0.5}) + "\n" for u, a, b in lines))
        manifest = tmp_path / "m.parquet"
        ingest(dataset="internvid", path=meta, out=manifest)
        download(manifest=manifest, out=tmp_path / "local", cut="exact", fetcher=fetcher())
        out = f"{s3_bucket}/panda"
        report = download(manifest=manifest, out=out, cut="exact", fetcher=fetcher(), concurrency=2)
        want = read_manifest(tmp_path / "local" / "manifest.parquet")
        got = read_rows(f"{out}/manifest.parquet")
        assert report.output == f"{out}/manifest.parquet" and got == want      # same rows, relative paths
        assert [r["error"]["kind"] if r["error"] else None for r in got] == [None, None, "http_404", None]
        assert got[0]["source"].startswith("videos/") and got[0]["source_url"] == server.url("/a.mp4")
        store = Store(out)
        on_store = store.list("")
        assert set(on_store) == {"manifest.parquet", got[0]["source"], got[0]["path"], got[1]["path"], got[3]["path"]}
        for r in (got[0], got[1], got[3]):                                   # each clip holds exactly its span
            with local_copy(store.url(r["path"])) as clip:
                assert probe(clip).num_frames == r["num_frames"]
        # a kept scratch folder makes a rerun resume: nothing fetched or cut again, nothing re-uploaded
        scratch = tmp_path / "scratch"
        download(manifest=manifest, out=f"{s3_bucket}/kept", cut="exact", fetcher=fetcher(), scratch=scratch)
        n = len(server.log)
        again = download(manifest=manifest, out=f"{s3_bucket}/kept", cut="exact", fetcher=fetcher(), scratch=scratch)
        assert (again.downloaded, again.clips_cut, again.clips_skipped) == (0, 0, 3)
        assert len(server.log) == n + 1                                      # only the 404 is asked again
        assert read_rows(f"{s3_bucket}/kept/manifest.parquet") == want
        # the CLI, with the input manifest on the store too
        Store(s3_bucket).put_file(manifest, "in/m.parquet")
        res = CliRunner().invoke(app, ["download", f"{s3_bucket}/in/m.parquet", "-o", f"{s3_bucket}/cli",
                                       "--retries", "0"])
        assert res.exit_code == 1, res.output     # the 404 row is an error row
        assert read_rows(f"{s3_bucket}/cli/manifest.parquet") == want
