"""Video VAE encode cost: the analytic layer walks against FlopCounterMode counts of small causal-3D
encoders built here with the published layer structure (channels shrunk), and the presets' latent shapes."""

from __future__ import annotations

import pytest

from soraprep.estimate.vae import VIDEO_VAES, ldm_encoder_macs, vae_encode_cost
from soraprep.estimate.vae_video import (
    cogvideox_encoder,
    hunyuan_encoder,
    opensora12_temporal_encoder,
    wan_encoder,
)


@pytest.mark.parametrize("name,frames,h,w,latent", [
    ("hunyuan-video-vae", 129, 720, 1280, (33, 90, 160)),
    ("cogvideox-vae", 49, 480, 720, (13, 60, 90)),
    ("wan2.1-vae", 81, 480, 832, (21, 60, 104)),
    ("opensora-1.2-vae", 51, 240, 426 // 2 * 2, (15, 30, 53)),  # 3 chunks of 17 frames -> 3 x 5 latents
])
def test_latent_shapes_match_the_published_compression(name, frames, h, w, latent):
    walk = VIDEO_VAES[name].walk(frames, h, w)
    assert walk.shape == latent
    assert walk.c == 2 * VIDEO_VAES[name].latent_channels  # mean and log-variance


def test_costs_per_pixel_and_plumbing():
    # 720p x 129 frames: Wan2.1's VAE is the cheapest, HunyuanVideo's mid attention over 475k tokens is
    # 30 % of its untiled cost; all cost about 1-3 SD-VAE encodes of every frame
    sd = ldm_encoder_macs(720, 1280) / (720 * 1280)
    per_px = {n: v.macs_per_pixel() for n, v in VIDEO_VAES.items()}
    assert per_px["wan2.1-vae"] < per_px["cogvideox-vae"] < per_px["hunyuan-video-vae"]
    assert all(sd < x < 4 * sd for x in per_px.values())
    hy = hunyuan_encoder(129, 720, 1280)
    attn = sum(m for n, c, m in hy.terms if c == "attention")
    assert attn == 2 * (33 * 90 * 160) ** 2 * 512
    assert 0.25 < attn / hy.macs < 0.35
    cost = vae_encode_cost("wan2.1-vae", frames=81, height=480, width=832)
    assert cost.macs_per_clip == wan_encoder(81, 480, 832).macs and "Wan2.1" in cost.source
    os12 = VIDEO_VAES["opensora-1.2-vae"].encode_macs(17, 256, 256)
    assert os12 == 17 * ldm_encoder_macs(256, 256) + opensora12_temporal_encoder(17, 32, 32).macs
    # tiling (256-px tiles every 192 px) only starts above 256 px, and then re-encodes the overlaps
    tiled = VIDEO_VAES["hunyuan-video-vae-tiled"]
    assert tiled.encode_macs(17, 256, 256) == hunyuan_encoder(17, 256, 256).macs
    tiles = [(256, 256), (256, 128), (128, 256), (128, 128)]  # 320 x 320: tiles at 0 and 192 on each axis
    assert tiled.encode_macs(17, 320, 320) == sum(hunyuan_encoder(17, h, w).macs for h, w in tiles)
    with pytest.raises(ValueError, match="wan2.1-vae"):
        vae_encode_cost("wan2.2-vae", frames=1, height=8, width=8)


# ------------------------------------------------------------------------------------------------
# Small torch builds with the published structure: FlopCounterMode == the walk
# ------------------------------------------------------------------------------------------------


def _modules():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class CausalConv(nn.Module):
        """Conv3d after padding (kt - 1 [or tpad], 0) frames and k // 2 pixels."""

        def __init__(self, cin, cout, k=3, stride=1, tpad=None):
            super().__init__()
            k = (k, k, k) if isinstance(k, int) else k
            self.pad = (k[2] // 2, k[2] // 2, k[1] // 2, k[1] // 2, k[0] - 1 if tpad is None else tpad, 0)
            self.conv = nn.Conv3d(cin, cout, k, stride)

        def forward(self, x):
            return self.conv(F.pad(x, self.pad))

    class Res(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv1, self.conv2 = CausalConv(cin, cout), CausalConv(cout, cout)
            self.short = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

        def forward(self, x):
            return self.short(x) + self.conv2(F.silu(self.conv1(F.silu(x))))

    class Attn(nn.Module):
        """One head; ``per_frame`` attends within each frame (Wan), else over the whole clip (HunyuanVideo)."""

        def __init__(self, c, per_frame):
            super().__init__()
            self.qkv, self.out, self.per_frame = nn.Linear(c, 3 * c), nn.Linear(c, c), per_frame

        def forward(self, x):
            n, c, t, h, w = x.shape
            seq = x.permute(0, 2, 3, 4, 1).reshape(n * t if self.per_frame else n, -1, c)
            q, k, v = self.qkv(seq).chunk(3, dim=-1)
            y = self.out(((q @ k.transpose(1, 2)) / c**0.5).softmax(-1) @ v)
            return x + y.reshape(n, t, h, w, c).permute(0, 4, 1, 2, 3)

    class FrameDown(nn.Module):
        """Per-frame Conv2d(k=3, stride=2) after zero-padding right/bottom (CogVideoX, Wan)."""

        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, stride=2)

        def forward(self, x):
            n, c, t, h, w = x.shape
            y = self.conv(F.pad(x.transpose(1, 2).reshape(n * t, c, h, w), (0, 1, 0, 1)))
            return y.reshape(n, t, c, *y.shape[-2:]).transpose(1, 2)

    class AvgTime(nn.Module):
        def forward(self, x):
            if x.shape[2] % 2 and x.shape[2] > 1:  # keep the first frame, pool the rest in pairs
                rest = x[:, :, 1:]
                return torch.cat([x[:, :, :1], (rest[:, :, 0::2] + rest[:, :, 1::2]) / 2], dim=2)
            return (x[:, :, 0::2] + x[:, :, 1::2]) / 2

    class WanTimeConv(nn.Module):
        """(3,1,1) stride-2 conv on each chunk after the first, with the previous chunk's last frame."""

        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv3d(c, c, (3, 1, 1), stride=(2, 1, 1))

        def forward(self, x, chunk):
            parts, prev = [x[:, :, :1]], x[:, :, :1]
            for s in range(1, x.shape[2], chunk):
                cur = x[:, :, s:s + chunk]
                parts.append(self.conv(torch.cat([prev[:, :, -1:], cur], dim=2)))
                prev = cur
            return torch.cat(parts, dim=2)

    return nn, CausalConv, Res, Attn, FrameDown, AvgTime, WanTimeConv


def _build(kind):
    nn, CausalConv, Res, Attn, FrameDown, AvgTime, WanTimeConv = _modules()
    if kind == "hunyuan":
        ch, layers, z = (8, 16, 32, 32), 1, 4
        mods, c = [CausalConv(3, 8)], 8
        for i, co in enumerate(ch):
            mods += [Res(c if j == 0 else co, co) for j in range(layers)]
            c = co
            if i < 3:
                mods.append(CausalConv(co, co, 3, stride=(2 if i in (1, 2) else 1, 2, 2)))
        mods += [Res(c, c), Attn(c, per_frame=False), Res(c, c), CausalConv(c, 2 * z), nn.Conv3d(2 * z, 2 * z, 1)]
        return nn.Sequential(*mods), lambda f, h, w: hunyuan_encoder(f, h, w, ch=ch, layers=layers, z=z)
    if kind == "cogvideox":
        ch, layers, z = (8, 16, 16, 32), 2, 4
        mods, c = [CausalConv(3, 8)], 8
        for i, co in enumerate(ch):
            mods += [Res(c if j == 0 else co, co) for j in range(layers)]
            c = co
            if i < 3:
                mods += ([AvgTime()] if i < 2 else []) + [FrameDown(co)]
        mods += [Res(c, c), Res(c, c), CausalConv(c, 2 * z)]
        return nn.Sequential(*mods), lambda f, h, w: cogvideox_encoder(f, h, w, ch=ch, layers=layers, z=z)
    if kind == "wan":
        dim, mult, z = 8, (1, 2, 4, 4), 4
        dims = [dim * m for m in (1, *mult)]

        class Wan(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv_in = CausalConv(3, dims[0])
                self.blocks = nn.ModuleList()
                for i, co in enumerate(dims[1:]):
                    stage = [Res(dims[i], co), Res(co, co)]
                    if i < 3:
                        stage.append(FrameDown(co))
                    self.blocks.append(nn.ModuleList(stage))
                self.times = nn.ModuleList([WanTimeConv(dims[2]), WanTimeConv(dims[3])])
                self.mid = nn.Sequential(Res(dims[-1], dims[-1]), Attn(dims[-1], per_frame=True),
                                         Res(dims[-1], dims[-1]), CausalConv(dims[-1], 2 * z),
                                         nn.Conv3d(2 * z, 2 * z, 1))

            def forward(self, x):
                x, chunk = self.conv_in(x), 4
                for i, stage in enumerate(self.blocks):
                    for m in stage:
                        x = m(x)
                    if i in (1, 2):
                        x, chunk = self.times[i - 1](x, chunk), chunk // 2
                return self.mid(x)

        return Wan(), lambda f, h, w: wan_encoder(f, h, w, dim=dim, mult=mult, z=z)
    if kind == "opensora-1.2-temporal":
        filters, mult, rb, lat = 8, (1, 2, 2, 4), 2, 4
        mods, c = [CausalConv(lat, filters)], filters
        for i, m in enumerate(mult):
            co = filters * m
            mods += [Res(c if j == 0 else co, co) for j in range(rb)]
            c = co
            if i in (1, 2):
                mods.append(CausalConv(co, co, 3, stride=(2, 1, 1), tpad=1))
        mods += [Res(c, c) for _ in range(rb)] + [nn.Conv3d(c, 2 * lat, 1), nn.Conv3d(2 * lat, 2 * lat, 1)]
        return nn.Sequential(*mods), lambda f, h, w: opensora12_temporal_encoder(
            f, h, w, filters=filters, mult=mult, res_blocks=rb, latent=lat, micro_frames=0)
    raise ValueError(kind)


@pytest.mark.parametrize("kind,shape", [
    ("hunyuan", (9, 24, 40)), ("hunyuan", (1, 16, 16)),
    ("cogvideox", (9, 16, 24)), ("cogvideox", (8, 16, 16)),
    ("wan", (9, 16, 24)), ("wan", (5, 16, 16)),
    ("opensora-1.2-temporal", (8, 6, 10)),
])
def test_walk_equals_flop_counter_of_a_built_encoder(kind, shape):
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    model, walk = _build(kind)
    channels = 4 if kind.startswith("opensora") else 3
    x = torch.randn(1, channels, *shape)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        out = model(x)
    w = walk(*shape)
    assert tuple(out.shape[2:]) == w.shape, kind
    assert 2 * w.macs == fc.get_total_flops(), kind
