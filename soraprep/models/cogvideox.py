"""CogVideoX transformer: caption tokens in the full 3D attention, with "expert" adaLN.

One transformer runs over the joint sequence [text; video]: attention (q, k, v, out) and feed-forward
weights are shared by both kinds of token, but each block's two adaLN layers produce separate
(shift, scale, gate) for the video tokens and for the text tokens, from the timestep embedding
(Yang et al., 2024, CogVideoX, section 2.2; the layout of diffusers ``CogVideoXTransformer3DModel``,
version 1.0). Described by :class:`~soraprep.models.config_joint.CogVideoXConfig`; a reference build
for exact parameter and FLOP counts and small-scale training, not a checkpoint loader.

Positions: fixed 3D sin-cos added to the video tokens (2B) or 3D RoPE on their q and k (5B).
Classifier-free guidance uses the encoded empty prompt, as the published model does (no learned null).

Example::

    from soraprep.models import MODELS
    model = MODELS["CogVideoX-2B"](num_layers=2, num_attention_heads=2, attention_head_dim=32)
    out = model(x, t, txt)   # x (N, 16, T, H, W), t (N,), txt (N, 226, 4096)
"""

from __future__ import annotations

import torch
from torch import nn

from soraprep.models.config_joint import CogVideoXConfig
from soraprep.models.layers import Mlp, PatchEmbed3D, attention, sincos_3d, timestep_embedding
from soraprep.models.mmdit import _heads, _merge, apply_rope, rope_3d

# ------------------------------------------------------------------------------------------------
# Block
# ------------------------------------------------------------------------------------------------


class ExpertLayerNormZero(nn.Module):
    """LayerNorm (affine, shared) + two adaLN modulations: (shift, scale, gate) for video and for text."""

    def __init__(self, time_embed_dim: int, dim: int):
        super().__init__()
        self.linear = nn.Linear(time_embed_dim, 6 * dim)
        self.norm = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x: torch.Tensor, txt: torch.Tensor, temb: torch.Tensor):
        # x: (N, L, D) video; txt: (N, S, D) text; temb: (N, E)
        shift, scale, gate, t_shift, t_scale, t_gate = self.linear(nn.functional.silu(temb)).unsqueeze(1).chunk(6, -1)
        x = self.norm(x) * (1 + scale) + shift
        txt = self.norm(txt) * (1 + t_scale) + t_shift
        return x, txt, gate, t_gate  # gates: (N, 1, D)


class CogVideoXBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, time_embed_dim: int, mlp_ratio: float, *, qkv_bias: bool,
                 qk_norm: bool):
        super().__init__()
        self.num_heads = num_heads
        hd = dim // num_heads
        self.norm1 = ExpertLayerNormZero(time_embed_dim, dim)
        self.to_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.norm_q = nn.LayerNorm(hd, eps=1e-6) if qk_norm else nn.Identity()
        self.norm_k = nn.LayerNorm(hd, eps=1e-6) if qk_norm else nn.Identity()
        self.to_out = nn.Linear(dim, dim)
        self.norm2 = ExpertLayerNormZero(time_embed_dim, dim)
        self.ff = Mlp(dim, int(dim * mlp_ratio), approximate="tanh")

    def forward(self, x: torch.Tensor, txt: torch.Tensor, temb: torch.Tensor, rope: torch.Tensor | None,
                mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        s = txt.shape[1]
        h, ht, gate, t_gate = self.norm1(x, txt, temb)
        h = torch.cat([ht, h], dim=1)  # (N, S + L, D): text first, as CogVideoX
        q = self.norm_q(_heads(self.to_q(h), self.num_heads))  # (N, heads, S + L, hd)
        k = self.norm_k(_heads(self.to_k(h), self.num_heads))
        v = _heads(self.to_v(h), self.num_heads)
        if rope is not None:  # RoPE on the video tokens only
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        out = self.to_out(_merge(attention(q, k, v, mask=mask)))  # (N, S + L, D)
        x = x + gate * out[:, s:]
        txt = txt + t_gate * out[:, :s]
        h, ht, gate, t_gate = self.norm2(x, txt, temb)
        out = self.ff(torch.cat([ht, h], dim=1))  # (N, S + L, D): one shared FFN
        return x + gate * out[:, s:], txt + t_gate * out[:, :s]


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------


class CogVideoX(nn.Module):
    """CogVideoX denoiser over (N, C, T, H, W) latents and T5 caption states (N, S, text_embed_dim)."""

    def __init__(self, config: CogVideoXConfig | None = None, **kwargs):
        super().__init__()
        config = (config or CogVideoXConfig()).replace(**kwargs) if kwargs else (config or CogVideoXConfig())
        self.config = config
        d, e = config.hidden_size, config.time_embed_dim
        self.patch_size = tuple(config.patch_size)
        pt, ph, pw = self.patch_size
        if config.pos_embed == "learned":
            self.pos_embedding = nn.Parameter(torch.zeros(1, config.num_tokens, d))
        self.patch_embed = PatchEmbed3D(self.patch_size, config.in_channels, d)
        self.text_proj = nn.Linear(config.text_embed_dim, d)
        self.time_embedding = nn.Sequential(nn.Linear(d, e), nn.SiLU(), nn.Linear(e, e))
        self.blocks = nn.ModuleList([
            CogVideoXBlock(d, config.num_attention_heads, e, config.mlp_ratio, qkv_bias=config.attention_bias,
                           qk_norm=config.qk_norm)
            for _ in range(config.num_layers)
        ])
        self.norm_final = nn.LayerNorm(d, eps=1e-5)
        self.norm_out_linear = nn.Linear(e, 2 * d)  # adaLN of the output: shift, scale
        self.norm_out = nn.LayerNorm(d, eps=1e-5)
        self.proj_out = nn.Linear(d, pt * ph * pw * config.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier linears; zeroed: every adaLN modulation and the output projection (a fresh model outputs 0)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        if self.config.pos_embed == "learned":
            nn.init.trunc_normal_(self.pos_embedding, std=0.02)
        zeroed = [b.norm1.linear for b in self.blocks] + [b.norm2.linear for b in self.blocks]
        for layer in (*zeroed, self.norm_out_linear, self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def grid(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        size = tuple(shape[-3:])
        if any(s % p for s, p in zip(size, self.patch_size, strict=True)):
            raise ValueError(f"latent size (T, H, W)={size} must be divisible by patch_size={self.patch_size}")
        return tuple(s // p for s, p in zip(size, self.patch_size, strict=True))  # type: ignore[return-value]

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(N, L, pt*ph*pw*C) -> (N, C, T, H, W)."""
        (gt, gh, gw), (pt, ph, pw), c = grid, self.patch_size, self.config.out_channels
        x = x.reshape(x.shape[0], gt, gh, gw, pt, ph, pw, c).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(x.shape[0], c, gt * pt, gh * ph, gw * pw)

    def forward(self, x: torch.Tensor, t: torch.Tensor, txt: torch.Tensor,
                txt_mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: (N, C, T, H, W); t: (N,); txt: (N, S, text_embed_dim); txt_mask: (N, S) bool, True = token
        cfg = self.config
        grid = self.grid(x.shape)
        d = cfg.hidden_size
        h = self.patch_embed(x)  # (N, L, D)
        if cfg.pos_embed == "sincos":
            h = h + sincos_3d(d, *grid).to(device=h.device, dtype=h.dtype).unsqueeze(0)
        elif cfg.pos_embed == "learned":
            h = h + self.pos_embedding
        ht = self.text_proj(txt)  # (N, S, D)
        temb = self.time_embedding(timestep_embedding(t, d))  # (N, E): sinusoid of width D
        rope = rope_3d(cfg.attention_head_dim, grid, device=x.device) if cfg.pos_embed == "rope" else None
        mask = None
        if txt_mask is not None:
            keys = torch.cat([txt_mask.bool(), txt_mask.new_ones(txt_mask.shape[0], h.shape[1]).bool()], dim=1)
            mask = keys[:, None, None, :]  # (N, 1, 1, S + L)
        for block in self.blocks:
            h, ht = block(h, ht, temb, rope, mask)
        h = self.norm_final(h)  # (N, L, D); per-token, so the text part can be dropped first
        shift, scale = self.norm_out_linear(nn.functional.silu(temb)).unsqueeze(1).chunk(2, dim=-1)
        h = self.norm_out(h) * (1 + scale) + shift
        return self.unpatchify(self.proj_out(h), grid)  # (N, C, T, H, W)
