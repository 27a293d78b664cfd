"""Estimated vs published GPU-hours for Open-Sora 1.1 / 1.2 / 2.0 stage 1 (the table in docs/estimate.md).

Run:  python benchmarks/estimate_vs_published.py

Fixed assumptions (not tuned to the published numbers): MFU 0.4 of the dense bf16 peak for the
denoiser and 0.3 for the VAE / T5 encoders when they run online during training; training FLOPs
= 3 x forward (4 x with gradient checkpointing); every GPU in a step trains one bucket at the local
batch size its config gives. The published configs do not say how samples spread over buckets, so
each stage is reported as the range over its *video* buckets (min .. max GPU-hours if every step
were that bucket). Model stand-ins (soraprep configs with the same per-token FLOPs) are explained in
docs/estimate.md. Bucket names -> pixels: 144p 144x256, 240p 240x432 (426 rounded up to a multiple
of 16), 256 256x256, 360p 368x640 (rounded up), 512 512x512. Configs: Open-Sora 1.1
configs/opensora-v1-1/train/stage2.py (first 24k steps, "similar to stage2.py" per the report) and stage1.py
(next 57k); Open-Sora 1.2 configs/opensora-v1-2/train/stage1.py (the "webvid" bucket_config); Open-Sora
2.0 configs/diffusion/train/stage1.py (256px buckets).
"""

from __future__ import annotations

from soraprep.estimate import count_model, get_gpu
from soraprep.estimate.plan import T5_XXL_ENCODER_PARAMS, shaped_config
from soraprep.estimate.vae import ldm_encoder_macs
from soraprep.models.config import PRESETS

MFU, PREP_MFU = 0.4, 0.3
RES = {"144p": (144, 256), "240p": (240, 432), "256": (256, 256), "360p": (368, 640), "512": (512, 512)}

OS11 = PRESETS["STDiT-XL/2"].replace(text_len=200)  # STDiT2-XL/2: spatial + temporal + cross attention per block
OS12 = PRESETS["STDiT-XL/2"].replace(text_len=300, mlp_ratio=9.0)  # STDiT3-XL/2, same per-token linear FLOPs
OS20 = PRESETS["VideoDiT-XL/2"].replace(hidden_size=3072, num_heads=24, depth=57, conditioning="none",
                                        in_channels=16, learn_sigma=False)  # Flux-style MMDiT, 19 + 38 blocks

# (name, model, vae compression, text tokens, online encoders?, gpu, gpus, published GPU-hours, phases)
# phase = (steps, recompute, {bucket: {frames: local batch}})
SYSTEMS = [
    ("Open-Sora 1.1 stage 1", OS11, (1, 8, 8), 200, True, "h800", 64, 64 * 24 * (4 + 2 + 14 / 24), [
        (24_000, "full", {"144p": {16: 17, 32: 9, 64: 4, 128: 1}, "256": {16: 17, 32: 9, 64: 4, 128: 1},
                          "240p": {16: 17, 32: 9, 64: 4, 128: 2}, "512": {16: 4, 32: 2, 64: 1}}),
        (57_000, "none", {"144p": {16: 6, 32: 3, 96: 1}, "256": {16: 3, 48: 1}, "240p": {16: 2, 32: 1}}),
    ]),
    ("Open-Sora 1.2 stage 1", OS12, (4, 8, 8), 300, True, "h100", 96, 35_000 * 30 / 68, [
        (30_000, "full", {"144p": {51: 51, 102: 27, 204: 13, 408: 6}, "256": {51: 20, 102: 10, 204: 5, 408: 2},
                          "240p": {51: 20, 102: 10, 204: 5, 408: 2}, "360p": {51: 8, 102: 4, 204: 2, 408: 1}}),
    ]),
    ("Open-Sora 2.0 stage 1", OS20, (4, 8, 8), 512, False, "h200", 224, 2240 * 24, [
        (85_000, "full", {"256": {f: b for f, b in [(5, 12), (33, 12), (37, 6), (65, 6), (69, 4), (97, 4),
                                                    (101, 3), (129, 3)]}}),
    ]),
]


def latent_frames(frames: int, t: int, system: str) -> int:
    """Open-Sora 1.2's VAE encodes 17-frame chunks to 5 latents each (51 -> 15); causal VAEs: ceil(F / t)."""
    if system.startswith("Open-Sora 1.2"):
        return -(-frames // 17) * 5
    return -(-frames // t)


def per_sample_flops(model, compression, text_tokens, online, recompute, frames, height, width,
                     system="") -> float:
    t = compression[0]
    cfg = shaped_config(model, frames=t * latent_frames(frames, t, system), height=height, width=width,
                        compression=compression)
    fwd = count_model(cfg).forward_flops
    flops = (4 if recompute == "full" else 3) * fwd / MFU  # "MFU-weighted" FLOPs: divide by peak later
    if online:  # VAE (SD VAE per frame; a temporal stage is not counted) and T5-XXL run every step
        enc = 2 * frames * ldm_encoder_macs(height, width) + 2 * T5_XXL_ENCODER_PARAMS * text_tokens
        flops += enc / PREP_MFU
    return flops


def main() -> None:
    print("| system | GPUs | steps | published GPU-h | estimated GPU-h (video buckets min .. max) "
          "| ratio est / published | implied MFU |")
    print("|---|---|---|---|---|---|---|")
    for name, model, comp, text, online, gpu, n, published, phases in SYSTEMS:
        peak = get_gpu(gpu).peak_flops("bf16")
        lo = hi = 0.0
        for steps, recompute, buckets in phases:
            step_cost = [b * per_sample_flops(model, comp, text, online, recompute, f, *RES[res], system=name)
                         for res, fb in buckets.items() for f, b in fb.items()]
            lo += steps * n * min(step_cost) / peak / 3600
            hi += steps * n * max(step_cost) / peak / 3600
        steps = sum(p[0] for p in phases)
        print(f"| {name} | {n} x {gpu} | {steps:,} | {published:,.0f} | {lo:,.0f} .. {hi:,.0f} | "
              f"{lo / published:.2f} .. {hi / published:.2f} | {MFU * lo / published:.2f} .. {MFU * hi / published:.2f} |")


if __name__ == "__main__":
    main()
