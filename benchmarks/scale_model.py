"""A scale model of curation on a cluster, on paper, from per-stage costs measured on this machine.

    python benchmarks/scale_model.py                  # measure (~5 min on 2 cores), print the tables
    python benchmarks/scale_model.py --json           # the same as one JSON object
    python benchmarks/scale_model.py --costs FILE     # skip measuring: reuse a previous --json output
    python benchmarks/scale_model.py --seconds 20     # quick look (shorter videos)

Measured here, as CPU seconds of this process (``time.process_time``: user + sys of all its threads, so
other jobs on the box do not inflate it; libx264's and the decoder's threads are included):
  analysis   probe + analyze (the one decode pass) + split + score + filter of the default recipe, per
             video-second, on generated 1280x720 and 1920x1080 25 fps H.264 (x264 veryfast, crf 23); and the
             same with a JPEG sample every second (what ocr / aesthetic / text_match ask of the decode pass)
  cut        the default cut (stream copy, keyframe-less heads re-encoded with ultrafast) and `mode: exact`
             (libx264 veryfast, crf 18), per second of clip written
  ocr        the ocr stage (PP-OCR detector via rapidocr's shipped ONNX weights, det_side 320, one thread),
             per sampled frame (224-px JPEGs: the same for every source resolution)
  clip       a CLIP ViT-L/14 image tower with RANDOM weights built from its real config (transformers
             CLIPVisionConfig; cost does not depend on the weight values), fp32, one thread, per image;
             its FLOPs (and the L/14 text tower's, for text_match) counted with torch's FlopCounterMode
GPU stages are NOT measured (no GPU here): they are modelled from those FLOPs, a GPU's dense peak
(soraprep/estimate/hardware.py) and a stated utilisation. The model itself is soraprep/estimate/cluster.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as in a curation worker

ROOT = Path(__file__).resolve().parent
WORK = ROOT / "_work"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

RESOLUTIONS = {"720p": (1280, 720), "1080p": (1920, 1080)}


# ------------------------------------------------------------------------------------------------
# Measurements (CPU seconds of this process)
# ------------------------------------------------------------------------------------------------


def _cpu() -> float:
    return time.process_time()


def _analysis_stages(recipe, out: Path):
    names = recipe.analysis_stage_names() + ["filter"]
    stages = [s for s in recipe.build(out) if s.name in names and s.name != "ocr"]
    for s in stages:
        s.setup()
    return stages


def measure_analysis(path: Path, recipe, out: Path, repeats: int = 2) -> tuple[float, list[dict], dict]:
    """(best CPU seconds for probe..filter, the rows of the last pass, per-stage CPU seconds of the best)."""
    stages = _analysis_stages(recipe, out)
    best, best_parts, rows = float("inf"), {}, []
    for _ in range(repeats):
        rows = [{"source": str(path), "video_id": path.stem, "_base_id": path.stem, "_key": path.stem}]
        parts = {}
        for s in stages:
            t = _cpu()
            rows = s(rows)
            parts[s.name] = _cpu() - t
        total = sum(parts.values())
        if total < best:
            best, best_parts = total, parts
    errors = [r["error"] for r in rows if r.get("error")]
    if errors:
        raise SystemExit(f"analysis failed on {path}: {errors[0]}")
    return best, rows, best_parts


def measure_cuts(rows: list[dict], out: Path) -> dict[str, dict[str, float]]:
    """CPU seconds per clip and per clip-second for the default cut (copy + fallback) and for exact."""
    from soraprep.curate.registry import STAGES

    kept = [r for r in rows if r.get("keep")]
    res = {}
    for mode, kw in (("copy", {}), ("exact", {"mode": "exact", "preset": "veryfast"})):
        d = out / f"cut-{mode}"
        shutil.rmtree(d, ignore_errors=True)
        stage = STAGES["cut"](out_dir=str(d), **kw)
        stage.setup()
        batch = [dict(r) for r in kept]
        t = _cpu()
        stage(batch)
        cpu = _cpu() - t
        errors = [r["error"] for r in batch if r.get("error")]
        if errors:
            raise SystemExit(f"cut {mode} failed: {errors[0]}")
        clip_s = sum(r["duration_s"] for r in batch)
        res[mode] = {"clips": len(batch), "clip_seconds": clip_s, "cpu_s": cpu,
                     "cpu_s_per_clip": cpu / len(batch), "cpu_s_per_clip_second": cpu / clip_s}
    return res


def measure_ocr(n_clips: int = 8, frames: int = 4, repeats: int = 2) -> dict[str, float]:
    from bench_scorers import sample_rows

    from soraprep.curate.registry import STAGES
    from soraprep.curate.score.ocr import pick_samples

    rows = sample_rows(n_clips, frames)
    stage = STAGES["ocr"](frames=frames)
    stage.setup()
    stage([dict(r) for r in rows[:2]])  # warm-up
    n = sum(len(pick_samples(r["_samples"], frames)) for r in rows)
    best = float("inf")
    for _ in range(repeats):
        batch = [dict(r) for r in rows]
        t = _cpu()
        for i in range(0, len(batch), stage.batch_size):
            stage(batch[i:i + stage.batch_size])
        best = min(best, _cpu() - t)
        if any(r.get("error") for r in batch):
            raise SystemExit(f"ocr failed: {[r['error'] for r in batch if r.get('error')][0]}")
    return {"frames": n, "cpu_s_per_frame": best / n, "det_side": stage.det_side}


def vit_l14_configs():
    """The shapes of openai/clip-vit-large-patch14 (its config.json), nothing downloaded."""
    from transformers import CLIPTextConfig, CLIPVisionConfig

    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=224, patch_size=14, projection_dim=768,
                              hidden_act="quick_gelu")
    text = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                          num_attention_heads=12, max_position_embeddings=77, projection_dim=768,
                          hidden_act="quick_gelu")
    return vision, text


def count_flops(model, inputs: dict) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(**inputs)
    return int(fc.get_total_flops())


def measure_clip(batch: int = 8, repeats: int = 3) -> dict[str, float]:
    import torch
    from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    torch.set_num_threads(1)
    vcfg, tcfg = vit_l14_configs()
    vision = CLIPVisionModelWithProjection(vcfg).eval()
    px = torch.randn(batch, 3, 224, 224)
    # FLOPs with eager attention: FlopCounterMode sees its two matmuls (a fused CPU SDPA kernel is not counted)
    vcfg._attn_implementation = tcfg._attn_implementation = "eager"
    image_flops = count_flops(CLIPVisionModelWithProjection(vcfg).eval(), {"pixel_values": px[:1]})
    text = CLIPTextModelWithProjection(tcfg).eval()
    text_flops = count_flops(text, {"input_ids": torch.randint(0, 49408, (1, 77))})
    del text
    params = sum(p.numel() for p in vision.parameters())
    with torch.no_grad():
        vision(pixel_values=px)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t = _cpu()
            vision(pixel_values=px)
            best = min(best, _cpu() - t)
    return {"params": params, "image_flops": image_flops, "text_flops_77_tokens": text_flops,
            "cpu_s_per_image": best / batch, "batch": batch, "dtype": "float32", "threads": 1}


def make_grainy(seconds: int, width: int, height: int, sigma: float = 4.0) -> Path:
    """bench_curate's shot mix plus film grain (a fixed pool of 7 noise frames, cycled), x264 veryfast crf 23:
    the smooth generated footage alone encodes at ~0.3-0.6 Mbit/s, far below real 720p/1080p uploads
    (~1.5-5 Mbit/s), and decode cost grows with the bitrate. Cached in benchmarks/_work/."""
    import av
    import numpy as np

    from soraprep.video.synth import Shot, shot_frames

    path = WORK / f"scale_grain{sigma:g}_{seconds}s_{width}x{height}.mp4"
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    shots, total = [], 0
    while total < seconds * 25:
        k = int(rng.integers(3 * 25, 12 * 25))
        kind = str(rng.choice(["moving"] * 6 + ["static", "text", "blur"]))
        shots.append(Shot(min(k, seconds * 25 - total), kind, speed=float(rng.uniform(0.5, 5)),
                          seed=int(rng.integers(1 << 30))))
        total += shots[-1].frames
    grain = [np.clip(rng.normal(0, sigma, (height, width, 1)), -127, 127).astype(np.int16) for _ in range(7)]
    tmp = path.with_suffix(".tmp.mp4")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(tmp), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "veryfast", "x264-params": "crf=23"}
        n = 0
        for i, shot in enumerate(shots):
            for rgb in shot_frames(shot, i, width, height):
                frame = av.VideoFrame.from_ndarray(np.clip(rgb + grain[n % 7], 0, 255).astype(np.uint8), format="rgb24")
                frame.pts = n
                c.mux(s.encode(frame))
                n += 1
        c.mux(s.encode())
    tmp.rename(path)
    return path


def measure(seconds: int) -> dict:
    from bench_curate import make_inputs

    from soraprep.curate.recipe import load_recipe

    default = load_recipe("default")
    sampled = default.with_overrides(ocr={})  # the model scorers' recipe: a JPEG every second from the decode pass
    out = WORK / "scale_out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    result: dict = {"machine": _machine(), "analysis": {}, "cut": {}}
    for res, (w, h) in RESOLUTIONS.items():
        for footage in ("smooth", "grain"):
            path = make_inputs(1, seconds, w, h, "scale")[0] if footage == "smooth" else make_grainy(seconds, w, h)
            cpu, rows, parts = measure_analysis(path, default, out)
            cpu_s, rows_s, parts_s = measure_analysis(path, sampled, out)
            samples = sum(len(r.get("_samples") or []) for r in rows_s)
            result["analysis"][f"{res}-{footage}"] = {
                "video_seconds": seconds, "frames": seconds * 25,
                "bitrate_mbps": path.stat().st_size * 8 / seconds / 1e6,
                "cpu_s_per_video_s": cpu / seconds, "per_stage_cpu_s": parts,
                "sampled_cpu_s_per_video_s": cpu_s / seconds, "sampled_per_stage_cpu_s": parts_s,
                "samples_per_video_s": samples / seconds, "frames_per_cpu_s": seconds * 25 / cpu,
                "kept_clips": sum(1 for r in rows if r.get("keep")), "rows": len(rows),
            }
            print(f"[{res} {footage}] analysis {cpu / seconds:.4f} CPU-s per video-s", file=sys.stderr)
        result["cut"][res] = measure_cuts(rows, out)  # the grainy footage: cut cost grows with bytes / detail
        print(f"[{res}] cut {result['cut'][res]}", file=sys.stderr)
    result["ocr"] = measure_ocr()
    print(f"ocr {result['ocr']}", file=sys.stderr)
    result["clip_l14"] = measure_clip()
    print(f"clip {result['clip_l14']}", file=sys.stderr)
    shutil.rmtree(out, ignore_errors=True)
    return result


def _machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_1min": os.getloadavg()[0],
            "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=60, help="length of each generated video")
    ap.add_argument("--costs", help="a previous --json output: reuse its measured costs, measure nothing")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = ap.parse_args()
    if args.costs:
        measured = json.loads(Path(args.costs).read_text())["measured"]
    else:
        measured = measure(args.seconds)
    print(json.dumps({"measured": measured}, indent=2))


if __name__ == "__main__":
    main()
