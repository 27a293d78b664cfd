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

from soraprep.models.config import MICRO_CONDITIONS, VideoDiTConfig
from soraprep.models.layers import (
    Attention,
    CrossAttention,
    FinalLayer,
    LabelEmbedder,
    Mlp,
    PatchEmbed3D,
    SwiGLU,
    TimestepEmbedder,
    sincos_2d,
    sincos_3d,
    timestep_embedding,
)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (N, L, D) scaled and shifted by (N, 1 | L, D) vectors (per sample, frame or token)."""
    return x * (1 + scale) + shift


def rope_angles(pos_embed: str, head_dim: int, grid: tuple[int, int, int]) -> torch.Tensor | None:
    """Rotary angles (L, head_dim / 2) for the (t, h, w) token grid, or None without RoPE.

    "rope": 3D RoPE, the head_dim / 2 frequency slots split t : h : w = c - 2(c//3) : c//3 : c//3 (Wan's split);
    "sincos2d_rope_t": RoPE over time only, on all slots (Open-Sora 1.1/1.2 temporal attention)."""
    t, h, w = grid
    c = head_dim // 2

    def freqs(slots: int) -> torch.Tensor:  # theta 10000 over a rotary dim of 2 * slots
        return 1.0 / 10000 ** (torch.arange(slots, dtype=torch.float64) * 2 / (2 * slots))

    tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
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


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------


def skiparse_of(cfg: VideoDiTConfig, i: int) -> tuple[int, bool] | None:
    """Block i's Skiparse (groups, group skip?) or None when dense (Open-Sora-Plan 1.3: blocks 2..depth-3)."""
    if cfg.skiparse == 1 or i < cfg.skiparse_dense or i >= cfg.depth - cfg.skiparse_dense:
        return None
    return cfg.skiparse, i % 2 == 1


def _block_axes(cfg: VideoDiTConfig) -> list[str]:
    if cfg.attention == "alternating":  # Latte / STDiT3: even blocks spatial, odd blocks temporal
        return ["spatial" if i % 2 == 0 else "temporal" for i in range(cfg.depth)]
    return [cfg.attention] * cfg.depth


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
        for name in config.micro_conditions:
            scalars, div = MICRO_CONDITIONS[name]
            self.add_module(f"{name}_embedder", MicroEmbedder(d // div, scalars))
        if config.pos_embed == "learned":  # factorized tables sized for the default input (Movie Gen style)
            gt, gh, gw = config.grid_size
            self.pos_embed_t = nn.Parameter(torch.zeros(gt, d))
            self.pos_embed_h = nn.Parameter(torch.zeros(gh, d))
            self.pos_embed_w = nn.Parameter(torch.zeros(gw, d))
        if config.conditioning == "text":
            self.y_embedder: nn.Module | None = CaptionEmbedder(config.text_dim, d, config.text_len,
                                                                config.caption_dropout_prob, null=config.null_caption,
                                                                norm=config.text_norm)
            if config.text2_dim:
                self.y2_embedder = nn.Linear(config.text2_dim, d)
        elif config.conditioning == "class":
            self.y_embedder = LabelEmbedder(config.num_classes, d, config.caption_dropout_prob)
        else:
            self.y_embedder = None
        if config.modulation == "single":  # PixArt-alpha adaLN-single: one projection shared by all blocks
            self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
            if config.attention == "factorized" and config.temporal_modulation:
                self.t_block_temp = nn.Sequential(nn.SiLU(), nn.Linear(d, 3 * d))  # Open-Sora 1.1 STDiT2
        cross = config.conditioning == "text"
        self.blocks = nn.ModuleList([
            VideoDiTBlock(config, axis=axis, cross=cross and (axis != "temporal" or config.temporal_cross),
                          skiparse=skiparse_of(config, i))
            for i, axis in enumerate(_block_axes(config))
        ])
        pt, ph, pw = self.patch_size
        final = SingleFinalLayer if config.modulation == "single" else BlockFinalLayer
        self.final_layer = final(d, pt * ph * pw, self.out_channels)
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
        elif isinstance(self.y_embedder, CaptionEmbedder) and self.y_embedder.y_embedding is not None:
            nn.init.normal_(self.y_embedder.y_embedding, std=self.config.text_dim**-0.5)
        for block in self.blocks:
            if hasattr(block, "adaLN_modulation"):
                nn.init.zeros_(block.adaLN_modulation[-1].weight)
                nn.init.zeros_(block.adaLN_modulation[-1].bias)
            else:  # adaLN-single: zero gates = zero shared projection and zero table
                nn.init.zeros_(block.scale_shift_table)
                if hasattr(block, "scale_shift_table_temporal"):
                    nn.init.zeros_(block.scale_shift_table_temporal)
            if block.cross_attn is not None:
                nn.init.zeros_(block.cross_attn.proj.weight)
                if block.cross_attn.proj.bias is not None:
                    nn.init.zeros_(block.cross_attn.proj.bias)
        if hasattr(self, "t_block"):
            for blk in (self.t_block, getattr(self, "t_block_temp", None)):
                if blk is not None:
                    nn.init.zeros_(blk[-1].weight)
                    nn.init.zeros_(blk[-1].bias)
        last = self.final_layer.linear
        if hasattr(self.final_layer, "adaLN_modulation"):
            nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
            nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

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

    def _per_token(self, v: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(N, M, D) per sample (M=1) / frame (M=T') / token (M=L) -> broadcastable to (N, L, D)."""
        if self.config.adaln == "frame":
            return v.repeat_interleave(grid[1] * grid[2], dim=1)  # (N, L, D)
        return v

    def _timesteps(self, t: torch.Tensor, n: int, grid: tuple[int, int, int]) -> torch.Tensor:
        """t of shape (N,) / (N, T') / (N, T', H', W') as ``adaln`` says -> (N, M) flat."""
        want = {"sample": (n,), "frame": (n, grid[0]), "token": (n, *grid)}[self.config.adaln]
        if t.dim() == 1 and self.config.adaln != "sample":
            t = t.reshape(n, *([1] * (len(want) - 1))).expand(want)  # one level for all: broadcast
        if tuple(t.shape) != want:
            raise ValueError(f"adaln={self.config.adaln!r} takes timesteps of shape {want}, got {tuple(t.shape)}")
        return t.reshape(n, -1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, force_drop_ids: torch.Tensor | None = None,
                y2: torch.Tensor | None = None, micro: torch.Tensor | None = None) -> torch.Tensor:
        # x: (N, C, T, H, W); t: (N,) | (N, T') | (N, T', H', W') per ``adaln``; y: (N, S, text_dim) captions |
        # (N,) labels | None; mask: (N, S) bool; y2: (N, S2, text2_dim) second captions (prepended, no mask);
        # micro: (N, k) scalars of ``micro_conditions`` in order (csize takes two: h, w); None -> zeros
        cfg = self.config
        grid = self.grid(x.shape)
        n, d = x.shape[0], cfg.hidden_size
        x = self.x_embedder(x)  # (N, L, D), L = T' * H' * W'
        if cfg.pos_embed == "sincos":
            x = x + sincos_3d(d, *grid).to(device=x.device, dtype=x.dtype).unsqueeze(0)  # (N, L, D)
        elif cfg.pos_embed == "sincos2d_rope_t":
            x = x + sincos_2d(d, grid[1], grid[2]).to(device=x.device, dtype=x.dtype).repeat(grid[0], 1)
        elif cfg.pos_embed == "learned":
            if any(g > p.shape[0] for g, p in zip(grid, (self.pos_embed_t, self.pos_embed_h, self.pos_embed_w),
                                                  strict=True)):
                raise ValueError(f"token grid {grid} exceeds the learned position tables {cfg.grid_size}")
            pos = (self.pos_embed_t[: grid[0], None, None] + self.pos_embed_h[None, : grid[1], None]
                   + self.pos_embed_w[None, None, : grid[2]])
            x = x + pos.reshape(1, -1, d)
        angles = rope_angles(cfg.pos_embed, d // cfg.num_heads, grid)
        rope = None if angles is None else (angles.cos().to(x.device), angles.sin().to(x.device))
        c = self.t_embedder(self._timesteps(t, n, grid).reshape(-1)).reshape(n, -1, d)  # (N, M, D)
        if cfg.micro_conditions:
            k = sum(MICRO_CONDITIONS[m][0] for m in cfg.micro_conditions)
            micro = torch.zeros(n, k, device=x.device) if micro is None else micro
            parts, i = [], 0
            for name in cfg.micro_conditions:
                scalars = MICRO_CONDITIONS[name][0]
                parts.append(getattr(self, f"{name}_embedder")(micro[:, i: i + scalars]))
                i += scalars
            extra = torch.cat(parts, dim=1)  # csize + ar concatenate to D (Open-Sora 1.1 data_info)
            c = c + extra.reshape(n, -1, d).sum(dim=1, keepdim=True)  # (N, M, D)
        cond = None
        if isinstance(self.y_embedder, CaptionEmbedder):
            if y is None:
                raise ValueError("conditioning='text' needs caption embeddings y of shape (N, S, text_dim)")
            cond, mask = self.y_embedder(y, mask, self.training, force_drop_ids)  # (N, S, D), (N, S)
            if hasattr(self, "y2_embedder"):
                if y2 is None:
                    raise ValueError(f"text2_dim={cfg.text2_dim}: pass the second captions y2 (N, S2, text2_dim)")
                cond = torch.cat([self.y2_embedder(y2), cond], dim=1)  # (N, S2 + S, D)
                if mask is not None:
                    mask = torch.cat([torch.ones(n, y2.shape[1], dtype=torch.bool, device=mask.device),
                                      mask.bool()], dim=1)
        elif isinstance(self.y_embedder, LabelEmbedder):
            c = c + self.y_embedder(y, self.training, force_drop_ids).unsqueeze(1)  # (N, M, D)
        shared = self.t_block(c) if hasattr(self, "t_block") else None  # (N, M, 6D), adaLN-single
        shared_temp = self.t_block_temp(c) if hasattr(self, "t_block_temp") else None  # (N, M, 3D)
        for block in self.blocks:
            mods = [self._per_token(m, grid) for m in block.modulation(c, shared, shared_temp)]
            x = block(x, mods, grid, cond, mask, rope)  # (N, L, D)
        x = self.final_layer(x, c, lambda v: self._per_token(v, grid))  # (N, L, pt*ph*pw*C_out)
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
