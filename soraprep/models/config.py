"""Config dataclasses for every reference model, and the preset table.

Torch-free on purpose: the compute estimator (:mod:`soraprep.estimate`) reads these configs without
importing torch, and every checkpoint stores ``config.to_dict()`` so a model can be rebuilt from it.

Stability contract (other packages read these): new fields are only added with a default; a field that is
renamed keeps its old name in the config's ``aliases`` (read by ``from_dict`` / ``replace``), so saved
configs still load. Behaviour that differs between families lives in each config's hooks
(:class:`~soraprep.models.config_base.ModelConfig`). Sizes are in *latent* units for diffusion models (a 256-px image through
the SD VAE is a 4 x 32 x 32 latent, so ``input_size=32``).

Example::

    from soraprep.models.config import PRESETS, config_from_dict
    cfg = PRESETS["DiT-XL/2"]                      # DiTConfig(input_size=32, patch_size=2, ...)
    assert config_from_dict(cfg.to_dict()) == cfg
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from soraprep.models.config_base import (  # noqa: F401  (re-exported: the public names of the config API)
    CONDITIONINGS,
    CONFIG_TYPES,
    LAYOUTS,
    ModelConfig,
    _check,
    _ConfigMixin,
    _labels,
    register_config,
    square_image_latent,
)

# ------------------------------------------------------------------------------------------------
# DiT / SiT (image latents)
# ------------------------------------------------------------------------------------------------


@register_config
@dataclass(frozen=True)
class DiTConfig(ModelConfig):
    """Diffusion Transformer with adaLN-Zero (Peebles & Xie, 2023); SiT uses the same backbone.

    Field names equal the official ``DiT(...)`` constructor arguments, plus ``text_dim`` and ``family``.
    """

    config_type: ClassVar[str] = "dit"

    input_size: int = 32  # latent side length (image side / 8 for the SD VAE); square images
    patch_size: int = 2  # p: each p x p latent patch becomes one token -> (input_size / p)^2 tokens
    in_channels: int = 4  # latent channels (4 for the SD VAE)
    hidden_size: int = 1152  # transformer width D
    depth: int = 28  # number of DiT blocks
    num_heads: int = 16  # attention heads (head dim = hidden_size / num_heads)
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * hidden_size
    class_dropout_prob: float = 0.1  # probability a label is replaced by the null label (for CFG)
    num_classes: int = 1000  # label classes; the embedding table has num_classes + 1 rows (null label)
    learn_sigma: bool = True  # output 2 * in_channels channels: noise/velocity and variance interpolation
    text_dim: int = 0  # >0: condition on a pooled text embedding (N, text_dim) instead of a class label
    family: str = "DiT"  # "DiT" (returns all channels) | "SiT" (forward drops the sigma half, as official SiT)

    def __post_init__(self) -> None:
        _check(self.input_size % self.patch_size == 0,
               f"input_size={self.input_size} must be divisible by patch_size={self.patch_size}")
        _check(self.hidden_size % self.num_heads == 0,
               f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}")
        _check(self.family in ("DiT", "SiT"), f"family must be 'DiT' or 'SiT', got {self.family!r}")

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @property
    def num_tokens(self) -> int:
        return (self.input_size // self.patch_size) ** 2

    # ---- hooks (see ModelConfig) ----
    text_input: ClassVar[str] = "pooled"  # text: one pooled caption vector (N, text_dim)

    def build(self) -> Any:
        from soraprep.models.dit import DiT

        return DiT(self)


    @property
    def conditioning(self) -> str:
        return "text" if self.text_dim > 0 else "class" if self.num_classes > 0 else "none"

    @property
    def label_classes(self) -> int:
        return self.num_classes if self.text_dim <= 0 else 0

    @property
    def null_condition(self) -> bool:
        return self.class_dropout_prob > 0

    @property
    def learns_sigma(self) -> bool:  # SiT's forward drops the sigma half
        return self.learn_sigma and self.family != "SiT"

    def fit_data(self, args, data, caption_dropout, fixed):
        c, h = square_image_latent(data)
        fixed("in_channels", c)
        fixed("input_size", h)
        if data.has_text:
            fixed("text_dim", data.text_shape[1])
        else:
            args.setdefault("num_classes", max(1, int(data.index.get("num_classes") or 0)))
        args["class_dropout_prob"] = caption_dropout
        return self.replace(**args)

    def condition_inputs(self, batch, drop):
        from soraprep.models.layers import pool_text

        kw = {"y": pool_text(batch["text"], batch["mask"]) if self.text_dim > 0 else _labels(batch)}
        if drop is not None:
            kw["force_drop_ids"] = drop.long()
        return kw


# ------------------------------------------------------------------------------------------------
# U-ViT
# ------------------------------------------------------------------------------------------------


@register_config
@dataclass(frozen=True)
class UViTConfig(ModelConfig):
    """U-ViT (Bao et al., 2023): time and condition as tokens, long skips. Architecture as ``libs/uvit.py``;
    the size fields use the names every soraprep config uses (U-ViT's own ``img_size`` / ``in_chans`` /
    ``embed_dim`` are accepted as aliases, so configs saved before the rename still load)."""

    config_type: ClassVar[str] = "uvit"
    aliases: ClassVar[dict[str, str]] = {"img_size": "input_size", "in_chans": "in_channels",
                                         "embed_dim": "hidden_size"}

    input_size: int = 32  # latent side length (U-ViT: img_size)
    patch_size: int = 2  # patch side
    in_channels: int = 4  # latent channels (U-ViT: in_chans)
    hidden_size: int = 1152  # transformer width D (U-ViT: embed_dim)
    depth: int = 28  # depth // 2 input blocks + 1 mid block + depth // 2 output blocks
    num_heads: int = 16  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * hidden_size
    qkv_bias: bool = False  # bias on the fused qkv projection
    qk_scale: float | None = None  # attention scale; None -> head_dim ** -0.5
    mlp_time_embed: bool = False  # MLP on the sinusoidal time embedding (else used directly as a token)
    num_classes: int = 1001  # label rows incl. the null label used for CFG; <=0 -> unconditional
    use_checkpoint: bool = False  # activation checkpointing in blocks (saves memory, ~30% slower)
    conv: bool = True  # 3x3 conv after unpatchify
    skip: bool = True  # long skip connections fused by Linear(2D, D)

    def __post_init__(self) -> None:
        _check(self.input_size % self.patch_size == 0,
               f"input_size={self.input_size} must be divisible by patch_size={self.patch_size}")
        _check(self.hidden_size % self.num_heads == 0,
               f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}")

    @property
    def num_tokens(self) -> int:
        """Sequence length: patches + time token + label token (if conditional)."""
        return (self.input_size // self.patch_size) ** 2 + (2 if self.num_classes > 0 else 1)

    # U-ViT's own names, read-only (code written against the old fields keeps working).
    @property
    def sequential_blocks(self) -> int:
        return 2 * (self.depth // 2) + 1  # in-blocks, mid-block, out-blocks

    img_size = property(lambda self: self.input_size)
    in_chans = property(lambda self: self.in_channels)
    embed_dim = property(lambda self: self.hidden_size)

    # ---- hooks (see ModelConfig) ----

    def build(self) -> Any:
        from soraprep.models.uvit import UViT

        return UViT(self)


    @property
    def conditioning(self) -> str:
        return "class" if self.num_classes > 0 else "none"

    @property
    def label_classes(self) -> int:  # the last of num_classes rows is the null label
        return max(0, self.num_classes - 1)

    @property
    def null_condition(self) -> bool:
        return self.num_classes > 0

    def fit_data(self, args, data, caption_dropout, fixed):
        c, h = square_image_latent(data)
        if data.has_text:
            raise ValueError("U-ViT here is class-conditional only: encode without --text-encoder, or use a DiT "
                             "(pooled text) or VideoDiT (caption cross-attention)")
        fixed("in_channels", c)
        fixed("input_size", h)
        num_classes = int(data.index.get("num_classes") or 0)
        args.setdefault("num_classes", num_classes + 1 if num_classes else 0)  # + the null label
        return self.replace(**args)

    def condition_inputs(self, batch, drop):
        if self.num_classes <= 0:
            return {}
        labels = _labels(batch)
        return {"y": labels if drop is None else labels.masked_fill(drop, self.num_classes - 1)}


# ------------------------------------------------------------------------------------------------
# Video DiT (spacetime patches)
# ------------------------------------------------------------------------------------------------


@register_config
@dataclass(frozen=True)
class VideoDiTConfig(ModelConfig):
    """DiT over spacetime patches of video latents, text-conditioned by cross-attention.

    ``input_size`` is the *default* latent size (used by the compute estimator and for tests); forward
    accepts any (T, H, W) divisible by ``patch_size``, so bucketed batches of different sizes work.
    """

    config_type: ClassVar[str] = "video_dit"

    input_size: tuple[int, int, int] = (16, 32, 32)  # latent (frames, height, width); non-square is fine
    patch_size: tuple[int, int, int] = (1, 2, 2)  # spacetime patch (t, h, w)
    in_channels: int = 4  # latent channels
    hidden_size: int = 1152  # transformer width D
    depth: int = 28  # number of blocks
    num_heads: int = 16  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * hidden_size
    attention: str = "full"  # "full": one attention over T*H*W tokens | "factorized": spatial then temporal
    conditioning: str = "text"  # "text": cross-attention to caption tokens | "class": label | "none"
    text_dim: int = 4096  # caption embedding width (4096 for T5-v1.1-XXL, 768 for CLIP-L text)
    text_len: int = 120  # caption tokens (padded / truncated length; the null caption has this length)
    num_classes: int = 0  # used when conditioning == "class" (table has num_classes + 1 rows)
    caption_dropout_prob: float = 0.1  # probability a caption/label is replaced by the null one (for CFG)
    learn_sigma: bool = True  # output 2 * in_channels channels (noise + variance interpolation)
    # ---- architecture variants (the defaults above and below are soraprep's own VideoDiT / STDiT) ----------
    # "alternating" (Latte, Open-Sora 1.2 STDiT3): blocks alternate spatial / temporal attention, each block
    # with its own MLP (and cross-attention); ``depth`` counts all of them (Latte-XL: 28 = 14 + 14).
    modulation: str = "block"  # "block": adaLN-Zero, an own SiLU+Linear(D, k*D) per block (DiT) | "single":
    #   PixArt-alpha adaLN-single, one shared SiLU+Linear(D, 6D) and a learned (6, D) table per block
    adaln: str = "sample"  # timestep granularity: "sample" t (N,) | "frame" t (N, T') | "token" t (N, T', H', W')
    temporal_modulation: bool = True  # factorized: temporal attention has its own norm + shift/scale/gate;
    #   False = Open-Sora 1.0 STDiT (no norm, reuses the spatial gate)
    temporal_cross: bool = True  # alternating: temporal blocks cross-attend too (STDiT3) or not
    qk_norm: str = "none"  # "none" | "rms_head" (RMSNorm over head_dim) | "rms_full" (RMSNorm over D, Wan)
    cross_qk_norm: bool = False  # the same qk-norm in cross-attention (Wan, Step-Video)
    cross_norm: bool = False  # affine LayerNorm before cross-attention (Wan ``norm3``)
    norm_affine: bool = False  # block norms (norm1/norm2) with weight and bias (Step-Video)
    block_bias: bool = True  # biases of the attention and MLP linears inside blocks (Step-Video: False)
    pos_embed: str = "sincos"  # "sincos": 3D sin-cos added | "sincos2d_rope_t": 2D sin-cos + temporal RoPE |
    #   "rope": 3D RoPE in self-attention (Wan split of head_dim) | "learned": factorized learned T, H, W tables
    mlp: str = "gelu"  # "gelu" (tanh GELU, fc1/fc2) | "swiglu" (w1, w3, w2)
    mlp_hidden: int = 0  # MLP hidden width; 0 -> int(hidden_size * mlp_ratio)
    null_caption: str = "param"  # the learned null caption for CFG: "param" | "buffer" (PixArt) | "none"
    text_norm: bool = False  # LayerNorm (no affine) on caption embeddings before the projection (Step-Video)
    text2_dim: int = 0  # a second caption encoder (Step-Video: CLIP 1024-d): Linear(text2_dim, D), its
    text2_len: int = 0  #   tokens are prepended to the caption tokens in cross-attention
    micro_conditions: tuple[str, ...] = ()  # scalar conditions embedded like the timestep and added to it:
    #   "fps", "fl" (frames) -> D each; "csize" (h, w) -> 2 x D/3; "ar" (aspect ratio) -> D/3 (Open-Sora 1.x)
    skiparse: int = 1  # full attention: > 1 = Open-Sora-Plan 1.3 Skiparse, attention within `skiparse` groups of
    #   L / skiparse tokens (single skip in even blocks, group skip in odd ones) ...
    skiparse_dense: int = 0  # ... except this many dense blocks at each end of the stack

    def __post_init__(self) -> None:
        _check(len(self.input_size) == 3 and len(self.patch_size) == 3,
               "input_size and patch_size must be (t, h, w) triples")
        for n, p, name in zip(self.input_size, self.patch_size, "thw", strict=True):
            _check(n % p == 0, f"input_size {name}={n} must be divisible by patch_size {name}={p}")
        _check(self.hidden_size % self.num_heads == 0,
               f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}")
        _check(self.attention in ("full", "factorized", "alternating"),
               f"attention must be 'full', 'factorized' or 'alternating', got {self.attention!r}")
        _check(self.attention != "alternating" or self.depth % 2 == 0,
               f"attention='alternating' needs an even depth (spatial + temporal pairs), got {self.depth}")
        for name, value, allowed in (("modulation", self.modulation, ("block", "single")),
                                     ("adaln", self.adaln, ("sample", "frame", "token")),
                                     ("qk_norm", self.qk_norm, ("none", "rms_head", "rms_full")),
                                     ("pos_embed", self.pos_embed, ("sincos", "sincos2d_rope_t", "rope", "learned")),
                                     ("mlp", self.mlp, ("gelu", "swiglu")),
                                     ("null_caption", self.null_caption, ("param", "buffer", "none"))):
            _check(value in allowed, f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        for m in self.micro_conditions:
            _check(m in MICRO_CONDITIONS, f"micro_conditions: unknown {m!r}; use any of {sorted(MICRO_CONDITIONS)}")
        _check(not ("csize" in self.micro_conditions or "ar" in self.micro_conditions)
               or self.hidden_size % 3 == 0 and ("csize" in self.micro_conditions) == ("ar" in self.micro_conditions),
               "micro_conditions 'csize' and 'ar' go together (2 x D/3 + D/3 = D): use both and a hidden_size "
               "divisible by 3")
        head_dim = self.hidden_size // self.num_heads
        _check(self.pos_embed in ("sincos", "learned") or head_dim % 2 == 0 and head_dim >= 6,
               f"RoPE needs an even head_dim >= 6, got {head_dim}: change hidden_size or num_heads")
        _check(self.null_caption != "none" or self.caption_dropout_prob == 0 or self.conditioning != "text",
               "null_caption='none' has no null caption to drop to: set caption_dropout_prob=0 "
               "(encode the empty prompt instead, as Wan does)")
        _check((self.text2_dim > 0) == (self.text2_len > 0), "text2_dim and text2_len go together (both > 0 or 0)")
        _check(self.skiparse >= 1 and (self.skiparse == 1 or self.attention == "full"),
               f"skiparse={self.skiparse} (sparse groups) needs attention='full' and must be >= 1")
        _check(self.conditioning in ("text", "class", "none"),
               f"conditioning must be 'text', 'class' or 'none', got {self.conditioning!r}")
        _check(self.conditioning != "class" or self.num_classes > 0,
               "conditioning='class' needs num_classes > 0")

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """Token grid (T', H', W') of the default input size."""
        return tuple(n // p for n, p in zip(self.input_size, self.patch_size, strict=True))  # type: ignore[return-value]

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid_size
        return t * h * w

    @property
    def mlp_hidden_size(self) -> int:
        return self.mlp_hidden or int(self.hidden_size * self.mlp_ratio)

    # ---- hooks (see ModelConfig); ``conditioning`` is a field here ----
    latent_layout: ClassVar[str] = "video"

    def build(self) -> Any:
        from soraprep.models.video_dit import VideoDiT

        return VideoDiT(self)


    @property
    def label_classes(self) -> int:
        return self.num_classes if self.conditioning == "class" else 0

    @property
    def null_condition(self) -> bool:
        return self.conditioning != "none" and self.caption_dropout_prob > 0

    @property
    def learns_sigma(self) -> bool:
        return self.learn_sigma

    def fit_data(self, args, data, caption_dropout, fixed):
        c, t, h, w = data.latent_shapes[0]  # largest bucket: the default size (forward takes any)
        fixed("in_channels", c)
        args.setdefault("input_size", (t, h, w))
        cond = args.setdefault("conditioning", "text" if data.has_text else "class" if data.has_labels else "none")
        if cond == "text":
            if not data.has_text:
                raise ValueError("conditioning 'text' needs caption embeddings: encode with --text-encoder")
            s, d = data.text_shape
            fixed("text_dim", d)
            fixed("text_len", s)
        if cond == "class":
            args.setdefault("num_classes", max(1, int(data.index.get("num_classes") or 0)))
        args["caption_dropout_prob"] = caption_dropout
        return self.replace(**args)

    def condition_inputs(self, batch, drop):
        kw: dict[str, Any] = {}
        if self.conditioning == "text":
            kw.update(y=batch["text"], mask=batch["mask"])
        elif self.conditioning == "class":
            kw["y"] = _labels(batch)
        if drop is not None and self.conditioning != "none":
            kw["force_drop_ids"] = drop.long()
        return kw


# name -> (scalars embedded, output width as a fraction of hidden_size): Open-Sora's SizeEmbedder uses
MICRO_CONDITIONS = {"fps": (1, 1), "fl": (1, 1), "csize": (2, 3), "ar": (1, 3)}


# ------------------------------------------------------------------------------------------------
# VideoGPT VQ-VAE
# ------------------------------------------------------------------------------------------------


@register_config
@dataclass(frozen=True)
class VQVAEConfig(ModelConfig):
    """VideoGPT-style VQ-VAE (Yan et al., 2021). Names follow VideoGPT's ``VQVAE`` arguments."""

    config_type: ClassVar[str] = "vqvae"

    n_hiddens: int = 240  # channels of the conv / residual trunk
    n_res_layers: int = 4  # attention-residual blocks in encoder and in decoder
    downsample: tuple[int, int, int] = (4, 4, 4)  # (t, h, w) compression; powers of two
    embedding_dim: int = 256  # codebook vector dimension
    n_codes: int = 2048  # codebook size
    in_channels: int = 3  # video channels (RGB)
    n_head: int = 2  # heads of each axial attention (over T, H and W)
    ema_decay: float = 0.99  # EMA decay of codebook counts and sums
    commitment_cost: float = 0.25  # weight of the commitment loss ||z - sg[e]||^2
    restart_threshold: float = 1.0  # codes whose EMA count falls below this are restarted from encoder outputs
    input_size: tuple[int, int, int] = (16, 64, 64)  # default clip (frames, height, width); for the estimator

    def __post_init__(self) -> None:
        for d in self.downsample:
            _check(d >= 1 and (d & (d - 1)) == 0, f"downsample {self.downsample} must be powers of two")
        _check(self.n_hiddens % 2 == 0, "n_hiddens must be even (residual bottleneck is n_hiddens // 2)")

    @property
    def latent_size(self) -> tuple[int, int, int]:
        return tuple(n // d for n, d in zip(self.input_size, self.downsample, strict=True))  # type: ignore[return-value]

    # ---- hooks (see ModelConfig): an autoencoder, built and counted, not trained by soraprep.train ----
    latent_layout: ClassVar[str] = "pixels"

    def build(self) -> Any:
        from soraprep.models.vqvae import VQVAE

        return VQVAE(self)


    def with_latent(self, t: int, h: int, w: int, channels: int | None = None):
        return self.replace(input_size=(t, h, w), **({"in_channels": channels} if channels else {}))


def config_from_dict(d: dict[str, Any]):
    """Rebuild any config from ``to_dict()`` output (dispatches on ``config_type``)."""
    kind = d.get("config_type")
    if kind not in CONFIG_TYPES:
        raise ValueError(f"unknown config_type {kind!r}; expected one of {sorted(CONFIG_TYPES)}")
    return CONFIG_TYPES[kind].from_dict(d)


# ------------------------------------------------------------------------------------------------
# Presets: name -> config. MODELS (soraprep.models) maps the same names to constructors.
# ------------------------------------------------------------------------------------------------

# DiT sizes (paper Table 1): width, depth, heads.
_DIT_SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}

PRESETS: dict[str, ModelConfig] = {}

for _size, (_d, _depth, _heads) in _DIT_SIZES.items():
    for _p in (2, 4, 8):
        PRESETS[f"DiT-{_size}/{_p}"] = DiTConfig(patch_size=_p, hidden_size=_d, depth=_depth, num_heads=_heads)
        PRESETS[f"SiT-{_size}/{_p}"] = DiTConfig(
            patch_size=_p, hidden_size=_d, depth=_depth, num_heads=_heads, family="SiT"
        )
    # Spacetime-patch video DiTs, caption cross-attention (T5-XXL, 120 tokens as PixArt-alpha / Open-Sora 1.x).
    PRESETS[f"VideoDiT-{_size}/2"] = VideoDiTConfig(hidden_size=_d, depth=_depth, num_heads=_heads, attention="full")
    PRESETS[f"STDiT-{_size}/2"] = VideoDiTConfig(
        hidden_size=_d, depth=_depth, num_heads=_heads, attention="factorized"
    )

# U-ViT ImageNet 256 (latent 32x32): configs/imagenet256_uvit_{huge,large}.py of baofff/U-ViT.
PRESETS["U-ViT-H/2"] = UViTConfig(hidden_size=1152, depth=28, num_heads=16, conv=False)
PRESETS["U-ViT-L/2"] = UViTConfig(hidden_size=1024, depth=20, num_heads=16, conv=True)

# VideoGPT VQ-VAE: the default arguments (21,141,619 parameters) and the other released strides.
PRESETS["VQVAE-videogpt"] = VQVAEConfig()
PRESETS["VQVAE-videogpt-4x2x2"] = VQVAEConfig(downsample=(4, 2, 2))
PRESETS["VQVAE-videogpt-2x4x4"] = VQVAEConfig(downsample=(2, 4, 4))

del _size, _d, _depth, _heads, _p


def register_preset(name: str, config: ModelConfig) -> ModelConfig:
    """Add a preset (and so a ``MODELS`` constructor); refuses a name already taken."""
    if name in PRESETS:
        raise ValueError(f"model preset {name!r} is already registered")
    if type(config).config_type not in CONFIG_TYPES:
        raise ValueError(f"{type(config).__name__} is not registered: decorate it with @register_config")
    PRESETS[name] = config
    return config


def get_config(name: str, **overrides: Any):
    """Preset config by name, with fields overridden; unknown names raise KeyError, unknown fields TypeError."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]

from soraprep.models import config_joint as _config_joint  # noqa: E402,F401  (registers MM-DiT/CogVideoX presets)
from soraprep.models import presets_video as _presets_video  # noqa: E402,F401  (published video presets)
