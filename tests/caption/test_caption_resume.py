"""Crash safety with real processes: the captioning client killed with SIGKILL mid-run, and the server
killed mid-run; the resumed run loses nothing and asks for nothing twice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from soraprep.caption import CaptionSettings, caption_manifest
from soraprep.manifest import read_manifest, write_manifest

N = 10


def _start_server(tmp: Path, name: str, *args: str) -> tuple[subprocess.Popen, str, Path]:
    port_file, log = tmp / f"{name}.port", tmp / f"{name}.log"
    proc = subprocess.Popen([sys.executable, "-m", "soraprep.caption.fake_server", "--port", "0", "--port-file",
                             str(port_file), "--log", str(log), *args], stderr=subprocess.DEVNULL)
    for _ in range(200):
        if port_file.exists():
            return proc, f"http://127.0.0.1:{port_file.read_text()}/v1", log
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("fake server did not start")


def _cached(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return c.execute("SELECT COUNT(*) FROM captions").fetchone()[0]
    except sqlite3.OperationalError:   # the table is not created yet
        return 0


def _wait_for(pred, timeout: float = 30.0) -> None:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)


def _served(log: Path) -> list[dict]:
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def test_client_killed_with_sigkill_then_resumed(tmp_path, clips):
    write_manifest(tmp_path / "m.parquet", clips(tmp_path, n=N, frames=12))
    server, url, log = _start_server(tmp_path, "srv", "--latency", "0.25")
    out = tmp_path / "out" / "captioned.parquet"
    db = out.parent / ".soraprep-cache" / "captions.sqlite"
    try:
        cmd = [sys.executable, "-m", "soraprep.cli", "caption", str(tmp_path / "m.parquet"), "-o", str(out),
               "--backend", "openai", "--model", "fake-vlm", "--base-url", url, "--frames", "2", "--concurrency", "2"]
        client = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(lambda: _cached(db) >= 3)
        os.kill(client.pid, signal.SIGKILL)
        client.wait()
        time.sleep(1.0)                 # let requests already on the wire reach the server's log
        committed = _cached(db)
        first_run_requests = len(_served(log))
        assert 3 <= committed < N and not out.exists()
        assert first_run_requests <= committed + 2          # at most `concurrency` answers lost in flight

        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        second_run_requests = len(_served(log)) - first_run_requests
        assert second_run_requests == N - committed         # nothing committed was asked again
    finally:
        server.kill()
        server.wait()
    rows = read_manifest(out)
    assert sorted(r["clip_id"] for r in rows) == sorted(f"v{k}-0000" for k in range(N))   # each clip once
    assert all(r["caption_error"] is None and r["caption"] for r in rows)
    assert len({r["caption"] for r in rows}) == N                                          # no answer reused
    assert _cached(db) == N


def test_server_killed_mid_run_then_retry_failed(tmp_path, clips):
    write_manifest(tmp_path / "m.parquet", clips(tmp_path, n=N, frames=12))
    out = tmp_path / "captioned.parquet"
    db = tmp_path / "cache.sqlite"
    fast_fail = {"max_attempts": 2, "backoff_base_s": 0.01, "timeout_s": 5.0}
    server, url, log = _start_server(tmp_path, "srv1", "--latency", "0.2")
    result = {}
    run = threading.Thread(target=lambda: result.update(s=caption_manifest(
        tmp_path / "m.parquet", out=out, settings=CaptionSettings(
            backend="openai", model="fake-vlm", base_url=url, frames=2, concurrency=2, cache_path=str(db),
            backend_options=fast_fail))))
    run.start()
    try:
        _wait_for(lambda: _cached(db) >= 3)
        server.kill()                                        # the server dies with requests in flight
        server.wait()
    finally:
        run.join(timeout=60)
    s = result["s"]
    assert s.captioned >= 3 and s.failed == N - s.captioned > 0
    assert set(s.failures_by_kind) == {"connection_failed"}       # refused / reset, after the retry budget
    first = {r["clip_id"]: r for r in read_manifest(out)}
    ok_first = {c: r["caption"] for c, r in first.items() if r["caption_error"] is None}
    assert len(ok_first) == s.captioned

    server2, url2, log2 = _start_server(tmp_path, "srv2")   # back up, on another port
    try:
        s2 = caption_manifest(out, settings=CaptionSettings(
            backend="openai", model="fake-vlm", base_url=url2, frames=2, concurrency=2, cache_path=str(db),
            retry_failed=True, backend_options=fast_fail))
    finally:
        server2.kill()
        server2.wait()
    assert len(_served(log2)) == N - len(ok_first) == s2.captioned     # only the failed rows were asked
    assert s2.cached == len(ok_first) and s2.failed == 0
    final = {r["clip_id"]: r for r in read_manifest(out)}
    assert len(final) == N and all(r["caption_error"] is None for r in final.values())
    assert {c: final[c]["caption"] for c in ok_first} == ok_first              # earlier captions unchanged
    assert len({r["caption"] for r in final.values()}) == N
