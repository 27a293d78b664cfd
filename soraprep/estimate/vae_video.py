"""Encode cost of the published 3D (causal) video VAEs, layer by layer, for runs that encode online.

Each encoder is walked from the clip's pixel shape to its latent: every convolution costs
``output voxels x kernel volume x C_in x C_out`` MACs with the padding and stride the official code
uses, attention ``4 C^2`` projection MACs per token plus ``2 L C`` per token for scores and sum over a
sequence of ``L``. Norms and activations are not counted (as everywhere in soraprep). The walks follow:

- ``hunyuan-video-vae``: Tencent/HunyuanVideo ``hyvideo/vae/vae.py`` ``EncoderCausal3D`` +
  ``unet_causal_3d_blocks.py`` (CausalConv3d: replicate-pad 2 frames in front, 1 px around) with the
  released ``vae/config.json`` (block_out_channels 128-256-512-512, layers_per_block 2, 16 latent
  channels, 4x8x8): 3 spatial + 2 temporal stride-2 convs, a mid-block attention (one head of 512)
  over *all* latent tokens of the clip, ``quant_conv``. ``hunyuan-video-vae-tiled``: the same encoder
  on 256-px spatial tiles every 192 px (``tile_overlap_factor`` 0.25), as ``spatial_tiled_encode`` does
  and as Open-Sora 2.0 trains with (configs/diffusion/train/image.py ``use_spatial_tiling=True``).
- ``cogvideox-vae``: diffusers ``autoencoder_kl_cogvideox.py`` ``CogVideoXEncoder3D`` with THUDM's
  config (128-256-256-512, 3 layers per block, 16 channels): causal 3x3x3 convs, downsampling = average
  pooling over time (first frame kept) in the first two blocks + a per-frame 3x3 stride-2 conv2d;
  two mid resnets, no attention, no quant_conv. Its batched-frames encoding with conv caches computes
  the same convolutions as one pass.
- ``wan2.1-vae``: Wan-Video/Wan2.1 ``wan/modules/vae.py`` (dim 96, mult 1-2-4-4, 2 res blocks,
  temporal downsample False-True-True, z 16): per-frame stride-2 conv2d downsampling, a (3,1,1)
  stride-2 time conv applied chunk by chunk (first frame alone, then chunks of 4 frames each with the
  last frame of the previous chunk), mid attention per frame (one head), the 1x1x1 ``conv1``.
- ``opensora-1.2-vae``: hpcaitech/Open-Sora ``OpenSoraVAE_V1_2``: the SDXL VAE encoder per frame
  (:func:`soraprep.estimate.vae.ldm_encoder_macs`) then ``VAE_Temporal_SD`` (``vae_temporal.py``:
  filters 128, mult 1-2-2-4, 4 res blocks, temporal downsample False-True-True) on each
  ``micro_frame_size=17`` chunk of the 4-channel latent, front-padded to a multiple of 4 (17 -> 5 latents).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

Triple = tuple[int, int, int]


def _triple(x: int | Triple) -> Triple:
    return (x, x, x) if isinstance(x, int) else tuple(x)  # type: ignore[return-value]


class _Walk:
    """The (C, T, H, W) shape of one clip through an encoder and the MACs of each layer on the way."""

    def __init__(self, channels: int, shape: Triple):
        self.c = channels
        self.shape: Triple = shape
        self.terms: list[tuple[str, str, int]] = []

    @property
    def voxels(self) -> int:
        return math.prod(self.shape)

    def conv(self, name: str, c_out: int, k: int | Triple = 3, stride: int | Triple = 1,
             pad: tuple[tuple[int, int], ...] | None = None) -> None:
        """Conv3d; ``pad`` per axis (before, after); default causal: (kt - 1, 0) in time, k // 2 in space."""
        k, stride = _triple(k), _triple(stride)
        if pad is None:
            pad = ((k[0] - 1, 0), (k[1] // 2, k[1] // 2), (k[2] // 2, k[2] // 2))
        out = tuple((n + lo + hi - kk) // s + 1 for n, (lo, hi), kk, s in zip(self.shape, pad, k, stride, strict=True))
        self.terms.append((name, "conv", math.prod(out) * math.prod(k) * self.c * c_out))
        self.c, self.shape = c_out, out  # type: ignore[assignment]

    def resnet(self, name: str, c_out: int, *, shortcut_k: int = 1) -> None:
        """norm-act-conv3x3x3-norm-act-conv3x3x3 (causal) + a k^3 shortcut conv when channels change."""
        c_in, shape = self.c, self.shape
        self.conv(f"{name}.conv1", c_out)
        self.conv(f"{name}.conv2", c_out)
        if c_in != c_out:
            self.terms.append((f"{name}.shortcut", "conv", math.prod(shape) * shortcut_k**3 * c_in * c_out))

    def attention(self, name: str, seq_len: int) -> None:
        """Single-head attention over sequences of ``seq_len`` tokens covering every voxel once."""
        v, c = self.voxels, self.c
        self.terms.append((f"{name}.qkv+out", "linear", v * 4 * c * c))
        self.terms.append((f"{name}.core", "attention", 2 * v * seq_len * c))

    def time(self, frames: int) -> None:
        """A parameter-free change of the frame count (average pooling)."""
        self.shape = (frames, self.shape[1], self.shape[2])

    @property
    def macs(self) -> int:
        return sum(m for *_, m in self.terms)


# ------------------------------------------------------------------------------------------------
# The encoders
# ------------------------------------------------------------------------------------------------


def hunyuan_encoder(frames: int, height: int, width: int, *, ch: tuple[int, ...] = (128, 256, 512, 512),
                    layers: int = 2, z: int = 16, time_down: int = 2, space_down: int = 3) -> _Walk:
    """HunyuanVideo ``AutoencoderKLCausal3D.encode`` without tiling (encoder + quant_conv)."""
    w = _Walk(3, (frames, height, width))
    w.conv("conv_in", ch[0])
    n = len(ch)
    for i, c in enumerate(ch):
        for j in range(layers):
            w.resnet(f"down_blocks.{i}.resnets.{j}", c)
        spatial = i < space_down
        temporal = i >= n - 1 - time_down and i != n - 1
        if spatial or temporal:
            w.conv(f"down_blocks.{i}.downsample", c, k=3, stride=(2 if temporal else 1, 2 if spatial else 1,
                                                                   2 if spatial else 1))
    w.resnet("mid_block.resnets.0", ch[-1])
    w.attention("mid_block.attention", w.voxels)  # all latent tokens of the clip, one head (causal mask)
    w.resnet("mid_block.resnets.1", ch[-1])
    w.conv("conv_out", 2 * z)
    w.conv("quant_conv", 2 * z, k=1)
    return w


def cogvideox_encoder(frames: int, height: int, width: int, *, ch: tuple[int, ...] = (128, 256, 256, 512),
                      layers: int = 3, z: int = 16, time_down: int = 2) -> _Walk:
    """diffusers ``AutoencoderKLCogVideoX`` encoder (no quant_conv)."""
    w = _Walk(3, (frames, height, width))
    w.conv("conv_in", ch[0])
    for i, c in enumerate(ch):
        for j in range(layers):
            w.resnet(f"down_blocks.{i}.resnets.{j}", c)
        if i != len(ch) - 1:
            t = w.shape[0]
            if i < time_down:  # avg-pool pairs of frames; an odd count keeps the first frame as is
                w.time(1 + (t - 1) // 2 if t % 2 and t > 1 else max(1, t // 2))
            # per-frame Conv2d(k=3, stride=2) after zero-padding right/bottom by 1
            w.conv(f"down_blocks.{i}.downsamplers.0", c, k=(1, 3, 3), stride=(1, 2, 2),
                   pad=((0, 0), (0, 1), (0, 1)))
    w.resnet("mid_block.resnets.0", ch[-1])
    w.resnet("mid_block.resnets.1", ch[-1])
    w.conv("conv_out", 2 * z)
    return w


def wan_encoder(frames: int, height: int, width: int, *, dim: int = 96, mult: tuple[int, ...] = (1, 2, 4, 4),
                res_blocks: int = 2, temporal: tuple[bool, ...] = (False, True, True), z: int = 16) -> _Walk:
    """Wan2.1 ``WanVAE_.encode``: frame 1 alone, then chunks of 4 frames (frames beyond 1 + 4k are dropped)."""
    chunks = (frames - 1) // 4
    w = _Walk(3, (1 + 4 * chunks, height, width))
    dims = [dim * m for m in (1, *mult)]
    w.conv("conv1", dims[0])
    per_chunk = 4
    for i, c in enumerate(dims[1:]):
        for j in range(res_blocks):
            w.resnet(f"downsamples.{i}.{j}", c)
        if i != len(mult) - 1:
            w.conv(f"downsamples.{i}.resample", c, k=(1, 3, 3), stride=(1, 2, 2), pad=((0, 0), (0, 1), (0, 1)))
            if temporal[i]:  # time_conv on each later chunk: (cached frame + chunk), k 3, stride 2, no pad
                out = (per_chunk + 1 - 3) // 2 + 1
                _, h, ww = w.shape
                w.terms.append((f"downsamples.{i}.time_conv", "conv", chunks * out * h * ww * 3 * c * c))
                per_chunk = out
                w.time(1 + chunks * out)
    w.resnet("middle.0", dims[-1])
    w.attention("middle.1", w.shape[1] * w.shape[2])  # per frame
    w.resnet("middle.2", dims[-1])
    w.conv("head", 2 * z)
    w.conv("conv1", 2 * z, k=1)
    return w


def opensora12_temporal_encoder(frames: int, height: int, width: int, *, filters: int = 128,
                                mult: tuple[int, ...] = (1, 2, 2, 4), res_blocks: int = 4,
                                temporal: tuple[bool, ...] = (False, True, True), latent: int = 4,
                                micro_frames: int = 17) -> _Walk:
    """Open-Sora 1.2 ``VAE_Temporal_SD`` over the SDXL latent (4 x frames x height/8 x width/8 given)."""
    factor = 2 ** sum(temporal)
    total = _Walk(latent, (frames, height, width))
    starts = range(0, frames, micro_frames) if micro_frames else [0]
    out_t = 0
    for s in starts:
        n = min(micro_frames or frames, frames - s)
        padded = n + (-n) % factor  # front time padding to a multiple of the temporal factor
        w = _Walk(latent, (padded, height, width))
        w.conv("encoder.conv_in", filters)
        c = filters
        for i, m in enumerate(mult):
            c = filters * m
            for j in range(res_blocks):
                w.resnet(f"encoder.block_res_blocks.{i}.{j}", c)
            if i < len(mult) - 1 and temporal[i]:  # CausalConv3d stride (2,1,1): time pad k-1 + 1 - stride
                w.conv(f"encoder.conv_blocks.{i}", c, k=3, stride=(2, 1, 1), pad=((1, 0), (1, 1), (1, 1)))
        for j in range(res_blocks):
            w.resnet(f"encoder.res_blocks.{j}", c)
        w.conv("encoder.conv2", 2 * latent, k=1)
        w.conv("quant_conv", 2 * latent, k=1)
        total.terms += w.terms
        out_t += w.shape[0]
    total.c, total.shape = 2 * latent, (out_t, height, width)
    return total


def _tiled(encoder: Callable[..., _Walk], tile: int, stride: int) -> Callable[[int, int, int], _Walk]:
    """Spatial tiling as HunyuanVideo's ``spatial_tiled_encode``: tiles of ``tile`` px every ``stride`` px."""

    def run(frames: int, height: int, width: int) -> _Walk:
        if height <= tile and width <= tile:  # only clips larger than one tile are tiled
            return encoder(frames, height, width)
        total = _Walk(3, (frames, height, width))
        for i in range(0, height, stride):
            for j in range(0, width, stride):
                total.terms += encoder(frames, min(tile, height - i), min(tile, width - j)).terms
        return total

    return run


def _opensora12(frames: int, height: int, width: int) -> _Walk:
    from soraprep.estimate.vae import ldm_encoder_macs

    w = opensora12_temporal_encoder(frames, height // 8, width // 8)
    w.terms.insert(0, ("vae_2d (SDXL VAE encoder, per frame)", "conv", frames * ldm_encoder_macs(height, width)))
    return w


# ------------------------------------------------------------------------------------------------
# Presets
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoVAE:
    """A published video VAE: its compression, latent channels, and an exact encoder walk."""

    name: str
    compression: Triple  # (T, H, W); causal VAEs map 1 + T*k frames to 1 + k latents
    latent_channels: int
    source: str
    walk: Callable[[int, int, int], _Walk]

    def encode_macs(self, frames: int, height: int, width: int) -> int:
        return self.walk(frames, height, width).macs

    def macs_per_pixel(self, frames: int = 129, height: int = 720, width: int = 1280) -> float:
        return self.encode_macs(frames, height, width) / (frames * height * width)


VIDEO_VAES: dict[str, VideoVAE] = {v.name: v for v in (
    VideoVAE("hunyuan-video-vae", (4, 8, 8), 16,
             "HunyuanVideo 3D causal VAE encoder, untiled (Tencent/HunyuanVideo hyvideo/vae); analytic",
             hunyuan_encoder),
    VideoVAE("hunyuan-video-vae-tiled", (4, 8, 8), 16,
             "HunyuanVideo 3D causal VAE encoder on 256-px tiles every 192 px (spatial_tiled_encode); analytic",
             _tiled(hunyuan_encoder, 256, 192)),
    VideoVAE("cogvideox-vae", (4, 8, 8), 16,
             "CogVideoX 3D causal VAE encoder (diffusers AutoencoderKLCogVideoX, THUDM config); analytic",
             cogvideox_encoder),
    VideoVAE("wan2.1-vae", (4, 8, 8), 16,
             "Wan2.1 3D causal VAE encoder, chunked 1 + 4k frames (Wan-Video/Wan2.1 wan/modules/vae.py); analytic",
             wan_encoder),
    VideoVAE("opensora-1.2-vae", (4, 8, 8), 4,
             "Open-Sora 1.2 VAE: SDXL VAE per frame + VAE_Temporal_SD on 17-frame chunks (17 -> 5); analytic",
             _opensora12),
)}
