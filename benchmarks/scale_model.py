"""A scale model of curation on a cluster, on paper, from per-stage costs measured on this machine.

    python benchmarks/scale_model.py                  # measure (~5 min on 2 cores), print the tables
    python benchmarks/scale_model.py --json           # the same as one JSON object
    python benchmarks/scale_model.py --costs FILE     # skip measuring: reuse a previous --json output
    python benchmarks/scale_model.py --costs benchmarks/scale_costs.json   # the costs BENCHMARKS.md reports
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
    """CPU seconds per clip and per clip-second: the default cut (stream copy; a scene that starts away from a
    keyframe gets its keyframe-less head re-encoded with x264 ultrafast), pure stream copy (no fallback: such
    heads are dropped), and exact (every clip re-encoded)."""
    from soraprep.stages import STAGES

    kept = [r for r in rows if r.get("keep")]
    res = {}
    for mode, kw in (("copy", {}), ("copy_only", {"fallback_exact": False}),
                     ("exact", {"mode": "exact", "preset": "veryfast"})):
        d = out / f"cut-{mode}"
        shutil.rmtree(d, ignore_errors=True)
        stage = STAGES["cut"](out_dir=str(d), **kw)
        stage.setup()
        batch = [dict(r) for r in kept]
        t = _cpu()
        stage(batch)
        cpu = _cpu() - t
        # pure stream copy cannot write a part without a keyframe (the heads the default re-encodes): skipped
        skipped = [r for r in batch if r.get("error") and mode == "copy_only"
                   and r["error"]["kind"] == "empty_after_snap"]
        errors = [r["error"] for r in batch if r.get("error") and r not in skipped]
        if errors:
            raise SystemExit(f"cut {mode} failed: {errors[0]}")
        written = [r for r in batch if not r.get("error")]
        clip_s = sum(r["duration_s"] for r in written)
        res[mode] = {"clips": len(written), "skipped": len(skipped), "clip_seconds": clip_s, "cpu_s": cpu,
                     "cpu_s_per_clip": cpu / len(written), "cpu_s_per_clip_second": cpu / clip_s}
    return res


def measure_ocr(n_clips: int = 8, frames: int = 4, repeats: int = 2) -> dict[str, float]:
    from bench_scorers import sample_rows

    from soraprep.curate.score.ocr import pick_samples
    from soraprep.stages import STAGES

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

    from soraprep.video.synth import shot_frames

    path = WORK / f"scale_grain{sigma:g}_{seconds}s_{width}x{height}.mp4"
    if path.exists():
        return path
    from bench_curate import shot_mix

    rng = np.random.default_rng(0)
    shots = shot_mix(rng, seconds)
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
    result["machine"]["load_1min_end"] = os.getloadavg()[0]
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


# ------------------------------------------------------------------------------------------------
# The model (soraprep/estimate/cluster.py) over the measured costs
# ------------------------------------------------------------------------------------------------


def stage_costs(measured: dict, res: str, *, footage: str = "grain", sampled: bool = False):
    from soraprep.estimate.cluster import StageCosts

    a = measured["analysis"][f"{res}-{footage}"]
    clip = measured["clip_l14"]
    return StageCosts(
        analysis_cpu_s=a["sampled_cpu_s_per_video_s" if sampled else "cpu_s_per_video_s"],
        cut_cpu_s=measured["cut"][res]["copy"]["cpu_s_per_clip_second"],
        ocr_cpu_s=measured["ocr"]["cpu_s_per_frame"], clip_cpu_s=clip["cpu_s_per_image"],
        clip_image_flops=clip["image_flops"], clip_text_flops=clip["text_flops_77_tokens"],
        source=f"benchmarks/scale_model.py on {measured['machine']['cpu']} ({measured['machine']['date_utc']} UTC)")


def model(measured: dict, *, nodes: list[str], mfu: float, video_hours: float, days: float,
          gpu_node_price: float | None) -> dict:
    from dataclasses import replace

    from soraprep.estimate.cluster import NODES, PANDA70M, Workload, balanced_mix, fleet, node_throughput

    workloads = {"default": Workload("default"),
                 "aesthetic+text_match+ocr": Workload("aesthetic+text_match+ocr", ocr=True, clip=True,
                                                      text_match=True)}
    specs = [NODES[n] for n in nodes]
    if gpu_node_price is not None:
        specs = [replace(n, price_per_hour=gpu_node_price, price_source="--gpu-node-price") if n.gpus else n
                 for n in specs]
    rows, mixes = [], []
    for res in RESOLUTIONS:
        for w in workloads.values():
            costs = stage_costs(measured, res, sampled=w.ocr or w.clip)
            for node in specs:
                t = node_throughput(node, costs, w, mfu=mfu)
                f = fleet(video_hours, t, wall_hours=days * 24)
                # vCPUs of stage work that keep one of the node's GPUs busy (decode, cut, ocr for its clips)
                per_gpu = None if t.gpu_side is None else t.gpu_side / node.gpus * t.cpu_s_per_video_s
                rows.append({"resolution": res, **t.to_dict(), "nodes": f.nodes, "node_hours": f.node_hours,
                             "cost": f.cost, "busy_vcpus_per_gpu": per_gpu})
            if w.clip:
                cpu = next((n for n in specs if not n.gpus), NODES["cpu-64"])
                for g in (n for n in specs if n.gpus):
                    m = balanced_mix(video_hours, costs, w, g, cpu, mfu=mfu, wall_hours=days * 24)
                    mixes.append({"resolution": res, **m.to_dict()})
    m = measured
    from soraprep.estimate.plan import CURATION_FPS_PER_CORE

    plan_cpu_s = 24 / CURATION_FPS_PER_CORE  # soraprep estimate's curation model (--fps 24), per video-second
    return {
        "measured": m, "video_hours": video_hours, "days": days, "mfu": mfu,
        "panda70m": PANDA70M, "workloads": {k: vars(v) for k, v in workloads.items()},
        "nodes": {n.name: vars(n) for n in specs}, "throughput": rows, "mixed_fleets": mixes,
        "plan_py_comparison": {
            "estimate_curation_cpu_s_per_video_s": plan_cpu_s, "estimate_decode_fps": CURATION_FPS_PER_CORE,
            **{f"measured_{k}": v["cpu_s_per_video_s"] + m["cut"][k.split("-")[0]]["copy"]["cpu_s_per_clip_second"]
               for k, v in m["analysis"].items()},
        },
        "assumptions": [
            "1 vCPU of a cloud node = 1 core of the measuring machine; cpu_efficiency 0.8 of a node's vCPUs do "
            "stage work (Ray, object-store I/O and the OS take the rest); SMT siblings share a core, so on "
            "hyperthreaded nodes the CPU side can be up to ~1.6x slower than modelled",
            "input = Panda-70M's published clip total (166.8 k video-hours, 8.5 s mean clip); the raw source "
            "videos are longer (everything split off or filtered also has to be decoded): scale linearly "
            "with --video-hours",
            "every input second ends in a written clip (kept_fraction 1) and is cut with the default stream copy",
            "model stages: at most 4 sampled frames per clip, one sample per second (the stages' defaults); "
            "CLIP ViT-L/14 for aesthetic and text_match, image embeddings shared; ocr on CPU "
            "(PP-OCR detector, det_side 320) also on GPU nodes",
            f"GPU time = FLOPs (torch FlopCounterMode) / (dense bf16 peak x mfu {mfu}); mfu 0.3 is soraprep "
            "estimate's --prep-mfu default for batched encoder inference, not a measurement; "
            "JPEG decode + resize for the GPU batches is not counted",
            "decode runs on CPUs on every node (PyAV/FFmpeg software decode; NVDEC is not used)",
            "cost = busy node-hours x on-demand $/h (the last node of a fleet idles part of the week)",
        ],
    }


def _fmt(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def print_tables(r: dict) -> None:
    m = r["measured"]
    print(f"\n### Measured per-stage costs ({m['machine']['cpu']}, {m['machine']['cores']} cores, "
          f"{m['machine']['date_utc']} UTC, 1-min load {m['machine']['load_1min']:.1f} at start, "
          f"{m['machine'].get('load_1min_end', float('nan')):.1f} at end; CPU time of one process)\n")
    print("| stage | footage | CPU-s per video-s (= CPU-h per video-h) | frames per CPU-s | bitrate (Mbit/s) |")
    print("|---|---|---|---|---|")
    for k, a in m["analysis"].items():
        res, footage = k.split("-")
        print(f"| analysis (probe+analyze+split+score+filter), default recipe | {res} {footage} | "
              f"{a['cpu_s_per_video_s']:.4f} | {a['frames_per_cpu_s']:.0f} | "
              f"{a['bitrate_mbps']:.2f} |")
        print(f"| ... with a JPEG sample every 1 s (model scorers) | {res} {footage} | "
              f"{a['sampled_cpu_s_per_video_s']:.4f} | "
              f"{25 / a['sampled_cpu_s_per_video_s']:.0f} | |")
    print("\n| stage | unit | CPU-s per unit | notes |\n|---|---|---|---|")
    for res, c in m["cut"].items():
        for mode, v in c.items():
            what = {"copy": "default cut (stream copy, keyframe-less heads re-encoded with ultrafast)",
                    "copy_only": "stream copy alone (fallback_exact: false)",
                    "exact": "exact (libx264 veryfast, crf 18)"}[mode]
            print(f"| cut {mode}, {res} grain | clip-second | {v['cpu_s_per_clip_second']:.4f} | {what}; "
                  f"{v['cpu_s_per_clip']:.3f} CPU-s per clip over {v['clips']} clips of {v['clip_seconds']:.0f} s"
                  + (f" ({v['skipped']} keyframe-less parts not written)" if v.get("skipped") else "") + " |")
    o, c = m["ocr"], m["clip_l14"]
    print(f"| ocr (PP-OCR det, det_side {o['det_side']}, 1 thread) | sampled frame | {o['cpu_s_per_frame']:.3f} | "
          f"224-px JPEG, independent of the source resolution |")
    print(f"| CLIP ViT-L/14 image tower, random weights, fp32, 1 thread | image | {c['cpu_s_per_image']:.3f} | "
          f"{c['params'] / 1e6:.1f} M params, {c['image_flops'] / 1e9:.1f} GFLOP/image; text tower "
          f"{c['text_flops_77_tokens'] / 1e9:.1f} GFLOP per 77-token caption |")
    print(f"\n### Throughput per node and nodes for {r['video_hours']:,.0f} video-hours "
          f"(Panda-70M) in {r['days']:g} days (GPU mfu {r['mfu']})\n")
    print("| res | recipe | node | CPU-s/video-s | CPU side (video-h/h) | GPU side (video-h/h) | node (video-h/h) | "
          "bottleneck (other side busy) | nodes | $ / video-h | $ total |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for t in r["throughput"]:
        other = t["gpu_busy"] if t["bottleneck"] == "cpu" else t["cpu_busy"]
        busy = "" if other is None else f" ({other:.0%})"
        print(f"| {t['resolution']} | {t['workload']} | {t['node']} | {t['cpu_s_per_video_s']:.3f} | "
              f"{_fmt(t['cpu_side'])} | {_fmt(t['gpu_side'])} | **{_fmt(t['video_hours_per_hour'])}** | "
              f"{t['bottleneck']}{busy} | {t['nodes']} | {t['usd_per_video_hour']:.3f} | {_fmt(t['cost'])} |")
    for t in r["throughput"]:
        if t["busy_vcpus_per_gpu"]:
            print(f"- {t['resolution']} {t['workload']}: one GPU of {t['node']} needs ~{t['busy_vcpus_per_gpu']:,.0f} "
                  "busy vCPUs of CPU stages (decode, cut, ocr) to stay busy")
    if r["mixed_fleets"]:
        print("\nGPU nodes for the model stages plus CPU nodes for the decode they cannot keep up with:\n")
        print("| res | recipe | fleet | GPU busy | $ for the week (whole fleet) |\n|---|---|---|---|---|")
        for f in r["mixed_fleets"]:
            print(f"| {f['resolution']} | {f['workload']} | {f['node']} | {f['extra']['gpu_busy']:.0%} | "
                  f"{_fmt(f['cost'])} |")
    p = r["plan_py_comparison"]
    print(f"\n`soraprep estimate`'s curation model (`--decode-fps {p['estimate_decode_fps']:g} --fps 24`): "
          f"{p['estimate_curation_cpu_s_per_video_s']:.3f} CPU-s per video-second; measured here (analysis + "
          "default cut): " + ", ".join(f"{k[9:]} {v:.3f}" for k, v in p.items() if k.startswith("measured_")))
    print("\nAssumptions:")
    for a in r["assumptions"]:
        print(f"- {a}")
    for n in r["nodes"].values():
        print(f"- node {n['name']}: {n['vcpus']} vCPU, {n['gpus']} GPU ({n['gpu'] or '-'}), "
              f"${n['price_per_hour']:.2f}/h: {n['price_source']}")


def main() -> None:
    from soraprep.estimate.cluster import NODES, PANDA70M

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=60, help="length of each generated video")
    ap.add_argument("--costs", help="a previous --json output (or its 'measured' part): reuse it, measure nothing")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    ap.add_argument("--nodes", default="cpu-64,8xh100,8xa100", help=f"node presets: {', '.join(NODES)}")
    ap.add_argument("--mfu", type=float, default=0.3, help="GPU utilisation of the model stages")
    ap.add_argument("--video-hours", type=float, default=PANDA70M["video_hours"], help="input to curate")
    ap.add_argument("--days", type=float, default=7.0, help="wall-clock deadline")
    ap.add_argument("--gpu-node-price", type=float, help="$ per hour of one 8-GPU node (default: 8x hardware.py)")
    args = ap.parse_args()
    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
    unknown = [n for n in nodes if n not in NODES]
    if unknown:
        raise SystemExit(f"unknown node preset(s) {unknown}: use {', '.join(NODES)}")
    if args.costs:
        data = json.loads(Path(args.costs).read_text())
        measured = data.get("measured", data)
    else:
        measured = measure(args.seconds)
    r = model(measured, nodes=nodes, mfu=args.mfu, video_hours=args.video_hours, days=args.days,
              gpu_node_price=args.gpu_node_price)
    if args.json:
        print(json.dumps(r, indent=2, default=str))
    else:
        print_tables(r)


if __name__ == "__main__":
    main()
