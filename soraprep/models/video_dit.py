"""Spacetime-patch video DiT: 3D patches of VAE latents, 3D sin-cos positions, adaLN-Zero blocks with
(a) full spacetime attention or (b) factorized spatial-then-temporal attention (Latte / STDiT style), and
caption conditioning by cross-attention (PixArt-alpha / Open-Sora style).

The config's variant fields (docs/models.md) also express the published video DiTs: Latte-style
alternating spatial / temporal blocks, PixArt-alpha adaLN-single, adaLN per frame or per token, Open-Sora
1.x STDiT/STDiT2/STDiT3, Wan 2.1, Step-Video, Open-Sora-Plan 1.3 Skiparse (presets in presets_video.py).
Blocks live in :mod:`soraprep.models.video_blocks`.

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
from soraprep.models.layers import LabelEmbedder, PatchEmbed3D, TimestepEmbedder, sincos_2d, sincos_3d
from soraprep.models.video_blocks import (  # noqa: F401  (rope_angles, modulate: public from here too)
    BlockFinalLayer,
    CaptionEmbedder,
    MicroEmbedder,
    SingleFinalLayer,
    VideoDiTBlock,
    modulate,
    rope_angles,
)

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
        angles = rope_angles(cfg.pos_embed, d // cfg.num_heads, tuple(grid))
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
