"""CPU cost of camera motion (motion scorer v2) and static v2 against the v1 scorers, in the one decode pass.

    python benchmarks/bench_camera.py               # 20 s of 1280x720 25 fps footage, 3 repeats
    python benchmarks/bench_camera.py --repeats 5
    python benchmarks/bench_camera.py --curate-vs DIR   # + bench_curate's workload, this tree vs another

The footage (cached in benchmarks/_work/) is five 4-s shots: pan, zoom, shaky, a small subject over a still
background, a frozen picture. ``analyze`` (the real stage: decode once at 144 px, adaptive scene detection)
runs with: no scorer (the decode + detection floor), each v1 scorer (the code before issue 14, defined
below), each v2 scorer, and the default scorer set in both versions. CPU time = user + sys of this
process (one thread: ``cv2.setNumThreads(1)`` as in a worker), best of the repeats; "per clip" divides by
the clips the split makes. Prints a Markdown table for BENCHMARKS.md.

``--curate-vs DIR`` also runs ``bench_curate.py``'s end-to-end workload (10 x 60 s 720p, `soraprep curate
--workers 2`) with this tree's soraprep and with DIR's (e.g. a checkout of main before this change),
interleaved, ``--rounds`` times each, and prints best CPU times and ratios to the bare-decode baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from soraprep.curate.analyze import AnalyzeStage, ProbeStage
from soraprep.curate.score import stage as _score_stage  # noqa: F401  (registers the built-in scorers)
from soraprep.curate.score.base import SCORERS, nan_stat, register_scorer
from soraprep.curate.score.frame_scorers import REF_SHORT_SIDE, PairScorer, _every
from soraprep.curate.split import SplitStage

WORK = Path(__file__).resolve().parent / "_work"


# --- the v1 scorers, as they were before camera motion and static v2 (for the comparison only) -------------
@register_scorer("motion_v1")
@dataclass
class MotionV1(PairScorer):
    samples_per_s: float = 8.0
    name = "motion_v1"
    columns = ("motion_score",)
    signal_names = ("flow_v1",)

    def begin(self, num_frames: int, fps: float) -> None:
        super().begin(num_frames, fps)
        self._step = _every(fps, self.samples_per_s)
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)

    def pair(self, index, prev, cur):
        flow = self._dis.calc(prev, cur, None)
        mag = float(np.mean(np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2)))
        self._put("flow_v1", index, mag * REF_SHORT_SIDE / min(cur.shape))

    def aggregate(self, signals, start, end):
        return {"motion_score": nan_stat(signals["flow_v1"][start + 1:end])}


@register_scorer("static_v1")
@dataclass
class StaticV1(PairScorer):
    static_diff: float = 0.5
    name = "static_v1"
    columns = ("static_ratio",)
    signal_names = ("frame_diff_v1",)

    def pair(self, index, prev, cur):
        self._put("frame_diff_v1", index, float(cv2.absdiff(cur, prev).mean()))

    def aggregate(self, signals, start, end):
        d = signals["frame_diff_v1"][start + 1:end]
        return {"static_ratio": float(np.mean(d[~np.isnan(d)] < self.static_diff))}


def footage() -> Path:
    from soraprep.video.synth import Shot, make_video

    path = WORK / "camera_720p.mp4"
    if not path.exists():
        shots = [Shot(100, "pan", speed=4, seed=1), Shot(100, "zoom", speed=3, seed=2),
                 Shot(100, "shaky", speed=6, seed=3), Shot(100, "subject", speed=9, seed=4),
                 Shot(100, "frozen", seed=5)]
        make_video(path, shots, width=1280, height=720, preset="veryfast")
    return path


def run(path: Path, scorers: dict, repeats: int) -> tuple[float, float, int]:
    """Best (wall s, CPU s) of ``repeats`` analyze passes, and the clips the split makes."""
    best_wall = best_cpu = float("inf")
    clips = 0
    for _ in range(repeats):
        stage = AnalyzeStage(scorers=scorers)
        stage.setup()
        rows = ProbeStage()([{"source": str(path), "video_id": "v"}])
        t0, c0 = time.perf_counter(), time.process_time()
        rows = stage(rows)
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - t0)
        assert not rows[0].get("error"), rows[0]["error"]
        clips = len(SplitStage()(rows))
    return best_wall, best_cpu, clips


def per_pair(path: Path, n: int = 60) -> dict[str, float]:
    """Median microseconds per frame pair of each scorer's own work on the half-size gray views (128x72)."""
    from soraprep.curate.score import camera
    from soraprep.video.io import decode

    grays = []
    for f in decode(str(path), start_frame=0, end_frame=n + 1, fmt="gray"):
        grays.append(np.ascontiguousarray(cv2.resize(f.array, (128, 72), interpolation=cv2.INTER_AREA)))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    flows = [dis.calc(a, b, None) for a, b in zip(grays, grays[1:])]
    v2 = StaticScorerForTiming()

    def each(fn, items) -> float:
        times = []
        for _ in range(5):
            t = time.perf_counter()
            for it in items:
                fn(*it)
            times.append((time.perf_counter() - t) / len(items))
        return 1e6 * statistics.median(times)

    pairs = list(zip(grays, grays[1:]))
    return {
        "DIS flow (both versions)": each(lambda a, b: dis.calc(a, b, None), pairs),
        "flow magnitude (v1 and v2)": each(lambda f: float(np.mean(np.sqrt(f[..., 0] ** 2 + f[..., 1] ** 2))),
                                           [(f,) for f in flows]),
        "camera statistics (v2 only)": each(lambda f: camera.global_flow(f, 2.0), [(f,) for f in flows]),
        "static v1 pair": each(lambda a, b: float(cv2.absdiff(b, a).mean()), pairs),
        "static v2 pair": each(v2.changed, pairs),
    }


class StaticScorerForTiming:
    """The body of StaticScorer.pair without the signal buffer."""

    def changed(self, prev, cur) -> float:
        from soraprep.curate.score.frame_scorers import BLOCK

        h, w = cur.shape
        d = cv2.absdiff(cur, prev)
        blocks = cv2.resize(d, (-(-w // BLOCK), -(-h // BLOCK)), interpolation=cv2.INTER_AREA)
        return float(np.mean(blocks > 3.0))


def curate_vs(other: Path, rounds: int) -> None:
    """Interleaved end-to-end curate CPU time: this tree vs ``other`` (PYTHONPATH of the curate subprocess)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_curate as bc

    here = Path(__file__).resolve().parents[1]
    paths = bc.make_inputs(10, 60, 1280, 720, "bench")
    for p in paths:
        p.read_bytes()
    res: dict[str, list[tuple[float, float]]] = {"base": [], "this tree": [], str(other): []}
    saved = os.environ.get("PYTHONPATH")
    try:
        for r in range(rounds):
            if r < 2:
                w, _, c = bc.baseline(paths)
                res["base"].append((w, c))
            sides = [("this tree", here), (str(other), other)]
            for name, root in sides if r % 2 == 0 else sides[::-1]:
                os.environ["PYTHONPATH"] = str(root)
                res[name].append(bc.curate_cli(paths[0].parent, bc.WORK / "out"))
                print(f"  {name}: wall {res[name][-1][0]:.1f} s, CPU {res[name][-1][1]:.1f} s", flush=True)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    base = min(c for _, c in res["base"])
    print("\n| | best CPU (s) | CPU ratio vs bare decode | runs, CPU (s) |\n|---|---|---|---|")
    for name, runs in res.items():
        best = min(c for _, c in runs)
        print(f"| {name} | {best:.1f} | {best / base:.2f} | {' / '.join(f'{c:.1f}' for _, c in runs)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--curate-vs", type=Path, default=None, metavar="DIR",
                    help="also compare `soraprep curate` end to end against the soraprep in DIR")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    path = footage()
    print("| work per frame pair (128x72 half-size gray) | median µs |\n|---|---|")
    for label, us in per_pair(path).items():
        print(f"| {label} | {us:.0f} |")
    print(flush=True)
    cases = [
        ("decode + scene detection, no scorer", {}),
        ("motion v1 (flow magnitude)", {"motion_v1": {}}),
        ("motion v2 (+ camera statistics)", {"motion": {}}),
        ("static v1 (whole-frame mean difference)", {"static_v1": {}}),
        ("static v2 (changed 16x16 blocks)", {"static": {}}),
        ("default scorers, v1", {"motion_v1": {}, "sharpness": {}, "brightness": {}, "static_v1": {}}),
        ("default scorers, v2", {"motion": {}, "sharpness": {}, "brightness": {}, "static": {}}),
    ]
    results = {}
    for label, scorers in cases:
        results[label] = run(path, scorers, args.repeats)
        print(f"  {label}: wall {results[label][0]:.3f} s, CPU {results[label][1]:.3f} s", flush=True)
    floor_cpu = results[cases[0][0]][1]
    clips = results[cases[0][0]][2]
    seconds = 500 / 25
    print(f"\n{clips} clips, {seconds:.0f} s of 1280x720 25 fps, best of {args.repeats}, one thread; "
          f"{', '.join(sorted(k for k in SCORERS if not k.endswith('_v1')))} registered\n")
    print("| analyze with | wall (s) | CPU (s) | CPU over the floor (s) | ms CPU per clip | ms CPU per clip-second |")
    print("|---|---|---|---|---|---|")
    for label, _ in cases:
        wall, cpu, _n = results[label]
        extra = cpu - floor_cpu
        print(f"| {label} | {wall:.2f} | {cpu:.2f} | {extra:+.2f} | {1000 * extra / clips:+.0f} | "
              f"{1000 * extra / seconds:+.1f} |")

    if args.curate_vs is not None:
        curate_vs(args.curate_vs.resolve(), args.rounds)


if __name__ == "__main__":
    main()
