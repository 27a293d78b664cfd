"""Export throughput: WebDataset shards (local and on an S3 server) and the Parquet dataset export.

Builds a run folder of ``--clips`` clip files (copies of 4 generated 640x360 clips, so sizes are real) and a
manifest, then times:

- ``wds local``: ``export_webdataset`` folder -> folder (MB/s of shard bytes), and the rerun that finds every
  shard complete (plan only: a stat per clip, no reads, no writes);
- ``wds s3``: the same run uploaded to a moto S3 server on 127.0.0.1, exported from and to the store with
  ``--workers 1`` and ``8`` (moto is in-process and local, so this measures soraprep's side of the requests,
  not a network: moto answers a 180 KB GET in ~35 ms on 2 busy cores and shares the GIL with the client,
  so it is the bound here, not the exporter);
- ``parquet``: ``export_parquet`` of a ``--rows``-row synthetic manifest (rows/s).

    python benchmarks/bench_export.py                     # 400 clips, 1,000,000 rows
    python benchmarks/bench_export.py --clips 100 --rows 200000 --no-s3
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from soraprep.export import export_parquet, export_webdataset  # noqa: E402
from soraprep.manifest import write_manifest  # noqa: E402
from soraprep.video.synth import Shot, make_video  # noqa: E402


def build_run(root: Path, n: int) -> Path:
    run = root / "run"
    (run / "clips").mkdir(parents=True)
    seeds = []
    for k in range(4):
        p = root / f"seed{k}.mp4"
        make_video(p, [Shot(48, seed=k, speed=2 + k)], fps=Fraction(24), width=640, height=360)
        seeds.append(p)
    rows = []
    for i in range(n):
        shutil.copy(seeds[i % 4], run / "clips" / f"c{i:06d}.mp4")
        rows.append({"clip_id": f"v{i // 3:05d}-{i % 3:04d}", "video_id": f"v{i // 3:05d}", "path": f"clips/c{i:06d}.mp4",
                     "text": f"a generated clip number {i}", "num_frames": 48, "height": 360, "width": 640, "fps": 24.0,
                     "keep": True, "error": None, "motion_score": i / n})
    write_manifest(run / "manifest.parquet", rows)
    return run


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def s3_server():
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    return server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=400)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shard-size", default="64MB")
    ap.add_argument("--no-s3", action="store_true")
    args = ap.parse_args()
    from soraprep.export import parse_bytes

    limit = parse_bytes(args.shard_size)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = build_run(root, args.clips)
        mb = sum(p.stat().st_size for p in (run / "clips").iterdir()) / 1e6
        print(f"{args.clips} clips, {mb:.1f} MB of clip files")
        res, s = timed(lambda: export_webdataset(run / "manifest.parquet", root / "wds", shard_size=limit))
        print(f"wds local:  {len(res.shards)} shards, {res.bytes / 1e6:.1f} MB in {s:.2f} s = {res.bytes / 1e6 / s:.0f} MB/s")
        res, s = timed(lambda: export_webdataset(run / "manifest.parquet", root / "wds", shard_size=limit))
        print(f"wds rerun:  {res.reused} shards complete, {res.written} written, {s:.2f} s")
        if not args.no_s3:
            import s3fs

            server = s3_server()
            try:
                from soraprep.storage import Store

                s3fs.S3FileSystem(skip_instance_cache=True).mkdir("bench")
                store = Store("s3://bench/run")
                for p in sorted(run.rglob("*")):
                    if p.is_file():
                        store.put_file(p, p.relative_to(run).as_posix())
                for workers in (1, 8):
                    res, s = timed(lambda w=workers: export_webdataset(
                        "s3://bench/run", f"s3://bench/wds{w}", shard_size=limit, workers=w))
                    print(f"wds s3 -> s3, workers {workers}: {res.bytes / 1e6:.1f} MB in {s:.2f} s = "
                          f"{res.bytes / 1e6 / s:.0f} MB/s")
            finally:
                server.stop()
        rows = [{"clip_id": f"v{i:08d}-0000", "video_id": f"v{i:08d}", "path": f"clips/v{i:08d}-0000.mp4",
                 "text": "a caption of moderate length for a clip", "num_frames": 96, "height": 720, "width": 1280,
                 "fps": 24.0, "keep": i % 5 != 0, "error": None, "motion_score": (i % 97) / 97.0}
                for i in range(args.rows)]
        write_manifest(root / "big.parquet", rows)
        del rows
        res, s = timed(lambda: export_parquet(root / "big.parquet", root / "pq", rows_per_part=250_000))
        print(f"parquet:    {res.read} rows read, {res.rows} written in {len(res.parts)} parts, {s:.2f} s = "
              f"{res.read / s:,.0f} rows/s")


if __name__ == "__main__":
    main()
