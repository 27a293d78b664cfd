"""Configs of joint text-video attention transformers, and their presets.

Two families in which caption tokens are *tokens of the sequence* (they go through the blocks and
attend jointly with the visual tokens, instead of being cross-attended to):

- :class:`MMDiTConfig`: MM-DiT with double-stream blocks (separate weights for the text and the visual
  stream, one joint attention) followed by single-stream blocks (one set of weights over the
  concatenated sequence, parallel attention + MLP as in ViT-22B). SD3 (double only), Flux.1,
  HunyuanVideo and Open-Sora 2.0 are instances.
- :class:`CogVideoXConfig`: CogVideoX's "expert" adaLN: one transformer over [text; video] with shared
  attention and MLP weights, but separate adaLN modulation (shift, scale, gate) for the text and the
  video tokens.

Torch-free (the estimator reads these). Registered into :data:`soraprep.models.config.PRESETS` and
``config_from_dict`` (``@register_config``) by the import at the end of ``config.py``. Sizes are in latent units, as for
``VideoDiTConfig``: ``input_size`` is the default latent (frames, height, width), ``patch_size`` a
(t, h, w) triple, so the estimator's shape handling (``plan.shaped_config``) treats them as video models.

Every preset cites the file its hyperparameters come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from soraprep.models.config import PRESETS, ModelConfig, _check, register_config

POS_EMBEDS = ("rope", "sincos", "learned", "none")


def _check_video(input_size, patch_size, hidden_size: int, num_heads: int, pos_embed: str) -> None:
    _check(len(input_size) == 3 and len(patch_size) == 3, "input_size and patch_size must be (t, h, w) triples")
    for n, p, name in zip(input_size, patch_size, "thw", strict=True):
        _check(n % p == 0, f"input_size {name}={n} must be divisible by patch_size {name}={p}")
    _check(hidden_size % num_heads == 0, f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
    _check(pos_embed in POS_EMBEDS, f"pos_embed must be one of {', '.join(POS_EMBEDS)}, got {pos_embed!r}")


class _VideoGrid:
    """Token-grid helpers shared by both configs (same meaning as ``VideoDiTConfig``)."""

    input_size: tuple[int, int, int]
    patch_size: tuple[int, int, int]
    in_channels: int

    # The estimator's data-prep step asks for ``conditioning == "text"`` to charge text encoding.
    conditioning: ClassVar[str] = "text"
    latent_layout: ClassVar[str] = "video"

    @property
    def out_channels(self) -> int:  # every published model of these families predicts in_channels
        return self.in_channels

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """Token grid (T', H', W') of the default input size."""
        return tuple(n // p for n, p in zip(self.input_size, self.patch_size, strict=True))  # type: ignore[return-value]

    @property
    def num_tokens(self) -> int:
        """Visual tokens (the joint sequence is ``num_tokens + text_len``)."""
        t, h, w = self.grid_size
        return t * h * w


# ------------------------------------------------------------------------------------------------
# MM-DiT (SD3 / Flux / HunyuanVideo / Open-Sora 2.0)
# ------------------------------------------------------------------------------------------------


@register_config
@dataclass(frozen=True)
class MMDiTConfig(_VideoGrid, ModelConfig):
    """MM-DiT: ``depth_double`` double-stream blocks, then ``depth_single`` single-stream blocks.

    Field names follow Flux's ``FluxParams`` where one exists (``hidden_size``, ``num_heads``,
    ``mlp_ratio``, ``qkv_bias``, ``guidance_embed``). Flux's ``in_channels=64`` is a 16-channel latent
    packed 2 x 2: here ``in_channels=16, patch_size=(1, 2, 2)`` (the same Linear(64, D)).
    """

    config_type: ClassVar[str] = "mmdit"

    input_size: tuple[int, int, int] = (1, 64, 64)  # default latent (frames, height, width)
    patch_size: tuple[int, int, int] = (1, 2, 2)  # spacetime patch (t, h, w)
    in_channels: int = 16  # latent channels (output channels are the same)
    hidden_size: int = 3072  # width D of both streams
    num_heads: int = 24  # attention heads (head dim = hidden_size / num_heads)
    depth_double: int = 19  # double-stream blocks (text and visual weights separate, joint attention)
    depth_single: int = 38  # single-stream blocks over [text; visual] (fused qkv+MLP-in, attn-out+MLP-out)
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * hidden_size
    qkv_bias: bool = True  # bias of the q/k/v (and, as in all four models, the attention out) projections
    qk_norm: bool = True  # RMSNorm (learned scale, head_dim) on q and k of every attention
    text_len: int = 512  # caption tokens in the joint sequence (padded length)
    text_dim: int = 4096  # caption token width (T5-v1.1-XXL 4096; HunyuanVideo's LLM 4096)
    pooled_dim: int = 768  # pooled caption vector (CLIP-L 768) added to the timestep embedding; 0: none
    guidance_embed: bool = False  # embedding of the distilled guidance scale (Flux.1-dev, HunyuanVideo)
    text_refiner_depth: int = 0  # >0: HunyuanVideo's token refiner (that many self-attention blocks on text)
    cond_embed: bool = False  # Open-Sora 2.0 i2v: Linear(patch_numel + ph*pw, D) of the conditioning latent
    context_pre_only_last: bool = False  # SD3: the last double block's text stream stops after its q, k, v
    pos_embed: str = "rope"  # "rope" (no parameters) | "sincos" (fixed, no parameters) | "learned" | "none"

    def __post_init__(self) -> None:
        _check_video(self.input_size, self.patch_size, self.hidden_size, self.num_heads, self.pos_embed)
        _check(self.depth_double + self.depth_single > 0, "need at least one double or single block")
        _check(self.text_len > 0 and self.text_dim > 0, "text_len and text_dim must be > 0 (captions are tokens)")
        _check(not self.context_pre_only_last or self.depth_double > 0,
               "context_pre_only_last needs at least one double block")

    @property
    def depth(self) -> int:
        """Transformer blocks in sequence (double + single), for code that walks any config's depth."""
        return self.depth_double + self.depth_single

    def build(self) -> Any:
        from soraprep.models.mmdit import MMDiT

        return MMDiT(self)



# ------------------------------------------------------------------------------------------------
# CogVideoX (expert adaLN, text in the full 3D attention)
# ------------------------------------------------------------------------------------------------


@register_config
@dataclass(frozen=True)
class CogVideoXConfig(_VideoGrid, ModelConfig):
    """CogVideoX transformer (diffusers ``CogVideoXTransformer3DModel``; names as its arguments where
    they exist: ``num_attention_heads x attention_head_dim`` is the width, ``time_embed_dim``...)."""

    config_type: ClassVar[str] = "cogvideox"

    input_size: tuple[int, int, int] = (13, 60, 90)  # default latent: 49 frames at 480 x 720 (4x8x8 VAE)
    patch_size: tuple[int, int, int] = (1, 2, 2)  # CogVideoX 1.0: 2D patches per latent frame
    in_channels: int = 16  # latent channels (output the same)
    num_attention_heads: int = 30
    attention_head_dim: int = 64  # width D = heads x head_dim
    num_layers: int = 30
    time_embed_dim: int = 512  # timestep embedding width (the adaLN input)
    text_embed_dim: int = 4096  # T5-v1.1-XXL
    text_len: int = 226  # max_text_seq_length: caption tokens in the joint sequence
    mlp_ratio: float = 4.0  # FeedForward inner width = mlp_ratio * D
    attention_bias: bool = True  # bias of to_q / to_k / to_v (to_out always has one)
    qk_norm: bool = True  # LayerNorm (affine, head_dim) on q and k
    pos_embed: str = "sincos"  # 2B: fixed 3D sin-cos (a buffer); 5B: "rope"

    def __post_init__(self) -> None:
        _check_video(self.input_size, self.patch_size, self.hidden_size, self.num_attention_heads, self.pos_embed)
        _check(self.text_len > 0, "text_len must be > 0 (captions are tokens of the sequence)")

    @property
    def hidden_size(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    # The generic names other soraprep configs use (parallelism and memory code read these).
    @property
    def num_heads(self) -> int:
        return self.num_attention_heads

    @property
    def depth(self) -> int:
        return self.num_layers

    def build(self) -> Any:
        from soraprep.models.cogvideox import CogVideoX

        return CogVideoX(self)



# ------------------------------------------------------------------------------------------------
# Presets (published hyperparameters; the default input_size is each model's headline resolution)
# ------------------------------------------------------------------------------------------------

# Open-Sora 2.0 (hpcaitech/Open-Sora, configs/diffusion/train/image.py -> stage1/stage2.py: model type
# "flux", hidden 3072, 24 heads, depth 19, depth_single_blocks 38, mlp_ratio 4, axes_dim [16,56,56]
# (RoPE), qkv_bias, guidance_embed=False, in_channels 64 = 16-ch Hunyuan VAE latent packed 2x2,
# vec_in_dim 768 (CLIP-L), context_in_dim 4096 with t5 max_length 512). Text-to-video model; the
# i2v stages add cond_embed=True (configs/diffusion/train/stage1_i2v.py). Default: 129 frames at 256 px.
PRESETS["OpenSora-2.0-11B"] = MMDiTConfig(
    input_size=(33, 32, 32), hidden_size=3072, num_heads=24, depth_double=19, depth_single=38, text_len=512,
    text_dim=4096, pooled_dim=768, guidance_embed=False, qk_norm=True, pos_embed="rope",
)
# HunyuanVideo (Tencent/HunyuanVideo hyvideo/modules/models.py HUNYUAN_VIDEO_CONFIG["HYVideo-T/2-cfgdistill"]:
# 20 double + 40 single blocks, hidden 3072, 24 heads, mlp_width_ratio 4, rope_dim_list [16,56,56],
# qkv_bias, qk_norm rms, guidance_embed; patch [1,2,2]; text_projection "single_refiner" with depth=2;
# hyvideo/config.py: --text-states-dim 4096, --text-len 256, CLIP-L pooled 768; latent 16 channels).
# Default: 129 frames at 720 x 1280 through the 4x8x8 causal VAE -> (33, 90, 160).
PRESETS["HunyuanVideo-13B"] = MMDiTConfig(
    input_size=(33, 90, 160), hidden_size=3072, num_heads=24, depth_double=20, depth_single=40, text_len=256,
    text_dim=4096, pooled_dim=768, guidance_embed=True, text_refiner_depth=2, qk_norm=True, pos_embed="rope",
)
# FLUX.1-dev (black-forest-labs/flux src/flux/util.py configs["flux-dev"]: the Open-Sora 2.0 backbone
# with guidance_embed=True; T5 max_length 512 for dev). Default: 1024 x 1024 (16-ch f8 VAE).
PRESETS["Flux.1-dev"] = MMDiTConfig(
    input_size=(1, 128, 128), hidden_size=3072, num_heads=24, depth_double=19, depth_single=38, text_len=512,
    text_dim=4096, pooled_dim=768, guidance_embed=True, qk_norm=True, pos_embed="rope",
)
# SD3-Medium (stabilityai/stable-diffusion-3-medium-diffusers transformer/config.json: num_layers 24,
# 24 heads x 64, patch 2, in/out 16, joint_attention_dim 4096, pooled_projection_dim 2048, no qk-norm;
# diffusers SD3Transformer2DModel: fixed sin-cos pos_embed buffer, last block context_pre_only).
# Caption tokens: 77 CLIP + 256 T5 (pipeline default max_sequence_length). Default: 1024 x 1024.
PRESETS["SD3-Medium"] = MMDiTConfig(
    input_size=(1, 128, 128), hidden_size=1536, num_heads=24, depth_double=24, depth_single=0, text_len=333,
    text_dim=4096, pooled_dim=2048, guidance_embed=False, qk_norm=False, context_pre_only_last=True,
    pos_embed="sincos",
)
# CogVideoX (THUDM/CogVideoX-{2b,5b} transformer/config.json as read by diffusers
# CogVideoXTransformer3DModel: 2b = 30 heads x 64, 30 layers, sin-cos positions; 5b = 48 heads x 64,
# 42 layers, 3D RoPE; both time_embed_dim 512, text 4096 x 226 tokens, patch 2, 16 channels).
PRESETS["CogVideoX-2B"] = CogVideoXConfig(num_attention_heads=30, num_layers=30, pos_embed="sincos")
PRESETS["CogVideoX-5B"] = CogVideoXConfig(num_attention_heads=48, num_layers=42, pos_embed="rope")
