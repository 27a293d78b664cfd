"""Manifest captioning over HTTP: which rows are captioned, the columns, cache hits, --retry-failed, spans,
relative paths, zh prompts, and the CLI flags."""

from __future__ import annotations

import json
import socket

import pytest
from typer.testing import CliRunner

from soraprep.caption import Captioning, CaptionSettings, caption_manifest
from soraprep.caption.backends import BackendConfigError
from soraprep.caption.cache import CaptionCache
from soraprep.caption.fake_server import FakeChatServer, FakeServerConfig
from soraprep.cli import app
from soraprep.manifest import read_manifest, write_manifest

KEPT = ["v0-0000", "v1-0000", "v2-0000", "v3-0000"]


def _settings(url: str, **kw) -> CaptionSettings:
    base = dict(backend="openai", model="fake-vlm", base_url=url, frames=4, concurrency=4,
                backend_options={"backoff_base_s": 0.01, "max_attempts": 3})
    base.update(kw)
    return CaptionSettings(**base)


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def test_columns_eligibility_and_cache(manifest, tmp_path):
    out = tmp_path / "sub" / "out.parquet"
    before = {r["clip_id"]: r for r in read_manifest(manifest)}
    with FakeChatServer() as srv:
        s = caption_manifest(manifest, out=out, settings=_settings(srv.url))
        assert srv.requests == 4
        rows = {r["clip_id"]: r for r in read_manifest(out)}
        assert (s.rows, s.eligible, s.captioned, s.cached, s.failed, s.requests) == (6, 4, 4, 0, 0, 4)
        prompts = Captioning(_settings(srv.url)).prompts       # the server counts words of system + user text
        assert s.tokens_in == 4 * (len(f"{prompts.system} {prompts.video_prompt(4)}".split()) + 64 * 4)
        captions = [rows[c]["caption"] for c in KEPT]
        assert len(set(captions)) == 4                                     # one answer per clip, none swapped
        for c in KEPT:
            r = rows[c]
            # boilerplate "The video shows" was stripped by cleaning
            assert r["caption"].startswith("A synthetic test scene. It has 4 frames, tag ")
            assert r["text"] == r["caption"] and r["caption_error"] is None
            assert (r["caption_model"], r["caption_backend"], r["caption_frames"]) == ("fake-vlm", "openai", 4)
            assert len(r["caption_prompt_hash"]) == 16 and r["caption_latency_s"] > 0
            assert r["caption_tokens_out"] == len(f"The video shows a synthetic test scene. It has 4 frames, tag {'x' * 10}.".split())
            assert r["path"] == "../" + before[c]["path"]                  # still points at the same file
        for c in ("dropped", "broken"):                                    # passed through untouched
            assert rows[c]["caption"] is None and rows[c]["text"] is None and rows[c]["caption_model"] is None
            assert rows[c]["keep"] == before[c]["keep"] and rows[c]["error"] == before[c]["error"]
        summary = json.loads((tmp_path / "sub" / "out.parquet.caption-summary.json").read_text())
        assert summary["captioned"] == 4 and summary["requests"] == 4

        # rerun: all from the cache, not one request; identical captions
        s2 = caption_manifest(manifest, out=out, settings=_settings(srv.url))
        assert srv.requests == 4 and (s2.cached, s2.captioned, s2.requests) == (4, 0, 0)
        assert [r["caption"] for r in read_manifest(out) if r["clip_id"] in KEPT] == captions
        # cache gone (moved, deleted): rows already captioned by this model and prompt are kept as they are
        (tmp_path / "sub" / ".soraprep-cache" / "captions.sqlite").unlink()
        s2 = caption_manifest(out, settings=_settings(srv.url))
        assert srv.requests == 4 and (s2.previous, s2.captioned, s2.requests) == (4, 0, 0)
        assert [r["caption"] for r in read_manifest(out) if r["clip_id"] in KEPT] == captions
        # another prompt setting (language) is another cache key
        s3 = caption_manifest(manifest, out=tmp_path / "zh.parquet", settings=_settings(srv.url, lang="zh"))
        assert s3.captioned == 4 and srv.requests == 8
    zh = [r for r in read_manifest(tmp_path / "zh.parquet") if r["clip_id"] in KEPT]
    assert all(r["caption"].startswith("一个合成的测试场景") for r in zh)          # "视频中是" stripped
    assert len({r["caption_prompt_hash"] for r in zh} | {rows[KEPT[0]]["caption_prompt_hash"]}) == 2


def test_failures_are_cached_and_retry_failed_redoes_only_them(manifest, tmp_path):
    out = tmp_path / "out.parquet"
    with FakeChatServer(FakeServerConfig(script=[200, 200, 400, 400])) as srv:     # two clips get a 400
        s = caption_manifest(manifest, out=out, settings=_settings(srv.url, concurrency=1))
    assert (s.captioned, s.failed, s.failures_by_kind) == (2, 2, {"bad_request": 2})
    rows = {r["clip_id"]: r for r in read_manifest(out)}
    failed = [c for c in KEPT if rows[c]["caption_error"]]
    ok_before = {c: rows[c]["caption"] for c in KEPT if c not in failed}
    assert failed == ["v2-0000", "v3-0000"]
    for c in failed:
        assert rows[c]["caption_error"]["stage"] == "caption" and rows[c]["caption_error"]["kind"] == "bad_request"
        assert rows[c]["text"] is None and rows[c]["error"] is None          # curation's error stays clean

    with FakeChatServer() as srv:
        s = caption_manifest(out, settings=_settings(srv.url))                # rerun in place: cached failures
        assert srv.requests == 0 and s.failed == 2
        s = caption_manifest(out, settings=_settings(srv.url, retry_failed=True))
        assert srv.requests == 2 and (s.captioned, s.cached, s.failed) == (2, 2, 0)
    rows = {r["clip_id"]: r for r in read_manifest(out)}
    assert all(rows[c]["caption_error"] is None and rows[c]["caption"] for c in KEPT)
    assert {c: rows[c]["caption"] for c in ok_before} == ok_before


def test_frames_summary_mode_and_separate_summary_model(manifest, tmp_path):
    with FakeChatServer() as vlm, FakeChatServer() as llm:
        s = caption_manifest(manifest, out=tmp_path / "o.parquet", settings=_settings(
            vlm.url, frames=3, mode="frames+summary", summary_model="fake-llm", summary_base_url=llm.url))
        assert vlm.requests == 4 * 3 and llm.requests == 4 and s.requests == 16
    rows = [r for r in read_manifest(tmp_path / "o.parquet") if r["clip_id"] in KEPT]
    assert all(r["caption"].startswith("A synthetic test scene. It has 0 frames") for r in rows)   # the LLM's answer
    assert all(r["caption_model"] == "fake-vlm + fake-llm" and r["caption_frames"] == 3 for r in rows)


def test_span_of_full_source_selects_frames_and_cache_records_them(tmp_path, clips):
    rows = clips(tmp_path, n=1, frames=40)
    src = rows[0]["source"]
    rows = [{**rows[0], "clip_id": f"s{k}", "path": src, "cut_mode": "none", "start_frame": a, "end_frame": b,
             "num_frames": b - a} for k, (a, b) in enumerate([(0, 20), (20, 40)])]
    write_manifest(tmp_path / "m.parquet", rows)
    cache = tmp_path / "c.sqlite"
    with FakeChatServer() as srv:
        caption_manifest(tmp_path / "m.parquet", settings=_settings(srv.url, cache_path=str(cache)))
    recs = CaptionCache(cache)._db().execute("SELECT record FROM captions").fetchall()
    got = sorted(json.loads(r[0])["frame_indices"] for r in recs)
    assert got == [[2, 7, 12, 17], [22, 27, 32, 37]]                      # uniform centres inside each span
    out = read_manifest(tmp_path / "m.parquet")
    assert out[0]["caption"] != out[1]["caption"]


def test_missing_file_and_unreachable_server_fail_soft(tmp_path, clips):
    rows = clips(tmp_path, n=2)
    rows[1]["path"] = "clips/nope.mp4"
    write_manifest(tmp_path / "m.parquet", rows)
    s = caption_manifest(tmp_path / "m.parquet", settings=_settings(_dead_url(), backend_options={
        "backoff_base_s": 0.0, "max_attempts": 2}))
    assert s.failures_by_kind == {"connection_failed": 1, "missing_file": 1}
    out = {r["clip_id"]: r["caption_error"]["kind"] for r in read_manifest(tmp_path / "m.parquet")}
    assert out == {"v0-0000": "connection_failed", "v1-0000": "missing_file"}


def test_config_errors_fail_before_any_work(tmp_path):
    for kw, msg in [({"mode": "dense"}, "unknown mode"), ({"lang": "fr"}, "unknown language"),
                    ({"frames": 0}, "frames must be"), ({"backend": "vllm"}, "unknown backend"),
                    ({"frame_method": "fps"}, "sample_fps")]:
        with pytest.raises(BackendConfigError, match=msg):
            Captioning(_settings("http://127.0.0.1:1/v1", **kw))


def test_cli_flags_exit_codes_and_summary(manifest, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli.parquet"
    with FakeChatServer(FakeServerConfig(script=[400])) as srv:
        args = ["caption", str(manifest), "-o", str(out), "--backend", "openai", "--model", "fake-vlm",
                "--base-url", srv.url, "--frames", "2", "--mode", "video", "--lang", "en", "--concurrency", "1"]
        r = runner.invoke(app, args)
        assert r.exit_code == 1, r.output                   # one row failed (the scripted 400)
        assert "bad_request" in r.output and "captions per second" in r.output
        r = runner.invoke(app, [*args, "--retry-failed"])
        assert r.exit_code == 0, r.output
        assert srv.requests == 5
    rows = [r for r in read_manifest(out) if r["clip_id"] in KEPT]
    assert all(r["caption_frames"] == 2 and r["caption"] for r in rows)
    r = runner.invoke(app, ["caption", str(manifest), "--backend", "openai", "--model", "m", "--mode", "dense"])
    assert r.exit_code == 2 and "unknown mode" in r.output
    r = runner.invoke(app, ["caption", str(tmp_path / "none.parquet"), "--backend", "openai", "--model", "m"])
    assert r.exit_code == 2 and "not found" in r.output


def test_jsonl_manifest_is_captioned_in_place(tmp_path, clips):
    from soraprep.manifest import write_jsonl

    write_jsonl(tmp_path / "m.jsonl", clips(tmp_path, n=2))
    with FakeChatServer() as srv:
        s = caption_manifest(tmp_path / "m.jsonl", settings=_settings(srv.url))
    assert s.captioned == 2
    rows = read_manifest(tmp_path / "m.jsonl")                  # still JSON lines, now with captions
    assert [r["caption_frames"] for r in rows] == [4, 4] and all(r["text"] for r in rows)
    # cleaning options (here: Open-Sora score text) apply to cached raw answers: no new request
    with FakeChatServer() as srv:
        s = caption_manifest(tmp_path / "m.jsonl", settings=_settings(srv.url, score_text=True))
        assert srv.requests == 0 and s.cached == 2
    rows = read_manifest(tmp_path / "m.jsonl")
    assert all(r["caption"].endswith("tag " + r["caption"].split("tag ")[1].split(".")[0] + ". fps: 25.")
               and r["text"] == r["caption"] for r in rows)


def test_import_stays_light():
    import subprocess
    import sys

    code = ("import sys, soraprep.caption, soraprep.caption.stage; "
            "print([m for m in ('torch', 'httpx', 'transformers') if m in sys.modules])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
