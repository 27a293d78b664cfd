"""Captioning throughput vs concurrency against a local OpenAI-compatible server with a fixed latency.

The server (``soraprep.caption.fake_server``) runs in its own process and answers every request after
``--latency`` seconds, so the numbers show what the client side does with concurrency: ideal throughput is
``concurrency / latency``. Two client paths are measured:

- ``http``: ``OpenAICompatCaptioner.generate`` with 4 pre-decoded 640x360 frames per request (JPEG + base64
  encoding, ~110 KB per frame, and the HTTP round trip; no video decoding);
- ``pipeline``: ``Captioning.caption_rows`` over manifest rows (span selection, content hash, cache lookup,
  decoding 4 frames per clip, encoding, HTTP, cleaning, cache commit), the whole ``soraprep caption`` path.

Client CPU per caption is the process CPU time (user + system, all threads) divided by captions; the
server's CPU per request (it parses each ~0.5 MB JSON body in Python) is read from /proc. On a machine
with few cores the two share them, so the client saturates early: run the server elsewhere to see more.

    python benchmarks/bench_caption.py                  # latency 0.2 s, concurrency 1 4 16 64
    python benchmarks/bench_caption.py --concurrency 1 4 --seconds 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def start_server(tmp: Path, latency: float) -> tuple[subprocess.Popen, str]:
    port_file = tmp / "port"
    proc = subprocess.Popen([sys.executable, "-m", "soraprep.caption.fake_server", "--port", "0", "--latency",
                             str(latency), "--port-file", str(port_file)], stderr=subprocess.DEVNULL)
    for _ in range(200):
        if port_file.exists():
            return proc, f"http://127.0.0.1:{port_file.read_text()}/v1"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc (Linux); 0.0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def bench_http(url: str, concurrency: int, n: int, tmp: Path) -> tuple[float, float]:
    from soraprep.caption.backends import VLMRequest, make_captioner
    from soraprep.caption.frames import load_frames

    src = make_rows(tmp, 1)[0]["path"]
    frames = tuple(load_frames(src, [10, 60, 110, 160], size=448))
    cap = make_captioner("openai", model="fake-vlm", base_url=url, concurrency=concurrency)
    cap.generate([VLMRequest("warm up", frames[:1])])
    reqs = [VLMRequest(f"describe clip {i}", frames) for i in range(n)]
    c0, t0 = time.process_time(), time.perf_counter()
    replies = cap.generate(reqs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    cap.close()
    assert all(r.ok for r in replies), [r.error_message for r in replies if not r.ok][:3]
    return wall, cpu


def make_rows(tmp: Path, n: int) -> list[dict]:
    from soraprep.video.synth import Shot, make_video

    sources = []
    for k in range(4):
        p = tmp / f"src{k}.mp4"
        if not p.exists():
            make_video(p, [Shot(125, seed=k), Shot(125, kind="static", seed=10 + k)], width=640, height=360)
        sources.append(str(p))
    rows = []
    for i in range(n):   # 1-second spans of the 10-second sources (cut mode none): distinct clips
        src, start = sources[i % 4], 25 * ((i // 4) % 9)
        rows.append({"clip_id": f"c{i}-{n}", "source": src, "path": src, "cut_mode": "none", "start_frame": start,
                     "end_frame": start + 25 + (i // 36), "num_frames": 25, "fps": 25.0, "keep": True})
    return rows


def bench_pipeline(url: str, concurrency: int, rows: list[dict], tmp: Path) -> tuple[float, float]:
    from soraprep.caption import Captioning, CaptionSettings

    job = Captioning(CaptionSettings(backend="openai", model="fake-vlm", base_url=url, frames=4,
                                     concurrency=concurrency, cache_path=None))
    job.setup()
    c0, t0 = time.process_time(), time.perf_counter()
    _, s = job.caption_rows(rows, manifest_path=tmp / "m.parquet")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    job.close()
    assert s.failed == 0 and s.captioned == len(rows), s
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--seconds", type=float, default=2.0, help="target wall time per point at ideal throughput")
    ap.add_argument("--paths", nargs="+", default=["http", "pipeline"], choices=["http", "pipeline"])
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        server, url = start_server(tmp, a.latency)
        try:
            print(f"server latency {a.latency * 1000:.0f} ms, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
                  f"load average before: {os.getloadavg()[0]:.1f}")
            print("| path | concurrency | captions | wall s | captions/s | ideal/s | efficiency | client CPU ms/caption "
                  "| server CPU ms/request |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for path in a.paths:
                for c in a.concurrency:
                    ideal = c / a.latency
                    n = max(8, int(ideal * a.seconds))
                    s0 = proc_cpu_s(server.pid)
                    if path == "http":
                        wall, cpu = bench_http(url, c, n, tmp)
                    else:
                        wall, cpu = bench_pipeline(url, c, make_rows(tmp, n), tmp)
                    rate, server_cpu = n / wall, proc_cpu_s(server.pid) - s0
                    print(f"| {path} | {c} | {n} | {wall:.2f} | {rate:.1f} | {ideal:.0f} | {rate / ideal:.0%} "
                          f"| {1000 * cpu / n:.1f} | {1000 * server_cpu / n:.1f} |", flush=True)
        finally:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
