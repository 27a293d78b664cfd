"""Spacetime-patch video DiT: 3D patches of VAE latents, 3D sin-cos positions, adaLN-Zero blocks with
(a) full spacetime attention or (b) factorized spatial-then-temporal attention (Latte / STDiT style), and
caption conditioning by cross-attention (PixArt-alpha / Open-Sora style).

Any latent size (T, H, W) divisible by the patch works, square or not, so one model serves bucketed
batches; positions are computed for the batch's grid.

Example::

    from soraprep.models import MODELS
    model = MODELS["STDiT-S/2"](text_dim=512, text_len=77)
    out = model(x, t, y=captions, mask=mask)   # x (N, 4, T, H, W), captions (N, S, 512), mask (N, S)
"""

from __future__ import annotations

import torch
from torch import nn

from soraprep.models.config import VideoDiTConfig
from soraprep.models.layers import (
    Attention,
    CrossAttention,
    FinalLayer,
    LabelEmbedder,
    Mlp,
    PatchEmbed3D,
    TimestepEmbedder,
    modulate,
    sincos_3d,
)

# ------------------------------------------------------------------------------------------------
# Caption embedding
# ------------------------------------------------------------------------------------------------


class CaptionEmbedder(nn.Module):
    """Caption token embeddings (N, S, text_dim) -> (N, S, D); dropped captions become a learned null caption."""

    def __init__(self, text_dim: int, hidden_size: int, text_len: int, dropout_prob: float):
        super().__init__()
        self.y_proj = Mlp(text_dim, hidden_size, approximate="tanh", out_dim=hidden_size)
        self.y_embedding = nn.Parameter(torch.randn(text_len, text_dim) / text_dim**0.5)  # the null caption
        self.dropout_prob = dropout_prob

    def null(self, n: int, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Null caption embeddings (n, S, text_dim) and an all-True mask (n, S)."""
        emb = self.y_embedding[: length or self.y_embedding.shape[0]]
        return emb.unsqueeze(0).expand(n, -1, -1), torch.ones(n, emb.shape[0], dtype=torch.bool, device=emb.device)

    def forward(self, y: torch.Tensor, mask: torch.Tensor | None, train: bool,
                force_drop_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            if y.shape[1] > self.y_embedding.shape[0]:
                raise ValueError(f"caption length {y.shape[1]} exceeds text_len={self.y_embedding.shape[0]}")
            drop = (torch.rand(y.shape[0], device=y.device) < self.dropout_prob) if force_drop_ids is None \
                else force_drop_ids == 1
            null_y, null_mask = self.null(y.shape[0], y.shape[1])
            y = torch.where(drop[:, None, None], null_y.to(y.dtype), y)
            if mask is not None:
                mask = torch.where(drop[:, None], null_mask, mask.bool())
        return self.y_proj(y), mask  # (N, S, D), (N, S)


# ------------------------------------------------------------------------------------------------
# Block
# ------------------------------------------------------------------------------------------------


class VideoDiTBlock(nn.Module):
    """adaLN-Zero block: self-attention (full, or spatial + temporal), caption cross-attention, MLP."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, *, factorized: bool, cross: bool):
        super().__init__()
        self.factorized = factorized
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, qkv_bias=True)
        if factorized:
            self.norm_temp = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
            self.attn_temp = Attention(hidden_size, num_heads, qkv_bias=True)
        self.cross_attn = CrossAttention(hidden_size, num_heads) if cross else None
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), approximate="tanh")
        n_mod = 9 if factorized else 6  # (shift, scale, gate) for each residual branch that is modulated
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, n_mod * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor, grid: tuple[int, int, int],
                cond: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: (N, L, D) with L = T*H*W in (t, h, w) order; c: (N, D); cond: (N, S, D); mask: (N, S)
        n, length, d = x.shape
        t, hw = grid[0], grid[1] * grid[2]
        mods = self.adaLN_modulation(c).chunk(9 if self.factorized else 6, dim=1)  # each (N, D)
        h = modulate(self.norm1(x), mods[0], mods[1])  # (N, L, D)
        if self.factorized:
            h = self.attn(h.reshape(n * t, hw, d)).reshape(n, length, d)  # spatial: tokens of one frame
            x = x + mods[2].unsqueeze(1) * h
            h = modulate(self.norm_temp(x), mods[6], mods[7])  # (N, L, D)
            h = h.reshape(n, t, hw, d).transpose(1, 2).reshape(n * hw, t, d)  # temporal: one position over time
            h = self.attn_temp(h).reshape(n, hw, t, d).transpose(1, 2).reshape(n, length, d)
            x = x + mods[8].unsqueeze(1) * h  # (N, L, D)
        else:
            x = x + mods[2].unsqueeze(1) * self.attn(h)  # full spacetime attention over L tokens
        if self.cross_attn is not None and cond is not None:
            x = x + self.cross_attn(x, cond, mask)  # (N, L, D)
        return x + mods[5].unsqueeze(1) * self.mlp(modulate(self.norm2(x), mods[3], mods[4]))  # (N, L, D)


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------


class VideoDiT(nn.Module):
    """Video diffusion transformer over (N, C, T, H, W) latents."""

    def __init__(self, config: VideoDiTConfig | None = None, **kwargs):
        super().__init__()
        config = (config or VideoDiTConfig()).replace(**kwargs) if kwargs else (config or VideoDiTConfig())
        self.config = config
        self.in_channels, self.out_channels = config.in_channels, config.out_channels
        self.patch_size = tuple(config.patch_size)
        d = config.hidden_size
        self.x_embedder = PatchEmbed3D(self.patch_size, config.in_channels, d)
        self.t_embedder = TimestepEmbedder(d)
        if config.conditioning == "text":
            self.y_embedder: nn.Module | None = CaptionEmbedder(config.text_dim, d, config.text_len,
                                                                config.caption_dropout_prob)
        elif config.conditioning == "class":
            self.y_embedder = LabelEmbedder(config.num_classes, d, config.caption_dropout_prob)
        else:
            self.y_embedder = None
        factorized, cross = config.attention == "factorized", config.conditioning == "text"
        self.blocks = nn.ModuleList([
            VideoDiTBlock(d, config.num_heads, config.mlp_ratio, factorized=factorized, cross=cross)
            for _ in range(config.depth)
        ])
        pt, ph, pw = self.patch_size
        self.final_layer = FinalLayer(d, pt * ph * pw, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier linears; zeroed (adaLN-Zero): every adaLN modulation, cross-attention output projections
        and the final layer, so a fresh model is the identity per block and outputs exactly zero."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if isinstance(self.y_embedder, LabelEmbedder):
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        elif isinstance(self.y_embedder, CaptionEmbedder):
            nn.init.normal_(self.y_embedder.y_embedding, std=self.config.text_dim**-0.5)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
            if block.cross_attn is not None:
                nn.init.zeros_(block.cross_attn.proj.weight)
                nn.init.zeros_(block.cross_attn.proj.bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def grid(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """Token grid (T', H', W') for latents of shape (N, C, T, H, W); fails loud if not divisible."""
        size = tuple(shape[-3:])
        if any(s % p for s, p in zip(size, self.patch_size, strict=True)):
            raise ValueError(f"latent size (T, H, W)={size} must be divisible by patch_size={self.patch_size}")
        return tuple(s // p for s, p in zip(size, self.patch_size, strict=True))  # type: ignore[return-value]

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(N, L, pt*ph*pw*C) -> (N, C, T, H, W)."""
        (gt, gh, gw), (pt, ph, pw), c = grid, self.patch_size, self.out_channels
        x = x.reshape(x.shape[0], gt, gh, gw, pt, ph, pw, c)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (N, C, gt, pt, gh, ph, gw, pw)
        return x.reshape(x.shape[0], c, gt * pt, gh * ph, gw * pw)

    def null_condition(self, n: int, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The unconditional ``(y, mask)`` for classifier-free guidance (null caption or null label)."""
        if isinstance(self.y_embedder, CaptionEmbedder):
            return self.y_embedder.null(n, length)
        if isinstance(self.y_embedder, LabelEmbedder):
            device = self.y_embedder.embedding_table.weight.device
            return torch.full((n,), self.config.num_classes, dtype=torch.long, device=device), None
        raise ValueError("an unconditional model (conditioning='none') has no null condition")

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        # x: (N, C, T, H, W); t: (N,); y: (N, S, text_dim) captions | (N,) labels | None; mask: (N, S) bool
        grid = self.grid(x.shape)
        d = self.config.hidden_size
        x = self.x_embedder(x)  # (N, L, D), L = T' * H' * W'
        x = x + sincos_3d(d, *grid).to(device=x.device, dtype=x.dtype).unsqueeze(0)  # (N, L, D)
        c = self.t_embedder(t)  # (N, D)
        cond = None
        if isinstance(self.y_embedder, CaptionEmbedder):
            if y is None:
                raise ValueError("conditioning='text' needs caption embeddings y of shape (N, S, text_dim)")
            cond, mask = self.y_embedder(y, mask, self.training, force_drop_ids)  # (N, S, D), (N, S)
        elif isinstance(self.y_embedder, LabelEmbedder):
            c = c + self.y_embedder(y, self.training, force_drop_ids)  # (N, D)
        for block in self.blocks:
            x = block(x, c, grid, cond, mask)  # (N, L, D)
        x = self.final_layer(x, c)  # (N, L, pt*ph*pw*C_out)
        return self.unpatchify(x, grid)  # (N, C_out, T, H, W)

    def forward_with_cfg(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cfg_scale: float,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
        """Classifier-free guidance, DiT's convention: the batch is [conditional; unconditional] (second half
        of ``y``/``mask`` from :meth:`null_condition`), the first half of ``x`` is used for both halves."""
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half], dim=0), t, y, mask)  # (N, C_out, T, H, W)
        guided, rest = out[:, : self.in_channels], out[:, self.in_channels :]
        cond, uncond = guided.chunk(2, dim=0)
        half_guided = uncond + cfg_scale * (cond - uncond)
        return torch.cat([torch.cat([half_guided, half_guided], dim=0), rest], dim=1)
