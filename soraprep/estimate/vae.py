"""Autoencoder costs: the VideoGPT VQ-VAE (soraprep's own, 3D convolutions) and the SD VAE encoder.

The data-preparation budget needs the cost of *encoding* every training clip once (latents are cached,
see ``soraprep.train.latents``); the training budget of a VQ-VAE itself needs the full model. Conv MACs
are ``output voxels x kernel volume x C_in x C_out``; transposed convs count ``padded input voxels x
kernel volume x C_in x C_out`` as executed (VideoGPT's same-padding adds ``k - s`` voxels per axis, which
on small latents is more than the useful work, as torch's FlopCounterMode also counts it); axial
attention costs ``4 C^2`` projection MACs per voxel per axis plus ``2 n_axis C`` for scores and sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from soraprep.estimate.flops import Activations, ModelCount, _Tally, register_counter


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# ------------------------------------------------------------------------------------------------
# VideoGPT VQ-VAE (Yan et al., 2021): encoder / decoder of strided 3D convs + attention-residual blocks
# ------------------------------------------------------------------------------------------------


def _res_stack(t: _Tally, prefix: str, c: int, n_layers: int, voxels: int, shape: tuple[int, int, int]) -> int:
    """n_layers x AttentionResidualBlock(c) + BatchNorm; returns activation elements kept."""
    t.param(f"{prefix}.bn", (2 * c + c + 2 * c) * n_layers + 2 * c, "per_token")  # BN(c), BN(c/2), BN(c); final BN
    t.param(f"{prefix}.conv3", c * (c // 2) * 27, "per_token", repeat=n_layers)  # bias=False
    t.mac(f"{prefix}.conv3", "conv", voxels * c * (c // 2) * 27, repeat=n_layers)
    t.param(f"{prefix}.conv1", (c // 2) * c, "per_token", repeat=n_layers)  # bias=False
    t.mac(f"{prefix}.conv1", "conv", voxels * (c // 2) * c, repeat=n_layers)
    # AxialBlock: attention along W, H and T; each MultiHeadAttention = q, k, v (no bias) + fc (bias)
    t.param(f"{prefix}.axial.proj", 3 * (4 * c * c + c), "per_token", repeat=n_layers)
    t.mac(f"{prefix}.axial.proj", "linear", voxels * 3 * 4 * c * c, repeat=n_layers)
    t.mac(f"{prefix}.axial.core", "attention", voxels * 2 * c * sum(shape), repeat=n_layers)
    # kept per voxel and layer: BN/ReLU/conv in-outs (~3c + 3 c/2 + 3c) and q, k, v, out, fc-out per axis
    return n_layers * voxels * (6 * c + 3 * (c // 2) + 3 * 5 * c) + 2 * voxels * c


@register_counter("vqvae")
def _count(cfg, name: str | None = None) -> ModelCount:
    return count_vqvae(cfg, name=name or "VQVAE")


def count_vqvae(cfg, *, name: str = "VQVAE", input_size: tuple[int, int, int] | None = None) -> ModelCount:
    """Parameters and forward MACs of the VQ-VAE on one clip (encoder + quantizer + decoder)."""
    T, H, W = input_size or cfg.input_size
    c = cfg.n_hiddens
    times = [int(math.log2(d)) for d in cfg.downsample]
    n_conv = max(times)
    t = _Tally()
    act = 0
    shape = (T, H, W)
    c_in = cfg.in_channels
    # encoder: n_conv strided k=4 convs, then a k=3 conv, then the residual stack
    left = list(times)
    for i in range(n_conv):
        stride = tuple(2 if x > 0 else 1 for x in left)
        shape = tuple(_ceil_div(s, st) for s, st in zip(shape, stride, strict=True))
        vox = math.prod(shape)
        t.param(f"encoder.convs.{i}", c_in * c * 64 + c, "per_token")
        t.mac(f"encoder.convs.{i}", "conv", vox * c_in * c * 64)
        act += vox * (c_in if i == 0 else 0) + 2 * vox * c
        c_in = c
        left = [x - 1 for x in left]
    latent_shape = shape
    vox = math.prod(shape)
    t.param("encoder.conv_last", c * c * 27 + c, "per_token")
    t.mac("encoder.conv_last", "conv", vox * c * c * 27)
    act += _res_stack(t, "encoder.res_stack", c, cfg.n_res_layers, vox, shape)
    e = cfg.embedding_dim
    t.param("pre_vq_conv", c * e + e, "per_token")
    t.mac("pre_vq_conv", "conv", vox * c * e)
    # codebook (a buffer, EMA-updated, not a parameter): distances to every code
    t.mac("codebook.distances", "linear", vox * cfg.n_codes * e)
    t.param("post_vq_conv", e * c + c, "per_token")
    t.mac("post_vq_conv", "conv", vox * e * c)
    act += vox * 3 * e
    act += _res_stack(t, "decoder.res_stack", c, cfg.n_res_layers, vox, shape)
    left = list(times)
    for i in range(n_conv):
        c_out = cfg.in_channels if i == n_conv - 1 else c
        stride = tuple(2 if x > 0 else 1 for x in left)
        t.param(f"decoder.convts.{i}", c * c_out * 64 + c_out, "per_token")
        # as executed: the input is same-padded by k - s per dim, then every (padded) input voxel is
        # scattered through the k^3 kernel (the padding=k-1 crop discards the border afterwards)
        padded = math.prod(n + 4 - st for n, st in zip(shape, stride, strict=True))
        t.mac(f"decoder.convts.{i}", "conv", padded * c * c_out * 64)
        shape = tuple(s * st for s, st in zip(shape, stride, strict=True))
        act += 2 * math.prod(shape) * c_out
        left = [x - 1 for x in left]
    acts = Activations(none=act, selective=act, full_stored=act // max(1, 2 * cfg.n_res_layers), full_working=act)
    return ModelCount(name, cfg, (cfg.in_channels, T, H, W), vox, 0, tuple(t.params), tuple(t.terms), acts,
                      notes=(f"latent grid {latent_shape}; activation counts are approximate for the VQ-VAE",))


def vqvae_encode_macs(cfg, *, frames: int, height: int, width: int) -> int:
    """MACs to encode one clip to code indices: encoder + pre-VQ conv + codebook distances."""
    full = count_vqvae(cfg, input_size=(frames, height, width))
    return sum(m.macs for m in full.terms if not m.name.startswith(("decoder", "post_vq")))


# ------------------------------------------------------------------------------------------------
# Latent-diffusion (SD) KL-f8 VAE encoder, applied frame by frame
# ------------------------------------------------------------------------------------------------


def ldm_encoder_macs(height: int, width: int, *, ch: int = 128, ch_mult: tuple[int, ...] = (1, 2, 4, 4),
                     num_res_blocks: int = 2, in_channels: int = 3, z_channels: int = 4) -> int:
    """MACs of the LDM/SD ``Encoder`` (+ quant_conv) on one ``height x width`` image."""
    macs = 0
    h, w = height, width
    macs += h * w * in_channels * ch * 9  # conv_in
    block_in = ch
    for level, mult in enumerate(ch_mult):
        block_out = ch * mult
        for _ in range(num_res_blocks):
            macs += h * w * 9 * (block_in * block_out + block_out * block_out)  # conv1, conv2
            if block_in != block_out:
                macs += h * w * block_in * block_out  # nin_shortcut 1x1
            block_in = block_out
        if level != len(ch_mult) - 1:
            h, w = _ceil_div(h, 2), _ceil_div(w, 2)
            macs += h * w * 9 * block_in * block_in  # Downsample: 3x3 conv, stride 2
    n = h * w
    macs += 2 * n * 9 * 2 * block_in * block_in  # mid: two ResnetBlocks
    macs += n * 4 * block_in * block_in + 2 * n * n * block_in  # mid AttnBlock: q,k,v,proj 1x1 + attention
    macs += n * 9 * block_in * 2 * z_channels  # conv_out (mean and logvar)
    macs += n * (2 * z_channels) ** 2  # quant_conv 1x1
    return macs


@dataclass(frozen=True)
class VAECost:
    """Encoder cost of one clip and where the number comes from."""

    name: str
    macs_per_clip: int
    source: str


def vae_encode_cost(vae: str, *, frames: int, height: int, width: int,
                    macs_per_pixel: float | None = None) -> VAECost:
    """Encoder MACs for one clip. ``vae``: ``sd`` (per frame), ``none``, a published video VAE of
    :data:`VIDEO_VAES` (``hunyuan-video-vae``, ``cogvideox-vae``, ``wan2.1-vae``, ...) or a soraprep VQ-VAE preset."""
    pixels = frames * height * width
    if macs_per_pixel is not None:
        if macs_per_pixel < 0:
            raise ValueError(f"--vae-macs-per-pixel must be >= 0, got {macs_per_pixel}")
        return VAECost("custom", int(macs_per_pixel * pixels), f"user-given {macs_per_pixel:g} MACs per pixel")
    if vae == "none":
        return VAECost("none", 0, "latents given (no encoding counted)")
    if vae == "sd":
        return VAECost("sd", frames * ldm_encoder_macs(height, width),
                       "SD KL-f8 encoder (ch 128, mult 1-2-4-4), applied per frame; analytic")
    if vae in VIDEO_VAES:
        v = VIDEO_VAES[vae]
        return VAECost(vae, v.encode_macs(frames, height, width), v.source)
    from soraprep.models.config import PRESETS, VQVAEConfig

    cfg = PRESETS.get(vae)
    if not isinstance(cfg, VQVAEConfig):
        vq = sorted(k for k, v in PRESETS.items() if isinstance(v, VQVAEConfig))
        raise ValueError(f"unknown VAE {vae!r}: use sd, none, one of {', '.join([*VIDEO_VAES, *vq])}, "
                         "or --vae-macs-per-pixel")
    return VAECost(vae, vqvae_encode_macs(cfg, frames=frames, height=height, width=width),
                   f"soraprep {vae} encoder; analytic")


# Published 3D video VAEs (HunyuanVideo, CogVideoX, Wan2.1, Open-Sora 1.2): exact encoder walks.
from soraprep.estimate.vae_video import VIDEO_VAES, VideoVAE  # noqa: E402,F401
