"""CPU cost per clip of the content scorers added for issue 14 (``nsfw``, ``ocr`` v2), and what OCR v2's
texture rules change, on generated clips.

    python benchmarks/bench_content_scorers.py                 # 8 clips per kind, 8 samples per clip
    python benchmarks/bench_content_scorers.py --clips 4       # quick look

Clip rows carry what ``analyze`` keeps: 224-px JPEG samples, one per second (here 8 per clip). Kinds:
``plain`` (generated moving texture, soraprep.video.synth), ``subtitles`` (the same with three subtitle
lines), ``texture`` (brick walls, fences, lattices from soraprep.video.textures, at the element sizes that
fooled OCR v1: no text at all). One process, onnxruntime with 1 intra-op thread (as in a curation worker);
cost = CPU time of this process (``time.process_time``: all its threads), median of ``--repeats`` passes
after a warm-up, so other jobs on the machine do not inflate it much. Prints a Markdown block.
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np

#: per kind, the worst case to report: the largest score where there is no text / no unsafe content,
#: the smallest text area where every clip has subtitles
AGG = {"plain": "max", "subtitles": "min", "texture": "max"}
HARD = [("brick_wall", 8), ("brick_wall", 12), ("fence", 12), ("fence", 16), ("lattice", 16)]


def _jpeg(rgb: np.ndarray) -> bytes:
    h, w = rgb.shape[:2]
    small = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (round(w * 224 / h), 224), interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def clip_rows(kind: str, n_clips: int, samples: int) -> list[dict]:
    from soraprep.video.synth import Shot, shot_frames
    from soraprep.video.textures import TEXTURES

    rows = []
    for c in range(n_clips):
        if kind == "texture":
            name, cell = HARD[c % len(HARD)]
            imgs = [TEXTURES[name](224, 398, c * samples + i, cell) for i in range(samples)]
        else:
            shot = Shot(samples * 5, "text" if kind == "subtitles" else "moving", seed=c)
            imgs = list(shot_frames(shot, c, 1280, 720))[::5]
        rows.append({"clip_id": f"{kind}{c}", "_samples": [(i * 25, _jpeg(im)) for i, im in enumerate(imgs)]})
    return rows


def cpu_per_clip(stage, rows: list[dict], repeats: int) -> tuple[float, list[dict]]:
    """Median CPU seconds per clip over ``repeats`` passes (batches of stage.batch_size), and the rows."""
    stage.setup()
    stage([dict(r) for r in rows[:1]])  # warm-up
    times, out = [], []
    for _ in range(repeats):
        out = [dict(r) for r in rows]
        t = time.process_time()
        for i in range(0, len(out), stage.batch_size):
            stage(out[i:i + stage.batch_size])
        times.append((time.process_time() - t) / len(rows))
        assert not any(r.get("error") for r in out), [r["error"] for r in out if r.get("error")]
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=8, help="clips per kind")
    ap.add_argument("--samples", type=int, default=8, help="sampled frames on each clip row (1 per second)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from soraprep.curate.score.nsfw import NsfwStage
    from soraprep.curate.score.ocr import OcrStage

    kinds = ("plain", "subtitles", "texture")
    rows = {k: clip_rows(k, args.clips, args.samples) for k in kinds}
    stages = [("nsfw, frames 8", NsfwStage(frames=8), 8, "nsfw_max"),
              ("nsfw, frames 4", NsfwStage(frames=4), 4, "nsfw_max"),
              ("ocr v1 rules (detection only)", OcrStage(frames=4, recognize=False, min_aspect=0.0), 4, "ocr_area_ratio"),
              ("ocr v2 (default: detection + recognition + rules)", OcrStage(frames=4), 4, "ocr_area_ratio")]
    print(f"\n{args.clips} clips per kind x {args.samples} samples (224 px JPEG), 1 thread, CPU time per clip "
          f"(median of {args.repeats} passes)\n")
    print("| stage | frames looked at | " + " | ".join(f"{k} (ms/clip)" for k in kinds)
          + " | " + " | ".join(f"{k}: {AGG[k]} of the column" for k in kinds) + " |")
    print("|---|---|" + "---|" * (2 * len(kinds)))
    for label, stage, frames, col in stages:
        cost, worst = [], []
        for k in kinds:
            c, out = cpu_per_clip(stage, rows[k], args.repeats)
            cost.append(f"{c * 1e3:.0f}")
            agg = max if AGG[k] == "max" else min
            worst.append(f"{agg(r[col] for r in out):.3f}")
        print(f"| {label} | {min(frames, args.samples)} | " + " | ".join(cost) + " | " + " | ".join(worst) + " |")


if __name__ == "__main__":
    main()
