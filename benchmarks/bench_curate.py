"""Curation throughput vs. a bare PyAV decode of the same files, in one run (ratios, not absolute times).

    python benchmarks/bench_curate.py                 # 10 x 60 s 1280x720 25 fps H.264, 2 workers
    python benchmarks/bench_curate.py --videos 2 --seconds 20   # quick look

Measures, on the same generated videos:
  baseline   2 processes decode every frame with PyAV (thread_type AUTO) and convert it to rgb24 at a
             256-px short side: the least any frame-based curation must do.
  curate     `soraprep curate IN -o OUT --workers 2` as a subprocess: start-up, probe, decode-once analysis
             (scene detection + motion/sharpness/brightness/static), filter, default cut mode, bucket, report.
  cut modes  cost of writing the kept clips in each --cut mode (copy, keyframe, exact).
  peak RSS   of one worker curating a 60 s 1080p video.
Prints a Markdown block for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent
WORK = ROOT / "_work"


#: the shot mix of the benchmark videos: mostly moving footage, some static, text and blurred shots
MIX = ("moving",) * 6 + ("static", "text", "blur")


def shot_mix(rng, seconds: int, kinds: tuple[str, ...] = MIX, shot_s: tuple[int, int] = (3, 12)) -> list:
    """Random shots of ``shot_s`` seconds (25 fps) filling ``seconds``, kinds drawn from ``kinds``; the same
    draws for the same ``rng`` (other benchmarks reuse it: bench_remote_read, scale_model)."""
    from soraprep.video.synth import Shot

    shots, total = [], 0
    while total < seconds * 25:
        k = int(rng.integers(shot_s[0] * 25, shot_s[1] * 25))
        kind = str(rng.choice(list(kinds))) if len(kinds) > 1 else kinds[0]
        shots.append(Shot(min(k, seconds * 25 - total), kind, speed=float(rng.uniform(0.5, 5)),
                          seed=int(rng.integers(1 << 30))))
        total += shots[-1].frames
    return shots


def make_inputs(n: int, seconds: int, width: int, height: int, tag: str) -> list[Path]:
    from soraprep.video.synth import make_video

    folder = WORK / f"{tag}_{n}x{seconds}s_{width}x{height}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"v{i:02d}.mp4"
        if not p.exists():
            shots = shot_mix(np.random.default_rng(i), seconds)
            tmp = p.with_suffix(".tmp.mp4")
            make_video(tmp, shots, fps=Fraction(25), width=width, height=height, preset="veryfast", crf=23)
            tmp.rename(p)
        paths.append(p)
    return paths


def _decode_baseline(path: str) -> int:
    c = av.open(path)
    s = c.streams.video[0]
    s.thread_type = "AUTO"
    n = 0
    for frame in c.decode(s):
        w, h = frame.width, frame.height
        scale = 256 / min(w, h)
        frame.to_ndarray(width=int(round(w * scale / 2)) * 2, height=256, format="rgb24")
        n += 1
    c.close()
    return n


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def baseline(paths: list[Path]) -> tuple[float, int, float]:
    """Wall time, frames, and CPU seconds (user+sys of the worker processes: robust to other load)."""
    t, c = time.perf_counter(), _cpu_children()
    with mp.get_context("spawn").Pool(2) as pool:
        frames = sum(pool.map(_decode_baseline, [str(p) for p in paths], chunksize=1))
    return time.perf_counter() - t, frames, _cpu_children() - c


def curate_cli(inputs: Path, out: Path, workers: int = 2, extra: list[str] | None = None) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "soraprep.cli", "curate", str(inputs), "-o", str(out), "--workers", str(workers),
           "-q", *(extra or [])]
    t, c = time.perf_counter(), _cpu_children()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode not in (0, 1):
        raise SystemExit(f"curate failed: {res.stderr}")
    return wall, _cpu_children() - c


def cut_mode_costs(out: Path) -> dict[str, tuple[float, int, int]]:
    from soraprep.manifest import read_manifest
    from soraprep.video.cut import cut_clip
    from soraprep.video.io import scan_packets

    rows = [r for r in read_manifest(out / "manifest.parquet") if r["keep"] and not r["error"]]
    indexes = {r["source"]: scan_packets(r["source"]) for r in rows}
    spans = []
    for r in rows:  # the detected span (before snapping) is what the cutter is asked for
        spans.append((r["source"], r["start_frame"], r["end_frame"]))
    costs = {}
    for mode in ("copy", "keyframe", "exact"):
        d = WORK / f"cuts_{mode}"
        shutil.rmtree(d, ignore_errors=True)
        t = time.perf_counter()
        frames = lost = 0
        for i, (src, a, b) in enumerate(spans):
            try:
                res = cut_clip(src, d / f"{i}.mp4", start_frame=a, end_frame=b, mode=mode, index=indexes[src])
                frames += res.num_frames
                lost += (b - a) - res.num_frames
            except Exception:
                lost += b - a
        costs[mode] = (time.perf_counter() - t, frames, lost)
    return costs


def peak_rss_1080p() -> float:
    [p] = make_inputs(1, 60, 1920, 1080, "rss")
    out = WORK / "out_rss"
    shutil.rmtree(out, ignore_errors=True)
    # measured from a fresh process: this one's RUSAGE_CHILDREN already holds the earlier, bigger runs
    probe = ("import resource, subprocess, sys; "
             "subprocess.run(sys.argv[1:], capture_output=True, check=False); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    res = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "soraprep.cli", "curate", str(p),
                          "-o", str(out), "-w", "1", "-q"], capture_output=True, text=True, check=True)
    return int(res.stdout.split()[-1]) / 1024  # MiB (ru_maxrss is KiB on Linux): the largest process


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=10)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--skip-rss", action="store_true")
    args = ap.parse_args()
    paths = make_inputs(args.videos, args.seconds, 1280, 720, "bench")
    load0 = os.getloadavg()[0]
    folder = paths[0].parent
    hours = args.videos * args.seconds / 3600
    # warm the page cache so neither side pays the first read
    for p in paths:
        p.read_bytes()
    b1, frames, bc1 = baseline(paths)
    c1, cc1 = curate_cli(folder, WORK / "out")
    b2, _, bc2 = baseline(paths)
    c2, cc2 = curate_cli(folder, WORK / "out")
    base, cur = min(b1, b2), min(c1, c2)
    base_cpu, cur_cpu = min(bc1, bc2), min(cc1, cc2)
    costs = cut_mode_costs(WORK / "out")
    rss = None if args.skip_rss else peak_rss_1080p()
    print(f"\n### Curation vs. bare decode ({args.videos} x {args.seconds} s 1280x720 25 fps H.264, 2 workers)\n")
    print("| measurement | wall time (s) | wall ratio | CPU time (s) | CPU ratio |")
    print("|---|---|---|---|---|")
    print(f"| baseline: PyAV decode + rgb24 @256 px, 2 processes ({frames} frames) | {base:.2f} | 1.00 | "
          f"{base_cpu:.1f} | 1.00 |")
    print(f"| `soraprep curate` end to end, default recipe (cut: copy), report | {cur:.2f} | **{cur / base:.2f}** | "
          f"{cur_cpu:.1f} | **{cur_cpu / base_cpu:.2f}** |")
    print(f"\nRuns: baseline {b1:.2f} / {b2:.2f} s, curate {c1:.2f} / {c2:.2f} s (best of two each, interleaved; "
          f"1-min load average at start: {load0:.1f}). "
          f"Throughput: {hours / (cur / 3600):.0f} video-hours per wall-hour ({frames / cur:.0f} frames/s).")
    print("\n| cut mode | time for all kept clips (s) | frames written | frames lost to inward snapping |")
    print("|---|---|---|---|")
    for mode, (t, f, lost) in costs.items():
        print(f"| {mode} | {t:.2f} | {f} | {lost} |")
    if rss is not None:
        print(f"\nPeak RSS of one worker curating a 60 s 1920x1080 video (`-w 1`): {rss:.0f} MiB")


if __name__ == "__main__":
    main()
