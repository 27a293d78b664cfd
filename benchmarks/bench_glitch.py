"""CPU cost of the damaged-frame checks: the ``glitch`` frame scorer and the split's ``GlitchGuard``.

    python benchmarks/bench_glitch.py                  # 720p and 1080p, 100 frames each, analyze on 60 s 720p
    python benchmarks/bench_glitch.py --analyze-seconds 0   # per-frame costs only

1. Per frame, on views made exactly as ``analyze`` makes them (full-resolution luma plane + 144-px gray)
   from generated footage, clean and with a glitch every 10th frame: ``GlitchScorer.update`` (blockiness on the
   luma plane, outlier test on a 32-px view) and ``GlitchGuard.process`` in front of a detector that does
   nothing (the guard's own cost). One thread, CPU time (process time), median of 5 passes.
2. ``analyze`` on a 60 s 1280x720 25 fps video with the default recipe's scorers and detector, with and
   without ``glitch`` + ``glitch_guard`` (the whole extra cost inside the one decode pass), CPU seconds of
   the process (decoder threads included), best of 3 alternating runs.
Prints a Markdown block for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from itertools import product
from pathlib import Path

import cv2


class _Null:
    def process(self, index, bgr):
        return []

    def finish(self, last_index):
        return []


def views(path: Path, short_side: int = 144) -> list:
    """FrameViews + the small BGR view per frame, as analyze builds them (planar YUV path)."""
    from soraprep.curate.analyze import _plane
    from soraprep.curate.score.base import FrameViews
    from soraprep.video.io import analysis_size, decode

    out = []
    for f in decode(str(path), fmt=None):
        frame = f.array
        w, h = analysis_size(frame.width, frame.height, short_side)
        luma = _plane(frame, 0).copy()        # copied: the decoder reuses its buffers
        gray = cv2.resize(luma, (w, h), interpolation=cv2.INTER_AREA)
        small = cv2.resize(gray, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        bgr = frame.to_ndarray(width=w // 2, height=h // 2, format="bgr24")
        out.append((FrameViews(f.index, f.time, gray, small, corrupt=bool(frame.is_corrupt), luma=luma), bgr))
    return out


def per_frame(fn, items, repeats: int = 5) -> float:
    """Median CPU seconds per frame (process time: steadier than wall time on a shared machine)."""
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn(items)
        times.append((time.process_time() - t) / len(items))
    return statistics.median(times)


def run_scorer(items) -> None:
    from soraprep.curate.score.base import build_scorers

    (s,) = build_scorers({"glitch": {}})
    s.begin(len(items), 25.0)
    for v, _ in items:
        s.update(v)
    s.finish()


def run_guard(items) -> None:
    from soraprep.curate.split import GlitchGuard

    g = GlitchGuard(_Null())
    for v, bgr in items:
        g.process(v.index, bgr)
    g.finish(items[-1][0].index)


def analyze_cost(seconds: int) -> tuple[float, float]:
    from soraprep.curate.analyze import AnalyzeStage, ProbeStage
    from soraprep.curate.recipe import load_recipe
    from soraprep.video.synth import Shot, make_video

    sections = load_recipe().sections["analyze"]
    path = Path(tempfile.mkdtemp()) / "v.mp4"
    make_video(path, [Shot(25 * seconds // 4, speed=3, seed=i) for i in range(4)], width=1280, height=720)
    base_scorers = {k: v for k, v in sections["scorers"].items() if k != "glitch"}
    configs = [({**sections["detector"], "glitch_guard": False}, base_scorers),
               ({**sections["detector"], "glitch_guard": True}, {**base_scorers, "glitch": {}})]
    best = [float("inf"), float("inf")]
    for _ in range(3):   # alternate, best of 3 each: the machine is shared
        for k, (det, scorers) in enumerate(configs):
            stage = AnalyzeStage(detector=det, scorers=scorers)
            stage.setup()
            t = time.process_time()
            rows = stage(ProbeStage()([{"source": str(path), "video_id": "v"}]))
            best[k] = min(best[k], time.process_time() - t)
            assert not rows[0].get("error"), rows[0]["error"]
    return best[0], best[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--analyze-seconds", type=int, default=60)
    ap.add_argument("--clip-frames", type=int, default=200, help="frames of the clip the per-clip cost is for")
    args = ap.parse_args()

    from soraprep.video.synth import Shot, make_video

    cv2.setNumThreads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for (w, h), glitches in product(((1280, 720), (1920, 1080)), ("none", "every 10th frame")):
            path = Path(tmp) / f"{h}.mp4"
            make_video(path, [Shot(args.frames // 2, speed=3), Shot(args.frames - args.frames // 2, speed=2)],
                       width=w, height=h, glitches=range(5, args.frames, 10) if glitches != "none" else ())
            items = views(path)
            rows.append((f"{w}x{h}, glitches: {glitches}", per_frame(run_scorer, items), per_frame(run_guard, items)))
            del items
    print(f"\nCPU time per frame, 1 thread, median of 5 passes over {args.frames} frames; per clip = "
          f"{args.clip_frames} frames (8 s at 25 fps)\n")
    print("| input | glitch scorer (CPU ms/frame) | GlitchGuard (CPU ms/frame) | both, per clip (CPU ms) |")
    print("|---|---|---|---|")
    for label, s, g in rows:
        print(f"| {label} | {s * 1e3:.2f} | {g * 1e3:.2f} | {(s + g) * 1e3 * args.clip_frames:.0f} |")
    if args.analyze_seconds:
        off, on = analyze_cost(args.analyze_seconds)
        print(f"\nanalyze on {args.analyze_seconds} s 1280x720 25 fps, default detector and scorers: {off:.2f} CPU-s "
              f"without, {on:.2f} CPU-s with glitch + glitch_guard (+{100 * (on / off - 1):.1f} %), best of 3")


if __name__ == "__main__":
    main()
