"""DiT: Diffusion Transformer with adaLN-Zero (Peebles & Xie, 2023), also the SiT backbone.

State-dict keys and shapes equal the official ``facebookresearch/DiT`` ``models.py``, so the released
``DiT-XL-2-256x256.pt`` / ``DiT-XL-2-512x512.pt`` and ``SiT-XL-2-256x256.pt`` load with ``strict=True``
(see :func:`load_official_checkpoint`).

Example::

    from soraprep.models import MODELS
    model = MODELS["DiT-XL/2"]()                   # 675,129,632 parameters, 4 x 32 x 32 latents
    out = model(x, t, y)                           # x (N, 4, 32, 32), t (N,), y (N,) -> (N, 8, 32, 32)
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from soraprep.models.config import DiTConfig
from soraprep.models.layers import (
    Attention,
    FinalLayer,
    LabelEmbedder,
    Mlp,
    PatchEmbed,
    PooledTextEmbedder,
    TimestepEmbedder,
    modulate,
    sincos_2d,
)

# ------------------------------------------------------------------------------------------------
# Block
# ------------------------------------------------------------------------------------------------


class DiTBlock(nn.Module):
    """Pre-norm transformer block whose LayerNorms are modulated (shift, scale, gate) by the condition."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), approximate="tanh")
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # x: (N, L, D) tokens, c: (N, D) condition (timestep + label)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))  # (N, L, D)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))  # (N, L, D)
        return x


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------


class DiT(nn.Module):
    """Diffusion transformer over (N, C, H, W) latents, conditioned on timestep and class (or pooled text)."""

    def __init__(self, config: DiTConfig | None = None, **kwargs):
        super().__init__()
        config = (config or DiTConfig()).replace(**kwargs) if kwargs else (config or DiTConfig())
        self.config = config
        self.in_channels = config.in_channels
        self.out_channels = config.out_channels
        self.patch_size = config.patch_size
        self.num_heads = config.num_heads
        self.learn_sigma = config.learn_sigma
        d = config.hidden_size

        self.x_embedder = PatchEmbed(config.patch_size, config.in_channels, d)
        self.t_embedder = TimestepEmbedder(d)
        if config.text_dim > 0:
            self.y_embedder: nn.Module = PooledTextEmbedder(config.text_dim, d, config.class_dropout_prob)
        else:
            self.y_embedder = LabelEmbedder(config.num_classes, d, config.class_dropout_prob)
        # Fixed sin-cos embedding; a frozen Parameter (not a buffer) so the official state dict matches.
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, d), requires_grad=False)
        self.blocks = nn.ModuleList([DiTBlock(d, config.num_heads, config.mlp_ratio) for _ in range(config.depth)])
        self.final_layer = FinalLayer(d, config.patch_size**2, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """All init lives here. Zeroed: every adaLN modulation and the output linear (adaLN-Zero), so a
        fresh DiT is the identity on its residual stream and outputs exactly zero."""

        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        g = int(self.config.num_tokens**0.5)
        self.pos_embed.data.copy_(sincos_2d(self.config.hidden_size, g, g).unsqueeze(0))
        w = self.x_embedder.proj.weight.data  # patch embedding initialised like a linear layer
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        if isinstance(self.y_embedder, LabelEmbedder):
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, p*p*C) -> (N, C, H, W)."""
        c, p = self.out_channels, self.patch_size
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        # x: (N, C, H, W) latents; t: (N,) timesteps (int or float); y: (N,) labels or (N, text_dim)
        x = self.x_embedder(x) + self.pos_embed  # (N, L, D), L = H * W / p^2
        c = self.t_embedder(t) + self.y_embedder(y, self.training, force_drop_ids)  # (N, D)
        for block in self.blocks:
            x = block(x, c)  # (N, L, D)
        x = self.final_layer(x, c)  # (N, L, p*p*C_out)
        x = self.unpatchify(x)  # (N, C_out, H, W)
        if self.config.family == "SiT" and self.learn_sigma:
            x = x[:, : self.in_channels]  # SiT keeps the sigma head for checkpoint compatibility only
        return x

    def null_condition(self, n: int) -> torch.Tensor:
        """The unconditional ``y`` for classifier-free guidance: the null label or null text embedding."""
        if isinstance(self.y_embedder, PooledTextEmbedder):
            return self.y_embedder.null_embedding.expand(n, -1)
        if self.config.class_dropout_prob <= 0:
            raise ValueError("no null label: classifier-free guidance needs a model built with class_dropout_prob > 0")
        return torch.full((n,), self.config.num_classes, dtype=torch.long, device=self.pos_embed.device)

    def forward_with_cfg(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cfg_scale: float) -> torch.Tensor:
        """Classifier-free guidance. The batch is [conditional half; unconditional half] (second half's
        ``y`` = null label); the first half of ``x`` is used for both. Guides the first ``in_channels``
        channels (eps / velocity); the learned-sigma channels pass through unguided."""
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half], dim=0), t, y)  # (N, C_out, H, W)
        guided, rest = out[:, : self.in_channels], out[:, self.in_channels :]
        cond, uncond = guided.chunk(2, dim=0)
        half_guided = uncond + cfg_scale * (cond - uncond)
        return torch.cat([torch.cat([half_guided, half_guided], dim=0), rest], dim=1)


# ------------------------------------------------------------------------------------------------
# Official checkpoints
# ------------------------------------------------------------------------------------------------


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint with ``weights_only=True`` and unwrap ``{"model"|"ema"|"state_dict": ...}``.

    Official DiT/SiT files are a bare state dict; training checkpoints (DiT's ``train.py``, ours) keep
    weights under ``"ema"`` (preferred) or ``"model"``.
    """
    sd = torch.load(Path(path), map_location="cpu", weights_only=True)
    for key in ("ema", "model", "state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            return sd[key]
    return sd


def load_official_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load an official DiT / SiT / U-ViT checkpoint into a matching preset with ``strict=True``.

    Example: ``load_official_checkpoint(MODELS["DiT-XL/2"](), "DiT-XL-2-256x256.pt")``.
    """
    model.load_state_dict(load_state_dict_file(path), strict=True)
    return model
