"""Remote sources: per-unit staging to local scratch vs range reads through the store's file object.

    python benchmarks/bench_remote_read.py                    # 3 x 30 s 1280x720 25 fps H.264 on moto S3
    python benchmarks/bench_remote_read.py --videos 2 --seconds 5   # quick look

A real S3-compatible server (moto in server mode, 127.0.0.1) reached through s3fs, as in the tests. For
each video, the access pattern of curation's probe + analyze: one pass demuxing every packet (the packet
index) and one pass decoding every frame (thread_type AUTO), each opening the source afresh.

  staging  Store.get_file to a local temp file (one GET), both passes on the local file, then delete it.
  range    both passes with PyAV reading the s3fs file object from Store.open (ranged GETs through
           fsspec's read-ahead cache of ``--block-size`` bytes).

Counts S3 requests and response bytes with a botocore event hook on s3fs's client. Prints a Markdown
block for BENCHMARKS.md. Best of ``--repeats`` per mode; both modes interleaved.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent
WORK = ROOT / "_work"
sys.path.insert(0, str(ROOT))  # bench_curate


def make_inputs(n: int, seconds: int, width: int, height: int, crf: int) -> list[Path]:
    from bench_curate import shot_mix

    from soraprep.video.synth import make_video

    folder = WORK / f"remote_{n}x{seconds}s_{width}x{height}_crf{crf}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"v{i:02d}.mp4"
        if not p.exists():
            shots = shot_mix(np.random.default_rng(i), seconds, kinds=("moving",), shot_s=(3, 8))
            tmp = p.with_suffix(".tmp.mp4")
            make_video(tmp, shots, fps=Fraction(25), width=width, height=height, preset="veryfast", crf=crf)
            tmp.rename(p)
        paths.append(p)
    return paths


def start_server() -> str:
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")
    return endpoint


class Counter:
    """S3 requests and response body bytes seen by s3fs's (aiobotocore) client."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0

    def attach(self, fs) -> None:
        fs.connect()  # the client exists once connected
        events = fs.s3.meta.events
        events.register("before-call.s3", self._call)
        events.register("after-call.s3", self._after)

    def _call(self, **_kw) -> None:
        self.requests += 1

    def _after(self, http_response=None, parsed=None, **_kw) -> None:
        if parsed and "ContentLength" in parsed and parsed.get("Body") is not None:
            self.bytes += int(parsed["ContentLength"])


def _passes(src) -> tuple[int, int]:
    """Curation's reads of one source: demux every packet, then decode every frame (two opens)."""
    if hasattr(src, "seek"):
        src.seek(0)
    with av.open(src) as c:
        packets = sum(1 for p in c.demux(c.streams.video[0]) if p.size)
    if hasattr(src, "seek"):
        src.seek(0)
    with av.open(src) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        frames = sum(1 for _ in c.decode(stream))
    return packets, frames


def run_staging(store, keys: list[str]) -> int:
    frames = 0
    with tempfile.TemporaryDirectory(prefix="bench-stage-") as tmp:
        for k in keys:
            local = store.get_file(k, Path(tmp) / k)
            frames += _passes(str(local))[1]
            local.unlink()
    return frames


def run_range(store, keys: list[str], block_size: int) -> int:
    frames = 0
    for k in keys:
        with store.fs.open(store.url(k), "rb", block_size=block_size, cache_type="readahead") as f:
            frames += _passes(f)[1]
    return frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--crf", type=int, default=23, help="x264 quality of the generated videos (lower: larger files)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--curate", action="store_true", help="also time `soraprep curate` local->local vs S3->S3")
    ap.add_argument("--block-size", type=int, nargs="+", default=[5 * 2**20, 1 * 2**20, 256 * 2**10])
    args = ap.parse_args()

    paths = make_inputs(args.videos, args.seconds, args.width, args.height, args.crf)
    start_server()
    import s3fs

    from soraprep.storage import Store

    s3fs.S3FileSystem(skip_instance_cache=True).mkdir("bench")
    store = Store("s3://bench/videos")
    for p in paths:
        store.put_file(p, p.name)
    keys = [p.name for p in paths]
    total_bytes = sum(p.stat().st_size for p in paths)
    counter = Counter()
    counter.attach(store.fs)

    modes = [("staging (get_file, local passes)", lambda: run_staging(store, keys))]
    for bs in args.block_size:
        modes.append((f"range reads (s3fs file, readahead {bs // 1024} KiB blocks)",
                      lambda bs=bs: run_range(store, keys, bs)))
    best: dict[str, tuple[float, int, int, int]] = {}
    for _name, fn in modes:  # warm-up: connections, imports, the server's first touches
        fn()
    for _ in range(args.repeats):
        for name, fn in modes:
            counter.requests = counter.bytes = 0
            t0 = time.perf_counter()
            frames = fn()
            wall = time.perf_counter() - t0
            if name not in best or wall < best[name][0]:
                best[name] = (wall, counter.requests, counter.bytes, frames)
    if args.curate:
        curate_rows = bench_curate(paths, store, args.repeats)
    base = best[modes[0][0]][0]
    print(f"\n{args.videos} videos x {args.seconds} s {args.width}x{args.height} 25 fps H.264 crf {args.crf}, "
          f"{total_bytes / 2**20:.1f} MiB in all; moto S3 on 127.0.0.1 through s3fs; best of {args.repeats}\n")
    print("| mode | wall (s) | vs staging | S3 requests | bytes fetched | frames decoded |")
    print("|---|---|---|---|---|---|")
    for name, (wall, req, nbytes, frames) in best.items():
        print(f"| {name} | {wall:.2f} | {wall / base:.2f} | {req} | {nbytes / 2**20:.1f} MiB "
              f"({nbytes / total_bytes:.2f}x) | {frames} |")
    if args.curate:
        print("\n`soraprep curate IN -o OUT -w 1` end to end (default recipe, report included), same videos:\n")
        print("| inputs -> OUT | wall (s) | vs local |")
        print("|---|---|---|")
        for name, wall in curate_rows:
            print(f"| {name} | {wall:.2f} | {wall / curate_rows[0][1]:.2f} |")
    sys.stdout.flush()
    os._exit(0)  # the moto server thread


def bench_curate(paths: list[Path], store, repeats: int) -> list[tuple[str, float]]:
    """Wall time of the whole command: local folder -> local OUT vs S3 prefix -> S3 OUT (subprocesses)."""
    import shutil

    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-curate-") as tmp:
        folder = Path(tmp, "in")
        folder.mkdir()
        for p in paths:
            shutil.copy(p, folder / p.name)
        setups = [("local folder -> local OUT", str(folder), lambda i: str(Path(tmp, f"out{i}"))),
                  ("S3 prefix -> S3 OUT", store.root + "/", lambda i: f"s3://bench/runs/r{i}")]
        best: dict[str, float] = {}
        for i in range(repeats):
            for name, src, out in setups:
                cmd = [sys.executable, "-m", "soraprep.cli", "curate", src, "-o", out(i), "-q", "-w", "1"]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
        runs = list(best.items())
    return runs


if __name__ == "__main__":
    main()
