"""Forward+backward time of reference models: fused SDPA vs naive attention; optional GPU MFU.

CPU (what BENCHMARKS.md reports)::

    .venv/bin/python benchmarks/bench_models.py --threads 2 --reps 3

GPU, one bf16 DiT-XL/2 training step (forward + backward + AdamW) and its MFU::

    python benchmarks/bench_models.py --device cuda --dtype bf16 --cases DiT-XL/2 --batch 32 --optimizer \
        --no-naive --peak-tflops 989

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the naive-attention path (every
matmul visible; the fused SDPA kernel is not counted on CPU), so both paths are credited the same work.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from soraprep.models import MODELS, layers

# name -> (preset, overrides, latent shape per sample, conditioning kwargs builder)
CASES = {
    "DiT-S/2": ("DiT-S/2", {}, (4, 32, 32)),
    "DiT-XL/2": ("DiT-XL/2", {}, (4, 32, 32)),
    "VideoDiT-S/2": ("VideoDiT-S/2", {"text_dim": 512, "text_len": 32}, (4, 8, 32, 32)),
    "STDiT-S/2": ("STDiT-S/2", {"text_dim": 512, "text_len": 32}, (4, 8, 32, 32)),
}


def _inputs(name: str, model, batch: int, device, dtype):
    preset, _, shape = CASES[name]
    x = torch.randn(batch, *shape, device=device, dtype=dtype)
    t = torch.randint(0, 1000, (batch,), device=device)
    if preset.startswith(("DiT", "SiT")):
        return (x, t, torch.randint(0, 1000, (batch,), device=device)), {}
    cfg = model.config
    y = torch.randn(batch, cfg.text_len, cfg.text_dim, device=device, dtype=dtype)
    return (x, t), {"y": y, "mask": torch.ones(batch, cfg.text_len, dtype=torch.bool, device=device)}


def _step(model, args, kwargs, opt=None):
    out = model(*args, **kwargs)
    out.float().square().mean().backward()
    if opt is not None:
        opt.step()
        opt.zero_grad(set_to_none=True)
    else:
        model.zero_grad(set_to_none=True)


def count_flops(model, args, kwargs) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    layers.FUSED_ATTENTION = False
    try:
        with FlopCounterMode(display=False) as counter:
            _step(model, args, kwargs)
    finally:
        layers.FUSED_ATTENTION = True
    return float(counter.get_total_flops())


def time_steps(model, args, kwargs, reps: int, paths: tuple[bool, ...], device, opt=None) -> dict[bool, float]:
    """Median seconds per step for each attention path (True = fused SDPA); reps are interleaved so that
    load from other processes hits both paths alike."""
    times: dict[bool, list[float]] = {f: [] for f in paths}
    try:
        for f in paths:  # warm-up
            layers.FUSED_ATTENTION = f
            _step(model, args, kwargs, opt)
        for _ in range(reps):
            for f in paths:
                layers.FUSED_ATTENTION = f
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                _step(model, args, kwargs, opt)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[f].append(time.perf_counter() - t0)
    finally:
        layers.FUSED_ATTENTION = True
    return {f: statistics.median(v) for f, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=["DiT-S/2", "VideoDiT-S/2", "STDiT-S/2"], choices=sorted(CASES))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0 = torch default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--optimizer", action="store_true", help="include an AdamW step (a full training step)")
    p.add_argument("--no-naive", dest="naive", action="store_false", help="time only the fused SDPA path")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="peak dense TFLOP/s of the device, for MFU")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    print(f"torch {torch.__version__}, device {device}, dtype {a.dtype}, threads {torch.get_num_threads()}, "
          f"batch {a.batch}")
    print("| model | latent (C,[T,]H,W) | tokens | fwd+bwd GFLOP | fused SDPA s | naive s | speed-up | MFU |")
    print("|---|---|---|---|---|---|---|---|")
    for name in a.cases:
        preset, overrides, shape = CASES[name]
        torch.manual_seed(0)
        model = MODELS[preset](**overrides).to(device=device, dtype=dtype).train()
        args, kwargs = _inputs(name, model, a.batch, device, dtype)
        flops = count_flops(model, args, kwargs)  # naive path: every attention matmul is visible
        patch = model.patch_size if isinstance(model.patch_size, tuple) else (model.patch_size,) * 2
        tokens = 1
        for n, p_ in zip(shape[1:], patch, strict=True):
            tokens *= n // p_
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4) if a.optimizer else None
        timed = time_steps(model, args, kwargs, a.reps, (True, False) if a.naive else (True,), device, opt)
        fused, naive = timed[True], timed.get(False, float("nan"))
        mfu = f"{flops / fused / (a.peak_tflops * 1e12):.1%}" if a.peak_tflops else ""
        print(f"| {name} | {shape} | {tokens} | {flops / 1e9:.1f} | {fused:.3f} | {naive:.3f} | "
              f"{naive / fused:.2f}x | {mfu} |")


if __name__ == "__main__":
    main()
