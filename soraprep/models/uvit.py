"""U-ViT (Bao et al., 2023): a ViT whose time and condition are tokens, with long skips between shallow
and deep blocks fused by ``Linear(2D, D)``, and an optional 3x3 conv on the output.

Module names equal the official ``baofff/U-ViT`` ``libs/uvit.py`` (``patch_embed.proj``, ``in_blocks``,
``mid_block``, ``out_blocks.*.skip_linear``, ``decoder_pred``, ``final_layer``), so the released
``imagenet256_uvit_huge.pth`` loads with ``strict=True`` into ``MODELS["U-ViT-H/2"]()``.

The official model predicts noise on a discrete 1000-step schedule; it has no learned sigma, so pair it
with ``create_diffusion(learn_sigma=False, ...)``.
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from torch import nn

from soraprep.models.config import UViTConfig
from soraprep.models.layers import Attention, Mlp, PatchEmbed, timestep_embedding


class Block(nn.Module):
    """Pre-norm ViT block; output blocks first fuse the long skip: x = skip_linear([x, skip])."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, *, qkv_bias: bool, qk_scale: float | None,
                 skip: bool = False, use_checkpoint: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.use_checkpoint = use_checkpoint

    def _forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))  # (N, L, 2D) -> (N, L, D)
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.use_checkpoint and self.training:
            return torch.utils.checkpoint.checkpoint(self._forward, x, skip, use_reentrant=False)
        return self._forward(x, skip)


class UViT(nn.Module):
    """U-ViT over (N, C, H, W) latents; ``forward(x, timesteps, y=None)`` predicts noise (N, C, H, W)."""

    def __init__(self, config: UViTConfig | None = None, **kwargs):
        super().__init__()
        config = (config or UViTConfig()).replace(**kwargs) if kwargs else (config or UViTConfig())
        self.config = config
        d, self.in_chans, self.patch_size = config.hidden_size, config.in_channels, config.patch_size
        self.embed_dim = d
        block_kw = dict(qkv_bias=config.qkv_bias, qk_scale=config.qk_scale, use_checkpoint=config.use_checkpoint)
        self.patch_embed = PatchEmbed(config.patch_size, config.in_channels, d)
        self.time_embed = nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d)) \
            if config.mlp_time_embed else nn.Identity()
        if config.num_classes > 0:
            self.label_emb = nn.Embedding(config.num_classes, d)
        self.extras = 2 if config.num_classes > 0 else 1  # leading tokens: [label,] time
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, d))
        self.in_blocks = nn.ModuleList(
            [Block(d, config.num_heads, config.mlp_ratio, **block_kw) for _ in range(config.depth // 2)])
        self.mid_block = Block(d, config.num_heads, config.mlp_ratio, **block_kw)
        self.out_blocks = nn.ModuleList([
            Block(d, config.num_heads, config.mlp_ratio, skip=config.skip, **block_kw)
            for _ in range(config.depth // 2)
        ])
        self.norm = nn.LayerNorm(d)
        self.decoder_pred = nn.Linear(d, config.patch_size**2 * config.in_channels)
        self.final_layer = nn.Conv2d(config.in_channels, config.in_channels, 3, padding=1) if config.conv else nn.Identity()
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """As the official code: truncated-normal(0.02) positions and linears, zero biases, unit LayerNorms."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, p*p*C) -> (N, C, H, W); patch pixels in (p1, p2, C) order as the official einops pattern."""
        p, c = self.patch_size, self.in_chans
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c).permute(0, 5, 1, 3, 2, 4)  # (N, C, h, p1, w, p2)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        # x: (N, C, H, W); timesteps: (N,); y: (N,) labels (num_classes - 1 is the null label) or None
        x = self.patch_embed(x)  # (N, L, D)
        length = x.shape[1]
        time_token = self.time_embed(timestep_embedding(timesteps, self.embed_dim).to(x.dtype)).unsqueeze(1)
        x = torch.cat([time_token, x], dim=1)  # (N, 1 + L, D)
        if y is not None:
            x = torch.cat([self.label_emb(y).unsqueeze(1), x], dim=1)  # (N, 2 + L, D)
        x = x + self.pos_embed  # (N, extras + L, D)
        skips = []
        for blk in self.in_blocks:
            x = blk(x)
            skips.append(x)
        x = self.mid_block(x)
        for blk in self.out_blocks:
            x = blk(x, skips.pop())  # (N, extras + L, D)
        x = self.decoder_pred(self.norm(x))  # (N, extras + L, p*p*C)
        x = x[:, self.extras:, :]  # drop the time / label tokens: (N, L, p*p*C)
        assert x.shape[1] == length
        return self.final_layer(self.unpatchify(x))  # (N, C, H, W)
