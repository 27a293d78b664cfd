"""Scene detectors vs gradual transitions: precision / recall / time per detector and transition kind.

    python benchmarks/bench_transitions.py                 # 6 transitions per kind, 320x180 @ 25 fps
    python benchmarks/bench_transitions.py --count 3       # quick look

For each kind (hard cut, dissolve 12 and 24 frames, fade through black 12 and 24 frames, wipe 12 frames)
one video is generated (soraprep/video/transitions.py): ``count`` transitions of that kind between moving
shots of 75 frames, each its own texture and palette. Every detector runs inside the real ``analyze``
stage (one decode pass, no scorers), and its cuts and transition ranges are matched one-to-one against
the truth with 2 frames of slack (``score_boundaries``): a dissolve reported as two cuts is one hit and
one false positive. Time = wall seconds of the ``analyze`` stage for the video (decode included; the
TransNetV2 model is built once before timing, one torch thread as in a curation worker). Prints a
Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

KINDS = [("cut", 0), ("dissolve", 12), ("dissolve", 24), ("fade", 12), ("fade", 24), ("wipe", 12)]


def detectors() -> dict[str, dict]:
    import soraprep

    default = yaml.safe_load((Path(soraprep.__file__).parent / "recipes" / "default.yaml").read_text())
    adaptive = default["analyze"]["detector"]
    params = {k: v for k, v in adaptive.items() if k != "name"}
    return {
        "adaptive (default recipe)": adaptive,
        "content": {"name": "content"},
        "transnetv2 (t=0.5)": {"name": "transnetv2"},
        "transnetv2 (t=0.2)": {"name": "transnetv2", "threshold": 0.2},
        "adaptive+transnetv2": {"name": "adaptive+transnetv2", "adaptive": params},
    }


def run(count: int, width: int, height: int) -> list[tuple]:
    from soraprep.curate import transnet
    from soraprep.curate.analyze import AnalyzeStage, ProbeStage
    from soraprep.curate.split import SplitStage
    from soraprep.video.transitions import make_transition_video, score_boundaries, sequence

    t0 = time.perf_counter()
    transnet.load_model("cpu")
    print(f"TransNetV2 model built in {time.perf_counter() - t0:.2f} s (once per process)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        videos = {}
        for kind, frames in KINDS:
            shots, trans = sequence(kind, frames, count=count)
            path = Path(tmp) / f"{kind}{frames}.mp4"
            videos[(kind, frames)] = (str(path), make_transition_video(path, shots, trans, width=width, height=height))
        for label, det in detectors().items():
            stage = AnalyzeStage(detector=det)
            stage.setup()
            for (kind, frames), (path, truth) in videos.items():
                rows = ProbeStage()([{"source": path, "video_id": "v"}])
                t = time.perf_counter()
                rows = stage(rows)
                dt = time.perf_counter() - t
                an = rows[0]["_analysis"]
                s = score_boundaries(truth, an["cuts"], an.get("transitions") or [])
                spans = [(c["start_frame"], c["end_frame"]) for c in SplitStage(max_clip_s=None)(rows)]
                leak, crossing = clip_quality(truth, spans)
                results.append((label, kind, frames, s, dt, truth.num_frames, leak, crossing))
                print(f"{label:28s} {kind:8s} {frames:2d}  P={s.precision:.2f} R={s.recall:.2f} "
                      f"({s.true_positives}/{s.truth}, {s.detected} found)  {dt:.2f} s  "
                      f"transition frames in clips {leak:.0%}, boundaries inside a clip {crossing}", flush=True)
    return results


def clip_quality(truth, spans: list[tuple[int, int]]) -> tuple[float, int]:
    """Share of true transition frames that ended up in a clip, and true boundaries (cuts, transitions)
    that some clip runs across (it holds frames of both shots beyond 1 frame of slack)."""
    covered = {f for a, b in spans for f in range(a, b)}
    trans = [f for _, a, b in truth.transitions for f in range(a, b)]
    leak = sum(f in covered for f in trans) / len(trans) if trans else 0.0
    bounds = [(c, c) for c in truth.cuts] + [(a, b) for _, a, b in truth.transitions]
    crossing = sum(any(x < a - 1 and y > b + 1 for x, y in spans) for a, b in bounds)
    return leak, crossing


def table(results: list[tuple]) -> str:
    kinds = [f"{k} {f}" if f else "hard cut" for k, f in KINDS]
    lines = ["| detector | " + " | ".join(kinds) + " | s per 1000 frames |",
             "|---|" + "---|" * (len(kinds) + 1)]
    for label in dict.fromkeys(r[0] for r in results):
        rows = [r for r in results if r[0] == label]
        cells = [f"{r[3].precision:.2f} / {r[3].recall:.2f}" for r in rows]
        per_k = 1000 * sum(r[4] for r in rows) / sum(r[5] for r in rows)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {per_k:.1f} |")
    lines += ["", "transition frames left inside clips / boundaries a clip runs across (split, max_clip_s: null):", "",
              "| detector | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for label in dict.fromkeys(r[0] for r in results):
        cells = [f"{r[6]:.0%} / {r[7]}" if r[2] else f"- / {r[7]}" for r in results if r[0] == label]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=6, help="transitions per kind")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=180)
    args = ap.parse_args()
    results = run(args.count, args.width, args.height)
    print("\nprecision / recall per transition kind (cells), analyze-stage time:\n")
    print(table(results))


if __name__ == "__main__":
    main()
