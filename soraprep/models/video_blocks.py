"""Building blocks of :mod:`soraprep.models.video_dit`: the modulated block (full / factorized / spatial /
temporal attention, cross-attention, GELU or SwiGLU MLP, adaLN-Zero or adaLN-single), the final layers,
Open-Sora's micro-condition embedder, RoPE angles and the caption embedder.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from soraprep.models.config import VideoDiTConfig
from soraprep.models.layers import (
    Attention,
    CrossAttention,
    FinalLayer,
    Mlp,
    SwiGLU,
    timestep_embedding,
)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (N, L, D) scaled and shifted by (N, 1 | L, D) vectors (per sample, frame or token)."""
    return x * (1 + scale) + shift


@functools.lru_cache(maxsize=64)
def rope_angles(pos_embed: str, head_dim: int, grid: tuple[int, int, int]) -> torch.Tensor | None:
    """Rotary angles (L, head_dim / 2) for the (t, h, w) token grid, or None without RoPE.

    "rope": 3D RoPE, the head_dim / 2 frequency slots split t : h : w = c - 2(c//3) : c//3 : c//3 (Wan's split);
    "sincos2d_rope_t": RoPE over time only, on all slots (Open-Sora 1.1/1.2 temporal attention)."""
    t, h, w = grid
    c = head_dim // 2

    def freqs(slots: int) -> torch.Tensor:  # theta 10000 over a rotary dim of 2 * slots
        return 1.0 / 10000 ** (torch.arange(slots, dtype=torch.float64, device="cpu") * 2 / (2 * slots))

    # explicit CPU: the result is cached, and models may be built under `with torch.device("meta")`
    tt, hh, ww = torch.meshgrid(*(torch.arange(n, device="cpu") for n in (t, h, w)), indexing="ij")
    if pos_embed == "sincos2d_rope_t":
        return (tt.reshape(-1, 1).double() * freqs(c)).float()
    if pos_embed != "rope":
        return None
    ct, ch = c - 2 * (c // 3), c // 3
    parts = [tt.reshape(-1, 1) * freqs(ct), hh.reshape(-1, 1) * freqs(ch), ww.reshape(-1, 1) * freqs(ch)]
    return torch.cat(parts, dim=1).float()  # (L, c)


# ------------------------------------------------------------------------------------------------
# Caption embedding
# ------------------------------------------------------------------------------------------------


class CaptionEmbedder(nn.Module):
    """Caption token embeddings (N, S, text_dim) -> (N, S, D); dropped captions become a learned null caption
    (``null="param"``; ``"buffer"``: a non-trainable one as PixArt-alpha / Open-Sora; ``"none"``: no null)."""

    def __init__(self, text_dim: int, hidden_size: int, text_len: int, dropout_prob: float, *,
                 null: str = "param", norm: bool = False):
        super().__init__()
        self.norm = nn.LayerNorm(text_dim, elementwise_affine=False, eps=1e-6) if norm else None
        self.y_proj = Mlp(text_dim, hidden_size, approximate="tanh", out_dim=hidden_size)
        emb = torch.randn(text_len, text_dim) / text_dim**0.5  # the null caption
        self.y_embedding: torch.Tensor | None
        if null == "param":
            self.y_embedding = nn.Parameter(emb)
        elif null == "buffer":
            self.register_buffer("y_embedding", emb)
        else:
            self.y_embedding = None
        self.dropout_prob = dropout_prob

    def null(self, n: int, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Null caption embeddings (n, S, text_dim) and an all-True mask (n, S)."""
        if self.y_embedding is None:
            raise ValueError("this model has no null caption (null_caption='none'): encode the empty prompt")
        emb = self.y_embedding[: length or self.y_embedding.shape[0]]
        return emb.unsqueeze(0).expand(n, -1, -1), torch.ones(n, emb.shape[0], dtype=torch.bool, device=emb.device)

    def forward(self, y: torch.Tensor, mask: torch.Tensor | None, train: bool,
                force_drop_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.y_embedding is not None and ((train and self.dropout_prob > 0) or force_drop_ids is not None):
            if y.shape[1] > self.y_embedding.shape[0]:
                raise ValueError(f"caption length {y.shape[1]} exceeds text_len={self.y_embedding.shape[0]}")
            drop = (torch.rand(y.shape[0], device=y.device) < self.dropout_prob) if force_drop_ids is None \
                else force_drop_ids == 1
            null_y, null_mask = self.null(y.shape[0], y.shape[1])
            y = torch.where(drop[:, None, None], null_y.to(y.dtype), y)
            if mask is not None:
                mask = torch.where(drop[:, None], null_mask, mask.bool())
        if self.norm is not None:
            y = self.norm(y)
        return self.y_proj(y), mask  # (N, S, D), (N, S)


# ------------------------------------------------------------------------------------------------
# Block
# ------------------------------------------------------------------------------------------------


def _axis_attention(attn: Attention, h: torch.Tensor, axis: str, grid: tuple[int, int, int],
                    rope: tuple[torch.Tensor, torch.Tensor] | None,
                    skiparse: tuple[int, bool] | None = None) -> torch.Tensor:
    """Self-attention of (N, L, D) tokens in (t, h, w) order over all of them ("full"), within each frame
    ("spatial": N*T' sequences of H'W') or along time at each position ("temporal": N*H'W' sequences of T').
    ``rope`` is (cos, sin), each (L, hd/2), rearranged like the tokens."""
    n, length, d = h.shape
    t, hw = grid[0], grid[1] * grid[2]
    if axis == "full":
        return attn(h, rope=None if rope is None else tuple(r[None, None] for r in rope), skiparse=skiparse)
    if axis == "spatial":
        r = None if rope is None else tuple(z.reshape(t, 1, hw, -1).repeat(n, 1, 1, 1) for z in rope)
        return attn(h.reshape(n * t, hw, d), rope=r).reshape(n, length, d)
    r = None if rope is None else tuple(z.reshape(t, hw, -1).transpose(0, 1).reshape(hw, 1, t, -1).repeat(n, 1, 1, 1)
                                        for z in rope)
    h = h.reshape(n, t, hw, d).transpose(1, 2).reshape(n * hw, t, d)  # one position over time
    return attn(h, rope=r).reshape(n, hw, t, d).transpose(1, 2).reshape(n, length, d)


class VideoDiTBlock(nn.Module):
    """Modulated block: self-attention (``axis`` "full" | "spatial" | "temporal", or "factorized" = spatial
    then temporal), caption cross-attention, MLP. Modulation: adaLN-Zero (own ``adaLN_modulation``) or
    adaLN-single (a learned ``scale_shift_table`` added to the model's shared projection)."""

    def __init__(self, cfg: VideoDiTConfig, *, axis: str, cross: bool, skiparse: tuple[int, bool] | None = None):
        super().__init__()
        d, heads = cfg.hidden_size, cfg.num_heads
        self.axis, self.single, self.skiparse = axis, cfg.modulation == "single", skiparse
        self.temporal_modulation = axis == "factorized" and cfg.temporal_modulation
        bias = cfg.block_bias
        self.norm1 = nn.LayerNorm(d, elementwise_affine=cfg.norm_affine, eps=1e-6)
        self.attn = Attention(d, heads, qkv_bias=bias, proj_bias=bias, qk_norm=cfg.qk_norm)
        if axis == "factorized":
            if self.temporal_modulation:
                self.norm_temp = nn.LayerNorm(d, elementwise_affine=cfg.norm_affine, eps=1e-6)
            self.attn_temp = Attention(d, heads, qkv_bias=bias, proj_bias=bias, qk_norm=cfg.qk_norm)
        if cross and cfg.cross_norm:
            self.norm_cross = nn.LayerNorm(d, elementwise_affine=True, eps=1e-6)
        self.cross_attn = CrossAttention(d, heads, bias=bias, qk_norm=cfg.qk_norm if cfg.cross_qk_norm else "none") \
            if cross else None
        self.norm2 = nn.LayerNorm(d, elementwise_affine=cfg.norm_affine, eps=1e-6)
        hidden = cfg.mlp_hidden_size
        self.mlp = SwiGLU(d, hidden, bias=bias) if cfg.mlp == "swiglu" else \
            Mlp(d, hidden, approximate="tanh", bias=bias)
        if self.single:
            self.scale_shift_table = nn.Parameter(torch.randn(6, d) / d**0.5)
            if self.temporal_modulation:
                self.scale_shift_table_temporal = nn.Parameter(torch.randn(3, d) / d**0.5)
        else:
            n_mod = 9 if self.temporal_modulation else 6  # (shift, scale, gate) per modulated residual branch
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, n_mod * d))

    def modulation(self, c: torch.Tensor, shared: torch.Tensor | None,
                   shared_temp: torch.Tensor | None) -> list[torch.Tensor]:
        """Shift/scale/gate vectors, each (N, M, D) with M = 1 (per sample), T' (per frame) or L (per token)."""
        if not self.single:
            return list(self.adaLN_modulation(c).chunk(9 if self.temporal_modulation else 6, dim=-1))
        mods = list((self.scale_shift_table + shared.unflatten(-1, (6, -1))).unbind(-2))  # 6 x (N, M, D)
        if self.temporal_modulation:
            mods += list((self.scale_shift_table_temporal + shared_temp.unflatten(-1, (3, -1))).unbind(-2))
        return mods

    def forward(self, x: torch.Tensor, mods: list[torch.Tensor], grid: tuple[int, int, int],
                cond: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        # x: (N, L, D) with L = T*H*W in (t, h, w) order; mods: (N, 1 | L, D) each; cond: (N, S, D); mask: (N, S)
        axis = "spatial" if self.axis == "factorized" else self.axis
        h = _axis_attention(self.attn, modulate(self.norm1(x), mods[0], mods[1]), axis, grid, rope,
                            self.skiparse)  # (N, L, D)
        x = x + mods[2] * h
        if self.axis == "factorized":
            if self.temporal_modulation:
                h = _axis_attention(self.attn_temp, modulate(self.norm_temp(x), mods[6], mods[7]), "temporal",
                                    grid, rope)
                x = x + mods[8] * h
            else:  # Open-Sora 1.0: temporal attention on the unnormalised residual, spatial gate reused
                x = x + mods[2] * _axis_attention(self.attn_temp, x, "temporal", grid, rope)
        if self.cross_attn is not None and cond is not None:
            q = self.norm_cross(x) if hasattr(self, "norm_cross") else x
            x = x + self.cross_attn(q, cond, mask)  # (N, L, D)
        return x + mods[5] * self.mlp(modulate(self.norm2(x), mods[3], mods[4]))  # (N, L, D)


class SingleFinalLayer(nn.Module):
    """PixArt-alpha ``T2IFinalLayer`` / Wan ``Head``: shift, scale = learned (2, D) table + the timestep embedding."""

    def __init__(self, hidden_size: int, patch_numel: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_numel * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden_size) / hidden_size**0.5)

    def forward(self, x: torch.Tensor, c: torch.Tensor, expand=lambda v: v) -> torch.Tensor:
        shift, scale = (expand(z) for z in (self.scale_shift_table + c.unsqueeze(-2)).unbind(-2))  # (N, 1|L, D)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (N, L, patch_numel * C_out)


class BlockFinalLayer(FinalLayer):
    """DiT's final layer (same parameter names) with the conditioning per sample, frame or token: c (N, M, D)."""

    def forward(self, x: torch.Tensor, c: torch.Tensor, expand=lambda v: v) -> torch.Tensor:
        shift, scale = (expand(z) for z in self.adaLN_modulation(c).chunk(2, dim=-1))  # (N, 1 | L, D) each
        return self.linear(modulate(self.norm_final(x), shift, scale))


class MicroEmbedder(nn.Module):
    """Open-Sora ``SizeEmbedder``: each of ``scalars`` values -> sinusoid -> MLP(256, w, w), concatenated."""

    def __init__(self, width: int, scalars: int):
        super().__init__()
        self.scalars = scalars
        self.mlp = nn.Sequential(nn.Linear(256, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        n = s.shape[0]  # s: (N, scalars)
        emb = self.mlp(timestep_embedding(s.reshape(-1), 256).to(self.mlp[0].weight.dtype))  # (N * scalars, w)
        return emb.reshape(n, -1)  # (N, scalars * w)
