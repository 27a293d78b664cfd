"""Analytic parameter, MAC and activation counts for soraprep's model configs.

One counter per config class of :mod:`soraprep.models.config` (the same dataclasses the models are
built from): :func:`count_model` dispatches on the type. Every count is per **sample** (batch 1).

Conventions (also in ``docs/estimate.md``):

- 1 MAC = one multiply-accumulate; **FLOPs = 2 x MACs**. Only matmul-like work is counted (linear
  layers, attention scores and weighted sums, convolutions); norms, activations and softmax are not
  (fvcore's numbers for DiT include LayerNorm at ~0.06 % of the total).
- Attention is counted explicitly: ``QK^T`` and ``softmax(.)V`` cost ``N_q * N_kv * D`` MACs each,
  summed over heads. FLOP counters that skip fused ``scaled_dot_product_attention`` miss exactly this.
- Components: ``linear`` (per-token projections of the backbone), ``attention`` (scores + weighted
  sum), ``conv`` (patch embedding and other convolutions), ``conditioning`` (timestep MLP, adaLN
  modulation, label/text embeddings and text-side key/value projections).
- Parameter kinds: ``per_token`` weights act on every visual token; ``per_sample`` weights act once per
  sample (adaLN, timestep MLP: why 6·N·D overestimates DiT); ``text`` weights act on each caption token;
  ``lookup`` (embedding tables) and ``positional`` weights are read, not multiplied; ``per_frame`` weights
  act once per latent frame (adaLN conditioned per frame, e.g. per-frame noise levels).

Activation elements (kept for backward, flash attention assumed, so no ``N x N`` score matrix) are
listed per sub-layer next to the FLOPs so the memory model (:mod:`soraprep.estimate.memory`) needs no
knowledge of the architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

COMPONENTS = ("linear", "attention", "conv", "conditioning")
PARAM_KINDS = ("per_token", "per_sample", "text", "lookup", "positional", "per_frame")
RECOMPUTE_MODES = ("none", "selective", "full")


@dataclass(frozen=True)
class ParamGroup:
    """Parameters of one layer (times its repeat count)."""

    name: str
    count: int
    kind: str  # one of PARAM_KINDS
    trainable: bool = True


@dataclass(frozen=True)
class MacTerm:
    """Multiply-accumulates of one layer or attention op for one sample (times its repeat count)."""

    name: str
    component: str  # one of COMPONENTS
    macs: int


@dataclass(frozen=True)
class Activations:
    """Activation *elements* per sample kept for the backward pass, by recompute policy.

    ``none``: everything autograd keeps. ``selective``: matmul/attention inputs and outputs kept, norms,
    modulation and activation functions recomputed (no extra matmul FLOPs). ``full``: only each block's
    input kept (``full_stored``) plus one block's working set while it is recomputed (``full_working``).
    """

    none: int
    selective: int
    full_stored: int
    full_working: int

    def elements(self, recompute: str) -> int:
        if recompute == "none":
            return self.none
        if recompute == "selective":
            return self.selective
        if recompute == "full":
            return self.full_stored + self.full_working
        raise ValueError(f"unknown recompute mode {recompute!r}: use one of {', '.join(RECOMPUTE_MODES)}")


@dataclass(frozen=True)
class ModelCount:
    """Everything the estimator needs to know about one model at one input size."""

    model: str
    config: Any
    latent: tuple[int, int, int, int]  # (C, T, H, W) of one sample's model input
    tokens: int  # visual tokens per sample (sequence length through the blocks, extras included)
    text_tokens: int
    params: tuple[ParamGroup, ...]
    terms: tuple[MacTerm, ...]
    activations: Activations
    notes: tuple[str, ...] = field(default=())

    # ---- parameters ---------------------------------------------------------------------------
    @property
    def params_total(self) -> int:
        return sum(p.count for p in self.params)

    @property
    def params_trainable(self) -> int:
        return sum(p.count for p in self.params if p.trainable)

    def params_by_kind(self) -> dict[str, int]:
        out = dict.fromkeys(PARAM_KINDS, 0)
        for p in self.params:
            out[p.kind] += p.count
        return out

    # ---- compute ------------------------------------------------------------------------------
    @property
    def forward_macs(self) -> int:
        return sum(t.macs for t in self.terms)

    @property
    def forward_flops(self) -> int:
        return 2 * self.forward_macs

    def macs_by_component(self) -> dict[str, int]:
        out = dict.fromkeys(COMPONENTS, 0)
        for t in self.terms:
            out[t.component] += t.macs
        return out

    def naive_6nd_flops(self) -> int:
        """The LLM rule 6·N·D per sample (N = all parameters, D = tokens) for comparison only."""
        return 6 * self.params_total * self.tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "config": self.config.to_dict() if hasattr(self.config, "to_dict") else None,
            "latent_shape": list(self.latent),
            "tokens": self.tokens,
            "text_tokens": self.text_tokens,
            "params": self.params_total,
            "params_trainable": self.params_trainable,
            "params_by_kind": self.params_by_kind(),
            "params_by_layer": {p.name: p.count for p in self.params},
            "forward_macs": self.forward_macs,
            "forward_flops": self.forward_flops,
            "forward_macs_by_component": self.macs_by_component(),
            "forward_macs_by_layer": {t.name: t.macs for t in self.terms},
            "naive_6nd_train_flops_per_sample": self.naive_6nd_flops(),
            "activation_elements": {m: self.activations.elements(m) for m in RECOMPUTE_MODES},
            "notes": list(self.notes),
        }


class _Tally:
    """Accumulates parameter groups and MAC terms while a counter walks a model top to bottom."""

    def __init__(self) -> None:
        self.params: list[ParamGroup] = []
        self.terms: list[MacTerm] = []

    def param(self, name: str, count: int, kind: str, *, trainable: bool = True, repeat: int = 1) -> None:
        if count * repeat:
            self.params.append(ParamGroup(name, int(count * repeat), kind, trainable))

    def mac(self, name: str, component: str, macs: int, *, repeat: int = 1) -> None:
        if macs * repeat:
            self.terms.append(MacTerm(name, component, int(macs * repeat)))

    def linear(self, name: str, n: int, d_in: int, d_out: int, *, bias: bool = True, kind: str = "per_token",
               component: str = "linear", repeat: int = 1) -> None:
        """nn.Linear(d_in, d_out) applied to n vectors per sample, repeated ``repeat`` times (layers)."""
        self.param(name, d_in * d_out + (d_out if bias else 0), kind, repeat=repeat)
        self.mac(name, component, n * d_in * d_out, repeat=repeat)

    def attention(self, name: str, n_seq: int, n_q: int, n_kv: int, dim: int, *, repeat: int = 1) -> None:
        """Scores QK^T (n_q*n_kv*dim) + weighted sum PV (same), summed over heads, for n_seq sequences."""
        self.mac(name, "attention", 2 * n_seq * n_q * n_kv * dim, repeat=repeat)


Tally = _Tally  # public name: a new model family's ``count()`` hook walks its model with one (docs/architecture.md)


# ------------------------------------------------------------------------------------------------
# Activation bookkeeping per sub-layer (elements per token, in units of the width D unless noted)
# ------------------------------------------------------------------------------------------------
# adaLN self-attention: norm input, norm output, modulated (= qkv input), q, k, v, attention output
#   (= proj input), proj output (needed for the gate's gradient)            -> 8 D  | selective 6 D
# adaLN MLP: norm input, norm output, modulated, fc1 output (H), GELU output (H), fc2 output (gate)
#                                                                           -> 4 D + 2 H | selective 2 D + H
# cross-attention (no norm, no gate): input (= q input), q, attention output -> 3 D | same
#   plus k, v of each caption token: 2 D per text token per block.
# pre-norm self-attention (U-ViT): input, norm output, q, k, v, output      -> 6 D  | selective 5 D
# pre-norm MLP (U-ViT): input, norm output, fc1 output (H), GELU output (H)  -> 2 D + 2 H | selective D + H
# long-skip fuse: concat input (2 D)                                        -> 2 D  | same


def _adaln_block_act(d: int, h: int, n_self_attn: int, cross: bool) -> tuple[int, int]:
    none = n_self_attn * 8 * d + (4 * d + 2 * h) + (3 * d if cross else 0)
    selective = n_self_attn * 6 * d + (2 * d + h) + (3 * d if cross else 0)
    return none, selective


# ------------------------------------------------------------------------------------------------
# DiT / SiT
# ------------------------------------------------------------------------------------------------


def count_dit(cfg, *, name: str = "DiT") -> ModelCount:
    """Official DiT (facebookresearch/DiT ``models.py``): adaLN-Zero blocks, frozen sin-cos pos_embed."""
    d, p, c = cfg.hidden_size, cfg.patch_size, cfg.in_channels
    n = cfg.num_tokens
    h = int(d * cfg.mlp_ratio)
    L = cfg.depth
    t = _Tally()
    t.param("pos_embed", n * d, "positional", trainable=False)  # fixed 2D sin-cos, requires_grad=False
    t.param("x_embedder", c * p * p * d + d, "per_token")
    t.mac("x_embedder", "conv", n * c * p * p * d)
    t.linear("t_embedder.mlp.0", 1, 256, d, kind="per_sample", component="conditioning")
    t.linear("t_embedder.mlp.2", 1, d, d, kind="per_sample", component="conditioning")
    if cfg.text_dim > 0:
        t.param("y_embedder.null_embedding", cfg.text_dim, "lookup")
        t.linear("y_embedder.mlp.0", 1, cfg.text_dim, d, kind="per_sample", component="conditioning")
        t.linear("y_embedder.mlp.2", 1, d, d, kind="per_sample", component="conditioning")
    else:
        t.param("y_embedder", (cfg.num_classes + int(cfg.class_dropout_prob > 0)) * d, "lookup")
    t.linear("blocks.attn.qkv", n, d, 3 * d, repeat=L)
    t.attention("blocks.attn.core", 1, n, n, d, repeat=L)
    t.linear("blocks.attn.proj", n, d, d, repeat=L)
    t.linear("blocks.mlp.fc1", n, d, h, repeat=L)
    t.linear("blocks.mlp.fc2", n, h, d, repeat=L)
    t.linear("blocks.adaLN_modulation", 1, d, 6 * d, kind="per_sample", component="conditioning", repeat=L)
    t.linear("final_layer.linear", n, d, p * p * cfg.out_channels)
    t.linear("final_layer.adaLN_modulation", 1, d, 2 * d, kind="per_sample", component="conditioning")
    return _finish(t, cfg, name, latent=(c, 1, cfg.input_size, cfg.input_size), tokens=n, text_tokens=0,
                   d=d, block_act=_adaln_block_act(d, h, 1, False), depth=L, out=p * p * cfg.out_channels)


def _finish(t: _Tally, cfg, name: str, *, latent, tokens: int, text_tokens: int, d: int,
            block_act: tuple[int, int], depth: int, out: int, text_act_per_block: int = 0,
            extra_act: int = 0, notes: tuple[str, ...] = ()) -> ModelCount:
    """Assemble activations: blocks + embedding/final-layer I/O (input latent, 3 D + out per token)."""
    c, lt, lh, lw = latent
    io = c * lt * lh * lw + tokens * (3 * d + out) + extra_act
    none_b, sel_b = block_act
    act = Activations(
        none=io + depth * (tokens * none_b + text_act_per_block),
        selective=io + depth * (tokens * sel_b + text_act_per_block),
        full_stored=io + depth * tokens * d,
        full_working=tokens * none_b + text_act_per_block,
    )
    return ModelCount(name, cfg, latent, tokens, text_tokens, tuple(t.params), tuple(t.terms), act, notes)


# ------------------------------------------------------------------------------------------------
# U-ViT
# ------------------------------------------------------------------------------------------------


def count_uvit(cfg, *, name: str = "U-ViT") -> ModelCount:
    """Official U-ViT (baofff/U-ViT ``libs/uvit.py``): time/label tokens, learned pos_embed, long skips."""
    d, p, c = cfg.hidden_size, cfg.patch_size, cfg.in_channels
    side = cfg.input_size // p
    n_patch = side * side
    n = cfg.num_tokens  # patches + extras (time token, label token)
    h = int(d * cfg.mlp_ratio)
    L_half = cfg.depth // 2
    n_blocks = 2 * L_half + 1
    t = _Tally()
    t.param("patch_embed", c * p * p * d + d, "per_token")
    t.mac("patch_embed", "conv", n_patch * c * p * p * d)
    if cfg.mlp_time_embed:
        t.linear("time_embed.0", 1, d, 4 * d, kind="per_sample", component="conditioning")
        t.linear("time_embed.2", 1, 4 * d, d, kind="per_sample", component="conditioning")
    if cfg.num_classes > 0:
        t.param("label_emb", cfg.num_classes * d, "lookup")
    t.param("pos_embed", n * d, "positional")  # learned (zeros + trunc_normal init)
    t.param("blocks.norm1+norm2", 4 * d, "per_token", repeat=n_blocks)
    t.linear("blocks.attn.qkv", n, d, 3 * d, bias=cfg.qkv_bias, repeat=n_blocks)
    t.attention("blocks.attn.core", 1, n, n, d, repeat=n_blocks)
    t.linear("blocks.attn.proj", n, d, d, repeat=n_blocks)
    t.linear("blocks.mlp.fc1", n, d, h, repeat=n_blocks)
    t.linear("blocks.mlp.fc2", n, h, d, repeat=n_blocks)
    if cfg.skip:
        t.linear("out_blocks.skip_linear", n, 2 * d, d, repeat=L_half)
    t.param("norm", 2 * d, "per_token")
    t.linear("decoder_pred", n, d, p * p * c)  # applied to every token; extras are dropped afterwards
    if cfg.conv:
        t.param("final_layer", c * c * 9 + c, "per_token")
        t.mac("final_layer", "conv", cfg.input_size * cfg.input_size * c * c * 9)
    none_b = 6 * d + 2 * d + 2 * h
    sel_b = 5 * d + d + h
    skip_act = L_half * n * 2 * d if cfg.skip else 0
    return _finish(t, cfg, name, latent=(c, 1, cfg.input_size, cfg.input_size), tokens=n, text_tokens=0, d=d,
                   block_act=(none_b, sel_b), depth=n_blocks, out=p * p * c, extra_act=skip_act)


# ------------------------------------------------------------------------------------------------
# Video DiT / STDiT / Latte / PixArt / Wan ...: soraprep.estimate.flops_video
# ------------------------------------------------------------------------------------------------


def count_video_dit(cfg, *, name: str = "VideoDiT") -> ModelCount:
    """soraprep's ``VideoDiT`` in all its variants: see :mod:`soraprep.estimate.flops_video`."""
    from soraprep.estimate.flops_video import count_video_dit as _count

    return _count(cfg, name=name)


# ------------------------------------------------------------------------------------------------
# Dispatch: the config's own hook
# ------------------------------------------------------------------------------------------------


#: config_type -> counter(cfg, name) -> ModelCount. The estimator reads the models' configs, never the
#: reverse: a model family plugs in by registering its counter here (from its counter's own module).
COUNTERS: dict[str, Callable[..., ModelCount]] = {}


def register_counter(config_type: str) -> Callable[[Callable[..., ModelCount]], Callable[..., ModelCount]]:
    """``@register_counter("dit")`` on ``fn(cfg, name=None) -> ModelCount``; refuses a second counter."""

    def deco(fn: Callable[..., ModelCount]) -> Callable[..., ModelCount]:
        if config_type in COUNTERS and COUNTERS[config_type] is not fn:
            raise ValueError(f"a FLOP counter for config_type {config_type!r} is already registered")
        COUNTERS[config_type] = fn
        return fn

    return deco


def count_model(cfg, *, name: str | None = None) -> ModelCount:
    """Count any soraprep model config with the counter registered for its ``config_type``, so a new model
    family plugs in without an edit here."""
    from soraprep.estimate import flops_joint, flops_video, vae  # noqa: F401  (register their counters)

    kind = getattr(cfg, "config_type", None)
    if kind not in COUNTERS:
        raise TypeError(f"no FLOP counter for {type(cfg).__name__} (config_type {kind!r}): register one with "
                        f"soraprep.estimate.flops.register_counter({kind!r})")
    return COUNTERS[kind](cfg, name=name)


@register_counter("dit")
def _count_dit(cfg, name: str | None = None) -> ModelCount:
    return count_dit(cfg, name=name or cfg.family)


@register_counter("uvit")
def _count_uvit(cfg, name: str | None = None) -> ModelCount:
    return count_uvit(cfg, name=name or "U-ViT")
