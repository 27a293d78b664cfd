"""Dataset ingestion and download throughput.

    python benchmarks/bench_datasets.py                 # prints a markdown table
    python benchmarks/bench_datasets.py --large         # adds a 300,000-video (900,000-clip) Panda-70M CSV

Ingest: a Panda-70M CSV (and a WebVid CSV) made by repeating the real fixture rows with fresh ids, ingested
in a child process so its peak RSS is measured alone. Download: generated videos served by a 127.0.0.1 HTTP
server, fetched and cut with each cut mode.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "datasets"

CHILD = r"""
import json, resource, sys, time
from soraprep.datasets import ingest
t = time.perf_counter()
r = ingest(dataset=sys.argv[1], path=sys.argv[2], out=sys.argv[3])
dt = time.perf_counter() - t
print(json.dumps({"clips": r.clips, "errors": r.num_errors, "s": dt,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_panda(path: Path, videos: int) -> None:
    lines = (DATA / "panda70m_validation.head6.csv").read_text().splitlines()
    with open(path, "w") as fh:
        fh.write(lines[0] + "\n")
        for i in range(videos):
            row = lines[1 + i % 6]
            vid = row.split(",")[0]
            fh.write(row.replace(vid, f"{vid}{i:07d}", 2) + "\n")


def make_webvid(path: Path, videos: int) -> None:
    with open(DATA / "webvid10m.head10.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(rows[0])
        for i in range(videos):
            r = list(rows[1 + i % 10])
            r[0] = f"{r[0]}{i:07d}"
            w.writerow(r)


def bench_ingest(tmp: Path, large: bool) -> list[tuple[str, str, str]]:
    out = []
    cases = [("panda70m", make_panda, "panda70m", 20_000), ("panda70m", make_panda, "panda70m", 100_000),
             ("webvid", make_webvid, "webvid", 100_000)]
    if large:
        cases.append(("panda70m", make_panda, "panda70m", 300_000))
    for name, maker, dataset, n in cases:
        src = tmp / f"{name}_{n}.csv"
        maker(src, n)
        res = subprocess.run([sys.executable, "-c", CHILD, dataset, str(src), str(tmp / "m.parquet")],
                             capture_output=True, text=True, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        out.append((f"ingest {dataset}, {n:,} source rows ({r['clips']:,} clips)",
                    f"{r['s']:.1f} s = {r['clips'] / r['s']:,.0f} clips/s", f"peak RSS {r['rss_mb']:.0f} MB"))
    return out


def bench_download(tmp: Path) -> list[tuple[str, str, str]]:
    sys.path.insert(0, str(ROOT / "tests" / "datasets"))
    from ds_server import VideoServer

    from soraprep.datasets.download import download
    from soraprep.manifest import write_manifest
    from soraprep.video.synth import Shot, make_video

    make_video(tmp / "v.mp4", [Shot(125, seed=i) for i in range(4)], fps=Fraction(25), width=1280, height=720,
               gop=50)
    data = (tmp / "v.mp4").read_bytes()
    out = []
    with VideoServer() as srv:
        for i in range(8):
            srv.files[f"/v{i}.mp4"] = data
        rows = [{"clip_id": f"v{i}-{k}", "video_id": f"v{i}", "source": srv.url(f"/v{i}.mp4"),
                 "start_s": 1.0 + 5 * k, "end_s": 4.0 + 5 * k} for i in range(8) for k in range(4)]
        write_manifest(tmp / "m.parquet", rows)
        for cut in ("none", "copy", "exact"):
            t = time.perf_counter()
            rep = download(manifest=tmp / "m.parquet", out=tmp / f"out-{cut}", concurrency=2, cut=cut)
            dt = time.perf_counter() - t
            assert rep.num_errors == 0
            out.append((f"download 8 x {len(data) / 1e6:.1f} MB 720p videos from 127.0.0.1 + cut 32 x 3 s clips, "
                        f"--cut {cut}, --concurrency 2", f"{dt:.1f} s", f"{rep.clips_cut} clips cut"))
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        rows = bench_ingest(Path(d), "--large" in sys.argv) + bench_download(Path(d))
    print("| what | time | note |\n|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
