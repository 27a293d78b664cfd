"""Training throughput of the soraprep loop (``soraprep.train.loop.Trainer``) with the compute estimator's
FLOPs per step beside the measured step time.

CPU (what BENCHMARKS.md reports)::

    .venv/bin/python benchmarks/bench_train.py --threads 2 --steps 5

GPU (one bf16 measurement of DiT-XL/2 at 256 px and of a small video DiT; MFU against the detected GPU)::

    python benchmarks/bench_train.py --cases DiT-XL/2@256 STDiT-S/2@video --device cuda --steps 20

Each case writes synthetic latents (autoencoder ``none``, so no VAE cost) to a temp folder and runs the real
loop: batch from the bucketed plan, per-sample draws, forward + backward (DDPM, learned sigma), grad clip,
AdamW, EMA. The estimator's training FLOPs are 3 x forward (``soraprep.estimate.flops``); implied FLOP/s =
estimated FLOPs per step / measured seconds per step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from soraprep.train.config import TrainConfig
from soraprep.train.loop import Trainer

# name -> (preset, model_args, latent shape (C, T, H, W), text (S, D) or None, batch)
CASES = {
    "tiny": ("STDiT-S/2", {"hidden_size": 64, "depth": 2, "num_heads": 4}, (4, 2, 8, 8), (8, 16), 4),
    "small-DiT-S/2": ("DiT-S/2", {}, (4, 1, 32, 32), None, 8),
    "small-STDiT": ("STDiT-S/2", {"depth": 6}, (4, 4, 16, 16), (32, 64), 4),
    "DiT-XL/2@256": ("DiT-XL/2", {}, (4, 1, 32, 32), None, 32),
    "STDiT-S/2@video": ("STDiT-S/2", {}, (4, 16, 32, 32), (120, 4096), 8),
}


def _latents(folder: Path, shape, text, n: int) -> None:
    g = torch.Generator().manual_seed(0)
    shard = {"latents": torch.randn((n, *shape), generator=g), "clip_ids": [str(i) for i in range(n)]}
    if text:
        shard["text"] = torch.randn((n, *text), generator=g, dtype=torch.float16)
        shard["mask"] = torch.ones(n, text[0], dtype=torch.bool)
    else:
        shard["labels"] = torch.randint(0, 1000, (n,), generator=g)
    torch.save(shard, folder / "shard.pt")
    index = {"version": 1, "autoencoder": {"kind": "none", "spec": "none", "latent_channels": shape[0],
                                           "compression": [1, 1, 1]},
             "text_encoder": {"spec": "", "kind": "t5", "dim": text[1], "max_length": text[0]} if text else None,
             "num_classes": 0 if text else 1000, "latent_scale": 1.0, "shards": [{"file": "shard.pt"}],
             "num_samples": n, "skipped": {}, "errors": []}
    (folder / "index.json").write_text(json.dumps(index))


def run_case(name: str, *, steps: int, warmup: int, device: str, precision: str) -> dict:
    preset, args, shape, text, batch = CASES[name]
    with tempfile.TemporaryDirectory() as tmp:
        _latents(Path(tmp), shape, text, n=2 * batch)
        cfg = TrainConfig(data=tmp, out=f"{tmp}/run", model=preset, model_args=args, batch_size=batch,
                          progress=False, device=device, precision=precision, resume=False)
        tr = Trainer(cfg)
        times = []
        for s in range(warmup + steps):
            if tr.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fb = tr.forward_backward(s)
            tr.optimizer_step(s)
            if tr.device.type == "cuda":
                torch.cuda.synchronize()
            if s >= warmup:
                times.append(time.perf_counter() - t0)
        flops_sample, tokens = tr.flops(fb["shapes"][0])
        dt = statistics.median(times)
        params = sum(p.numel() for p in tr.model.parameters())
        res = {"case": name, "preset": preset, "model_args": args, "latent": list(shape), "text": text,
               "batch": batch, "params": params, "tokens_per_sample": tokens,
               "est_train_flops_per_step": flops_sample * batch, "step_s": dt, "step_s_all": times,
               "implied_flops_per_s": flops_sample * batch / dt, "samples_per_s": batch / dt,
               "tokens_per_s": tokens * batch / dt, "device": str(tr.device), "bf16": tr.bf16,
               "threads": torch.get_num_threads(),
               "mfu": flops_sample * batch / dt / tr.peak if tr.peak else None}
        return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["tiny", "small-DiT-S/2", "small-STDiT"], choices=list(CASES))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--json", action="store_true", help="print one JSON object per case")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print("| case | model | latent (C,T,H,W) | batch | params | tokens/sample | estimated train GFLOP/step "
          "| measured s/step | implied GFLOP/s | samples/s | tokens/s | MFU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in a.cases:
        r = run_case(name, steps=a.steps, warmup=a.warmup, device=a.device, precision=a.precision)
        if a.json:
            print(json.dumps(r))
        mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] else "—"
        print(f"| {name} | {r['preset']} {r['model_args'] or ''} | {'x'.join(map(str, r['latent']))} | {r['batch']} "
              f"| {r['params'] / 1e6:.2f} M | {r['tokens_per_sample']} | {r['est_train_flops_per_step'] / 1e9:.2f} "
              f"| {r['step_s']:.3f} | {r['implied_flops_per_s'] / 1e9:.1f} | {r['samples_per_s']:.1f} "
              f"| {r['tokens_per_s']:.0f} | {mfu} |", flush=True)


if __name__ == "__main__":
    main()
