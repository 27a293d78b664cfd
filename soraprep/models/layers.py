"""Shared building blocks: attention (fused SDPA or naive), MLP, timestep / label / text embedders,
2D and 3D patch embedding, sin-cos positional embeddings, adaLN modulation and the adaLN-Zero final layer.

Module and parameter names follow the official DiT code (``attn.qkv``, ``mlp.fc1``, ``t_embedder.mlp.0``,
``y_embedder.embedding_table``, ``final_layer.adaLN_modulation.1``) so official checkpoints load strictly.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

# ------------------------------------------------------------------------------------------------
# Attention
# ------------------------------------------------------------------------------------------------

#: Set to False (e.g. by the benchmark) to use the naive softmax(QK^T)V path instead of fused SDPA.
FUSED_ATTENTION = True


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
              scale: float | None = None) -> torch.Tensor:
    """Multi-head attention on (N, heads, L, hd) tensors; ``mask`` is boolean, True = attend."""
    if FUSED_ATTENTION:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = (q * scale) @ k.transpose(-2, -1)  # (N, heads, Lq, Lk)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return logits.softmax(dim=-1) @ v  # (N, heads, Lq, hd)


def _qk_norm(kind: str, dim: int, head_dim: int) -> tuple[nn.Module, nn.Module] | None:
    """q/k normalisation: "rms_head" (over head_dim, Open-Sora / Step-Video) or "rms_full" (over D, Wan)."""
    if kind == "none":
        return None
    size = head_dim if kind == "rms_head" else dim
    return nn.RMSNorm(size, eps=1e-6), nn.RMSNorm(size, eps=1e-6)


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate consecutive pairs of x (..., L, hd) by angles whose cos/sin are (..., L, hd/2)."""
    cos, sin = rope
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # each (..., L, hd/2)
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2).to(x.dtype)


class Attention(nn.Module):
    """Self-attention with a fused qkv projection (timm / DiT / U-ViT layout: ``qkv``, ``proj``); optional
    q/k RMSNorm (``q_norm``/``k_norm``, only created when used) and rotary positions passed to ``forward``."""

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, qk_scale: float | None = None,
                 proj_bias: bool = True, qk_norm: str = "none"):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.qk_norm = qk_norm
        norms = _qk_norm(qk_norm, dim, dim // num_heads)
        if norms is not None:
            self.q_norm, self.k_norm = norms

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                skiparse: tuple[int, bool] | None = None) -> torch.Tensor:
        n, length, d = x.shape  # (N, L, D)
        h = self.num_heads
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # each (N, L, D)
        if self.qk_norm == "rms_full":
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (z.reshape(n, length, h, d // h).transpose(1, 2) for z in (q, k, v))  # (N, heads, L, hd)
        if self.qk_norm == "rms_head":
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        if skiparse is None:
            x = attention(q, k, v, mask=mask, scale=self.scale)  # (N, heads, L, hd)
        else:
            x = _skiparse_attention(q, k, v, *skiparse, scale=self.scale)
        return self.proj(x.transpose(1, 2).reshape(n, length, d))  # (N, L, D)


def skiparse_order(length: int, groups: int, group_skip: bool) -> torch.Tensor:
    """Token indices (padded length) in Skiparse order: ``groups`` sequences of ``padded / groups`` tokens.

    Open-Sora-Plan 1.3 (``_sparse_1d``): the sequence is padded to a multiple of groups^2; "single skip"
    puts tokens i = g (mod groups) together, "group skip" tokens with the same (i // groups) mod groups."""
    padded = -(-length // groups**2) * groups**2
    i = torch.arange(padded)
    key = (i // groups) % groups if group_skip else i % groups
    return i[torch.argsort(key * padded + i)]


def _skiparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, groups: int, group_skip: bool,
                        *, scale: float | None) -> torch.Tensor:
    """Attention within Skiparse groups of (N, heads, L, hd) tensors; padding never attended to."""
    n, h, length, hd = q.shape
    order = skiparse_order(length, groups, group_skip).to(q.device)
    padded = order.numel()
    pad = (0, 0, 0, padded - length)
    q, k, v = (F.pad(z, pad)[:, :, order].reshape(n, h, groups, padded // groups, hd).transpose(1, 2)
               .reshape(n * groups, h, padded // groups, hd) for z in (q, k, v))  # (N*groups, heads, Lg, hd)
    real = (order < length).reshape(1, groups, 1, 1, padded // groups).expand(n, -1, -1, -1, -1)
    x = attention(q, k, v, mask=real.reshape(n * groups, 1, 1, padded // groups), scale=scale)
    x = x.reshape(n, groups, h, padded // groups, hd).transpose(1, 2).reshape(n, h, padded, hd)
    out = torch.empty_like(x)
    out[:, :, order] = x
    return out[:, :, :length]  # (N, heads, L, hd)


class CrossAttention(nn.Module):
    """Queries from the tokens, keys/values from the condition sequence (captions)."""

    def __init__(self, dim: int, num_heads: int, *, bias: bool = True, qk_norm: str = "none"):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=bias)
        self.kv = nn.Linear(dim, dim * 2, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.qk_norm = qk_norm
        norms = _qk_norm(qk_norm, dim, dim // num_heads)
        if norms is not None:
            self.q_norm, self.k_norm = norms

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        n, length, d = x.shape  # (N, L, D)
        s, h = cond.shape[1], self.num_heads  # cond: (N, S, D)
        q = self.q(x)  # (N, L, D)
        k, v = self.kv(cond).chunk(2, dim=-1)  # (N, S, D) each
        if self.qk_norm == "rms_full":
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.reshape(n, length, h, d // h).transpose(1, 2)  # (N, heads, L, hd)
        k, v = (z.reshape(n, s, h, d // h).transpose(1, 2) for z in (k, v))  # (N, heads, S, hd)
        if self.qk_norm == "rms_head":
            q, k = self.q_norm(q), self.k_norm(k)
        attn_mask = None
        if mask is not None:  # (N, S), True = attend; an all-padding row attends to everything (no NaN)
            mask = mask.bool()
            attn_mask = (mask | ~mask.any(dim=1, keepdim=True))[:, None, None, :]  # (N, 1, 1, S)
        x = attention(q, k, v, mask=attn_mask)  # (N, heads, L, hd)
        return self.proj(x.transpose(1, 2).reshape(n, length, d))  # (N, L, D)


class Mlp(nn.Module):
    """Two-layer MLP (timm layout ``fc1`` / ``fc2``)."""

    def __init__(self, dim: int, hidden: int, *, approximate: str = "none", out_dim: int | None = None,
                 bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = nn.GELU(approximate=approximate)
        self.fc2 = nn.Linear(hidden, out_dim or dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """Gated MLP ``w2(silu(w1 x) * w3 x)`` (LLaMA layout ``w1`` / ``w3`` / ``w2``)."""

    def __init__(self, dim: int, hidden: int, *, bias: bool = True):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=bias)
        self.w3 = nn.Linear(dim, hidden, bias=bias)
        self.w2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (N, L, D) scaled and shifted per sample by (N, D) vectors."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


# ------------------------------------------------------------------------------------------------
# Embedders
# ------------------------------------------------------------------------------------------------


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (N,) -> (N, dim), [cos | sin] as in DiT / U-ViT; t may be fractional."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]  # (N, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2 * half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Scalar timesteps -> (N, D) via a 256-d sinusoidal embedding and an MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t_freq = timestep_embedding(t, self.frequency_embedding_size)  # (N, 256)
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))  # (N, D)


class LabelEmbedder(nn.Module):
    """Class labels -> (N, D); row ``num_classes`` is the null label used for classifier-free guidance."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def forward(self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None):
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            if force_drop_ids is None:
                drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
            else:
                drop = force_drop_ids == 1
            labels = torch.where(drop, self.num_classes, labels)
        return self.embedding_table(labels)  # (N, D)


class PooledTextEmbedder(nn.Module):
    """Pooled caption embedding (N, text_dim) -> (N, D); a learned null embedding replaces dropped captions."""

    def __init__(self, text_dim: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.null_embedding = nn.Parameter(torch.zeros(1, text_dim))
        self.mlp = nn.Sequential(nn.Linear(text_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))
        self.dropout_prob = dropout_prob

    def forward(self, emb: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None):
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            if force_drop_ids is None:
                drop = torch.rand(emb.shape[0], device=emb.device) < self.dropout_prob
            else:
                drop = force_drop_ids == 1
            emb = torch.where(drop[:, None], self.null_embedding.to(emb.dtype), emb)
        return self.mlp(emb)  # (N, D)


class PatchEmbed(nn.Module):
    """(N, C, H, W) -> (N, H/p * W/p, D) with a strided conv (``proj``), row-major token order."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, L, D)


class PatchEmbed3D(nn.Module):
    """(N, C, T, H, W) -> (N, T/pt * H/ph * W/pw, D); token order (t, h, w)."""

    def __init__(self, patch_size: tuple[int, int, int], in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, L, D)


# ------------------------------------------------------------------------------------------------
# Sin-cos positional embeddings (MAE / DiT convention)
# ------------------------------------------------------------------------------------------------


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """(M,) positions -> (M, dim) as [sin | cos] with frequencies 1 / 10000^(i / (dim/2))."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0))
    out = pos.double().reshape(-1)[:, None] * omega[None]  # (M, dim/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


@functools.lru_cache(maxsize=64)
def sincos_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """(grid_h * grid_w, dim) row-major; first half encodes the column (w), second the row (h), as DiT/MAE."""
    # explicit CPU: the result is cached, and models may be built under `with torch.device("meta")`
    hh, ww = torch.meshgrid(torch.arange(grid_h, device="cpu"), torch.arange(grid_w, device="cpu"), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, ww), sincos_1d(dim // 2, hh)], dim=1).float()


@functools.lru_cache(maxsize=64)
def sincos_3d(dim: int, grid_t: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """(T*H*W, dim) in (t, h, w) order: 2D spatial sin-cos plus a 1D temporal sin-cos (Latte / Open-Sora)."""
    spatial = sincos_2d(dim, grid_h, grid_w)  # (H*W, dim)
    temporal = sincos_1d(dim, torch.arange(grid_t, device="cpu")).float()  # (T, dim)
    return (temporal[:, None, :] + spatial[None, :, :]).reshape(grid_t * grid_h * grid_w, dim)


# ------------------------------------------------------------------------------------------------
# Final layer
# ------------------------------------------------------------------------------------------------


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm + linear to patch pixels (zero-initialised by the model)."""

    def __init__(self, hidden_size: int, patch_numel: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_numel * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)  # (N, D) each
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (N, L, patch_numel * C_out)


def pool_text(text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over caption tokens: (N, S, D), (N, S) -> (N, D) (for DiT's pooled-text conditioning)."""
    m = mask.to(text.dtype).unsqueeze(-1)
    return (text * m).sum(1) / m.sum(1).clamp(min=1)
