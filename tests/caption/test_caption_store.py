"""`soraprep caption` on a manifest and clips that live on a real S3 server (moto): clips staged to scratch for
frame reading, the captioned manifest written back to the store, the same rows as a local run."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from soraprep.caption import CaptionSettings, caption_manifest
from soraprep.caption.fake_server import FakeChatServer
from soraprep.caption.run import CACHE_ENV
from soraprep.cli import app
from soraprep.manifest import read_manifest
from soraprep.manifest_store import read_rows
from soraprep.storage import Store

VARIES = ("caption_latency_s",)


def _settings(url: str, **kw) -> CaptionSettings:
    return CaptionSettings(backend="openai", model="fake-vlm", base_url=url, frames=4, concurrency=4,
                           backend_options={"backoff_base_s": 0.01, "max_attempts": 3}, **kw)


def _same(a: list[dict], b: list[dict]) -> bool:
    return [{k: v for k, v in r.items() if k not in VARIES} for r in a] == \
           [{k: v for k, v in r.items() if k not in VARIES} for r in b]


def test_caption_a_manifest_on_the_store_like_a_local_one(manifest, tmp_path, s3_bucket, monkeypatch):
    run = Store(f"{s3_bucket}/runs/r1")
    for p in sorted(manifest.parent.rglob("*")):
        if p.is_file():
            run.put_file(p, p.relative_to(manifest.parent).as_posix())
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "remote-cache.sqlite"))
    with FakeChatServer() as srv:
        local = caption_manifest(manifest, out=manifest.parent / "local.parquet",
                                 settings=_settings(srv.url, cache_path=str(tmp_path / "local-cache.sqlite")))
        remote = caption_manifest(run.url("manifest.parquet"), settings=_settings(srv.url))   # in place, on S3
        assert srv.requests == 8
        assert (remote.captioned, remote.failed) == (local.captioned, local.failed) == (4, 0)
        want = read_manifest(manifest.parent / "local.parquet")
        assert _same(read_rows(run.url("manifest.parquet")), want)
        assert json.loads(run.read_text("manifest.parquet.caption-summary.json"))["captioned"] == 4
        # into another folder on the store: paths become URLs of the same clips; then the CLI, from the cache
        again = caption_manifest(run.url("manifest.parquet"), out=f"{s3_bucket}/captioned/m.parquet",
                                 settings=_settings(srv.url))
        assert again.cached == 4 and srv.requests == 8
        moved = read_rows(f"{s3_bucket}/captioned/m.parquet")
        assert [r["path"] for r in moved] == [run.url(r["path"]) for r in want]
        res = CliRunner().invoke(app, ["caption", run.url("manifest.parquet"), "-o", f"{s3_bucket}/cli.parquet",
                                       "--backend", "openai", "--model", "fake-vlm", "--base-url", srv.url,
                                       "--frames", "4", "--storage-options", "{}"])
        assert res.exit_code == 0, res.output
        assert srv.requests == 8
    # a clip missing on the store is that row's caption_error, not a crash
    run.delete(want[0]["path"])
    with FakeChatServer() as srv:
        monkeypatch.setenv(CACHE_ENV, str(tmp_path / "fresh.sqlite"))
        s = caption_manifest(run.url("manifest.parquet"), out=run.url("m2.parquet"), settings=_settings(srv.url))
    rows = {r["clip_id"]: r for r in read_rows(run.url("m2.parquet"))}
    assert s.failed == 1 and rows[want[0]["clip_id"]]["caption_error"]["kind"] == "missing_file"
