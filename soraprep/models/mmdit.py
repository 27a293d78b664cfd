"""MM-DiT for video: double-stream blocks, then single-stream blocks, with caption tokens in the sequence.

The layout of SD3 (double-stream only), FLUX.1, HunyuanVideo and Open-Sora 2.0 (all four described by
:class:`~soraprep.models.config_joint.MMDiTConfig`). A reference build for exact parameter and FLOP
counts and small-scale training, not a checkpoint loader (module names follow Flux where they can).

- **Double-stream block**: the visual and the text tokens keep separate weights (adaLN modulation,
  q/k/v, output projection, MLP) but attend *jointly*: one attention over [text; visual].
- **Single-stream block**: one set of weights over the concatenated sequence; q, k, v and the MLP input
  come from one Linear, the attention output and the MLP output go through one Linear (ViT-22B's
  parallel block).
- Conditioning vector ``vec`` = timestep MLP (+ pooled caption MLP, + guidance-scale MLP) drives every
  adaLN; positions are 3D RoPE over (t, h, w) on visual tokens (text tokens get none, which equals
  Flux's all-zero text ids), or fixed sin-cos / learned absolute embeddings.
- Classifier-free guidance: as in the published models, the null condition is the *encoded empty
  prompt* (the data pipeline's job), so there is no learned null caption here.

Example::

    from soraprep.models import MODELS
    model = MODELS["HunyuanVideo-13B"](depth_double=2, depth_single=2, hidden_size=128, num_heads=2)
    out = model(x, t, txt, pooled=vec)   # x (N, 16, T, H, W), txt (N, S, 4096), vec (N, 768)
"""

from __future__ import annotations

import torch
from torch import nn

from soraprep.models.config_joint import MMDiTConfig
from soraprep.models.layers import (
    FinalLayer,
    Mlp,
    PatchEmbed3D,
    TimestepEmbedder,
    attention,
    modulate,
    sincos_3d,
    timestep_embedding,
)

# ------------------------------------------------------------------------------------------------
# Helpers: RMS qk-norm, 3D RoPE
# ------------------------------------------------------------------------------------------------


class QKNorm(nn.Module):
    """RMSNorm with a learned scale over the head dim, applied to q and k (SD3 paper, Flux, HunyuanVideo)."""

    def __init__(self, head_dim: int):
        super().__init__()
        self.query_norm = nn.RMSNorm(head_dim, eps=1e-6)
        self.key_norm = nn.RMSNorm(head_dim, eps=1e-6)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.query_norm(q), self.key_norm(k)


def rope_axes_dims(head_dim: int) -> tuple[int, int, int]:
    """Split of the head dim over (t, h, w): Flux/HunyuanVideo use 16/56/56 of 128; scaled likewise, even."""
    t = 2 * max(1, round(head_dim / 16))
    hw = (head_dim - t) // 2 // 2 * 2
    return head_dim - 2 * hw, hw, hw


def rope_3d(head_dim: int, grid: tuple[int, int, int], device=None, theta: float = 10000.0) -> torch.Tensor:
    """(L, head_dim / 2, 2) cos/sin of the rotation angles of each visual token (t, h, w order)."""
    parts = []
    for n, dim in zip(grid, rope_axes_dims(head_dim), strict=True):
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim)  # (dim/2,)
        parts.append(torch.arange(n, dtype=torch.float64, device=device)[:, None] * freqs[None])  # (n, dim/2)
    gt, gh, gw = grid
    ang = torch.cat([
        parts[0][:, None, None, :].expand(gt, gh, gw, -1),
        parts[1][None, :, None, :].expand(gt, gh, gw, -1),
        parts[2][None, None, :, :].expand(gt, gh, gw, -1),
    ], dim=-1).reshape(gt * gh * gw, head_dim // 2)
    return torch.stack([ang.cos(), ang.sin()], dim=-1).float()


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of channels of the *last* ``rope.shape[0]`` tokens of x (N, heads, L, hd)."""
    n_vis = rope.shape[0]
    head, vis = x[..., : x.shape[-2] - n_vis, :], x[..., x.shape[-2] - n_vis :, :]
    v = vis.float().reshape(*vis.shape[:-1], -1, 2)  # (N, heads, Lv, hd/2, 2)
    cos, sin = rope[..., 0], rope[..., 1]  # (Lv, hd/2)
    out = torch.stack([v[..., 0] * cos - v[..., 1] * sin, v[..., 0] * sin + v[..., 1] * cos], dim=-1)
    return torch.cat([head, out.flatten(-2).to(x.dtype)], dim=-2)


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    n, length, d = x.shape  # (N, L, D) -> (N, heads, L, hd)
    return x.reshape(n, length, num_heads, d // num_heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    n, h, length, hd = x.shape  # (N, heads, L, hd) -> (N, L, D)
    return x.transpose(1, 2).reshape(n, length, h * hd)


# ------------------------------------------------------------------------------------------------
# Embedders
# ------------------------------------------------------------------------------------------------


class MLPEmbedder(nn.Module):
    """Linear -> SiLU -> Linear (Flux ``MLPEmbedder``: pooled text and guidance vectors)."""

    def __init__(self, in_dim: int, hidden_size: int):
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden_size)
        self.out_layer = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(nn.functional.silu(self.in_layer(x)))


class RefinerBlock(nn.Module):
    """HunyuanVideo token-refiner block: pre-norm (affine LN) self-attention and SiLU MLP, each gated by c."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, int(hidden_size * mlp_ratio)), nn.SiLU(),
                                 nn.Linear(int(hidden_size * mlp_ratio), hidden_size))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        gate_msa, gate_mlp = self.adaLN_modulation(c).unsqueeze(1).chunk(2, dim=-1)  # (N, 1, D) each
        q, k, v = (_heads(z, self.num_heads) for z in self.qkv(self.norm1(x)).chunk(3, dim=-1))
        x = x + gate_msa * self.proj(_merge(attention(q, k, v, mask=mask)))  # (N, S, D)
        return x + gate_mlp * self.mlp(self.norm2(x))


class TokenRefiner(nn.Module):
    """HunyuanVideo ``SingleTokenRefiner``: project the LLM caption states, refine them with ``depth``
    self-attention blocks conditioned on the timestep and the (masked) mean caption state."""

    def __init__(self, text_dim: int, hidden_size: int, num_heads: int, depth: int, mlp_ratio: float):
        super().__init__()
        self.input_embedder = nn.Linear(text_dim, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.c_embedder = MLPEmbedder(text_dim, hidden_size)
        self.blocks = nn.ModuleList([RefinerBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])

    def forward(self, txt: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            pooled = txt.mean(dim=1)  # (N, text_dim)
        else:
            m = mask.to(txt.dtype).unsqueeze(-1)  # (N, S, 1)
            pooled = (txt * m).sum(dim=1) / m.sum(dim=1).clamp_min(1)
        c = self.t_embedder(t) + self.c_embedder(pooled)  # (N, D)
        x = self.input_embedder(txt)  # (N, S, D)
        attn_mask = None if mask is None else _key_mask(mask)
        for block in self.blocks:
            x = block(x, c, attn_mask)
        return x


def _key_mask(mask: torch.Tensor) -> torch.Tensor:
    """(N, S) bool -> (N, 1, 1, S) keys to attend; an all-padding caption attends everywhere (no NaN)."""
    mask = mask.bool()
    return (mask | ~mask.any(dim=1, keepdim=True))[:, None, None, :]


# ------------------------------------------------------------------------------------------------
# Blocks
# ------------------------------------------------------------------------------------------------


class StreamWeights(nn.Module):
    """One stream of a double block: adaLN modulation, qkv, qk-norm, output projection, MLP."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, *, qkv_bias: bool, qk_norm: bool,
                 pre_only: bool = False):
        super().__init__()
        self.pre_only = pre_only  # SD3's last text stream: only q, k, v (shift + scale modulation)
        self.mod = nn.Linear(hidden_size, (2 if pre_only else 6) * hidden_size)
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=qkv_bias)
        self.norm = QKNorm(hidden_size // num_heads) if qk_norm else None
        if not pre_only:
            self.proj = nn.Linear(hidden_size, hidden_size)
            self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
            self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), approximate="tanh")


class DoubleStreamBlock(nn.Module):
    """Separate text / visual weights, one joint attention over [text; visual]."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, *, qkv_bias: bool, qk_norm: bool,
                 context_pre_only: bool = False):
        super().__init__()
        self.num_heads = num_heads
        kw = dict(qkv_bias=qkv_bias, qk_norm=qk_norm)
        self.img = StreamWeights(hidden_size, num_heads, mlp_ratio, **kw)
        self.txt = StreamWeights(hidden_size, num_heads, mlp_ratio, pre_only=context_pre_only, **kw)

    def _qkv(self, s: StreamWeights, x: torch.Tensor, shift, scale):
        q, k, v = (_heads(z, self.num_heads) for z in s.qkv(modulate(s.norm1(x), shift, scale)).chunk(3, dim=-1))
        if s.norm is not None:
            q, k = s.norm(q, k)
        return q, k, v  # each (N, heads, L, hd)

    def forward(self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor, rope: torch.Tensor | None,
                mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        # img: (N, L, D); txt: (N, S, D); vec: (N, D)
        im = self.img.mod(nn.functional.silu(vec)).chunk(6, dim=1)  # shift, scale, gate (attn); same (MLP)
        tm = self.txt.mod(nn.functional.silu(vec)).chunk(2 if self.txt.pre_only else 6, dim=1)
        iq, ik, iv = self._qkv(self.img, img, im[0], im[1])
        tq, tk, tv = self._qkv(self.txt, txt, tm[0], tm[1])
        q, k, v = torch.cat([tq, iq], dim=2), torch.cat([tk, ik], dim=2), torch.cat([tv, iv], dim=2)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        out = _merge(attention(q, k, v, mask=mask))  # (N, S + L, D): joint attention
        s = txt.shape[1]
        img = img + im[2].unsqueeze(1) * self.img.proj(out[:, s:])
        img = img + im[5].unsqueeze(1) * self.img.mlp(modulate(self.img.norm2(img), im[3], im[4]))
        if not self.txt.pre_only:
            txt = txt + tm[2].unsqueeze(1) * self.txt.proj(out[:, :s])
            txt = txt + tm[5].unsqueeze(1) * self.txt.mlp(modulate(self.txt.norm2(txt), tm[3], tm[4]))
        return img, txt


class SingleStreamBlock(nn.Module):
    """One weight set over [text; visual]: linear1 -> (q, k, v, MLP in); linear2 <- (attention out, GELU)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, *, qk_norm: bool):
        super().__init__()
        self.num_heads, self.hidden_size = num_heads, hidden_size
        self.mlp_hidden = int(hidden_size * mlp_ratio)
        self.linear1 = nn.Linear(hidden_size, 3 * hidden_size + self.mlp_hidden)
        self.linear2 = nn.Linear(hidden_size + self.mlp_hidden, hidden_size)
        self.norm = QKNorm(hidden_size // num_heads) if qk_norm else None
        self.pre_norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.act = nn.GELU(approximate="tanh")
        self.modulation = nn.Linear(hidden_size, 3 * hidden_size)

    def forward(self, x: torch.Tensor, vec: torch.Tensor, rope: torch.Tensor | None,
                mask: torch.Tensor | None) -> torch.Tensor:
        shift, scale, gate = self.modulation(nn.functional.silu(vec)).chunk(3, dim=1)  # (N, D) each
        qkv, mlp = self.linear1(modulate(self.pre_norm(x), shift, scale)).split(
            [3 * self.hidden_size, self.mlp_hidden], dim=-1)  # (N, S+L, 3D), (N, S+L, H)
        q, k, v = (_heads(z, self.num_heads) for z in qkv.chunk(3, dim=-1))
        if self.norm is not None:
            q, k = self.norm(q, k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        out = _merge(attention(q, k, v, mask=mask))  # (N, S+L, D)
        return x + gate.unsqueeze(1) * self.linear2(torch.cat([out, self.act(mlp)], dim=-1))


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------


class MMDiT(nn.Module):
    """MM-DiT over (N, C, T, H, W) latents with caption token states (N, S, text_dim)."""

    def __init__(self, config: MMDiTConfig | None = None, **kwargs):
        super().__init__()
        config = (config or MMDiTConfig()).replace(**kwargs) if kwargs else (config or MMDiTConfig())
        self.config = config
        d, heads = config.hidden_size, config.num_heads
        self.patch_size = tuple(config.patch_size)
        pt, ph, pw = self.patch_size
        if config.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, d))
        self.img_in = PatchEmbed3D(self.patch_size, config.in_channels, d)
        self.cond_in = nn.Linear(config.in_channels * pt * ph * pw + ph * pw, d) if config.cond_embed else None
        self.time_in = MLPEmbedder(256, d)
        self.vector_in = MLPEmbedder(config.pooled_dim, d) if config.pooled_dim > 0 else None
        self.guidance_in = MLPEmbedder(256, d) if config.guidance_embed else None
        if config.text_refiner_depth:
            self.txt_in: nn.Module = TokenRefiner(config.text_dim, d, heads, config.text_refiner_depth,
                                                  config.mlp_ratio)
        else:
            self.txt_in = nn.Linear(config.text_dim, d)
        kw = dict(qkv_bias=config.qkv_bias, qk_norm=config.qk_norm)
        self.double_blocks = nn.ModuleList([
            DoubleStreamBlock(d, heads, config.mlp_ratio, **kw,
                              context_pre_only=config.context_pre_only_last and i == config.depth_double - 1)
            for i in range(config.depth_double)
        ])
        self.single_blocks = nn.ModuleList([
            SingleStreamBlock(d, heads, config.mlp_ratio, qk_norm=config.qk_norm) for _ in range(config.depth_single)
        ])
        self.final_layer = FinalLayer(d, pt * ph * pw, config.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier linears, N(0, 0.02) timestep/guidance MLPs; zeroed: every adaLN modulation, the
        conditioning-latent input (i2v starts as t2v) and the final layer, so a fresh model outputs zero."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.img_in.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.img_in.proj.bias)
        for emb in (self.time_in, self.guidance_in):
            if emb is not None:
                nn.init.normal_(emb.in_layer.weight, std=0.02)
                nn.init.normal_(emb.out_layer.weight, std=0.02)
        if self.config.pos_embed == "learned":
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        zeroed = [b.img.mod for b in self.double_blocks] + [b.txt.mod for b in self.double_blocks]
        zeroed += [b.modulation for b in self.single_blocks]
        zeroed += [self.final_layer.adaLN_modulation[-1], self.final_layer.linear]
        if self.cond_in is not None:
            zeroed.append(self.cond_in)
        if isinstance(self.txt_in, TokenRefiner):
            zeroed += [b.adaLN_modulation[-1] for b in self.txt_in.blocks]
        for layer in zeroed:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def grid(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """Token grid (T', H', W') for latents (N, C, T, H, W); fails loud if not divisible by the patch."""
        size = tuple(shape[-3:])
        if any(s % p for s, p in zip(size, self.patch_size, strict=True)):
            raise ValueError(f"latent size (T, H, W)={size} must be divisible by patch_size={self.patch_size}")
        return tuple(s // p for s, p in zip(size, self.patch_size, strict=True))  # type: ignore[return-value]

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(N, L, pt*ph*pw*C) -> (N, C, T, H, W)."""
        (gt, gh, gw), (pt, ph, pw), c = grid, self.patch_size, self.config.out_channels
        x = x.reshape(x.shape[0], gt, gh, gw, pt, ph, pw, c).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(x.shape[0], c, gt * pt, gh * ph, gw * pw)

    def forward(self, x: torch.Tensor, t: torch.Tensor, txt: torch.Tensor, pooled: torch.Tensor | None = None,
                txt_mask: torch.Tensor | None = None, guidance: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        # x: (N, C, T, H, W); t: (N,); txt: (N, S, text_dim); pooled: (N, pooled_dim); txt_mask: (N, S) bool
        # guidance: (N,) distilled CFG scale; cond: (N, L, C*pt*ph*pw + ph*pw) i2v conditioning latent + mask
        cfg = self.config
        grid = self.grid(x.shape)
        d = cfg.hidden_size
        img = self.img_in(x)  # (N, L, D)
        if cfg.pos_embed == "learned":
            img = img + self.pos_embed
        elif cfg.pos_embed == "sincos":
            img = img + sincos_3d(d, *grid).to(device=img.device, dtype=img.dtype).unsqueeze(0)
        if self.cond_in is not None:
            if cond is None:
                raise ValueError("cond_embed=True needs the conditioning latent `cond` (N, L, patch_numel + ph*pw)")
            img = img + self.cond_in(cond)
        vec = self.time_in(timestep_embedding(t, 256))  # (N, D)
        if self.vector_in is not None:
            if pooled is None:
                raise ValueError(f"pooled_dim={cfg.pooled_dim} needs the pooled caption vector (N, {cfg.pooled_dim})")
            vec = vec + self.vector_in(pooled)
        if self.guidance_in is not None:
            if guidance is None:
                raise ValueError("guidance_embed=True needs the guidance scale (N,)")
            vec = vec + self.guidance_in(timestep_embedding(guidance, 256))
        txt = self.txt_in(txt, t, txt_mask) if isinstance(self.txt_in, TokenRefiner) else self.txt_in(txt)  # (N, S, D)
        rope = rope_3d(d // cfg.num_heads, grid, device=x.device) if cfg.pos_embed == "rope" else None
        mask = None
        if txt_mask is not None:  # padded caption tokens are not attended to; visual tokens always are
            keys = torch.cat([txt_mask.bool(), txt_mask.new_ones(txt_mask.shape[0], img.shape[1]).bool()], dim=1)
            mask = keys[:, None, None, :]  # (N, 1, 1, S + L)
        for block in self.double_blocks:
            img, txt = block(img, txt, vec, rope, mask)
        s = txt.shape[1]
        h = torch.cat([txt, img], dim=1)  # (N, S + L, D)
        for block in self.single_blocks:
            h = block(h, vec, rope, mask)
        out = self.final_layer(h[:, s:], vec)  # (N, L, pt*ph*pw*C)
        return self.unpatchify(out, grid)  # (N, C, T, H, W)
