"""Analytic counts for joint text-video attention models: MM-DiT and CogVideoX.

Same conventions as :mod:`soraprep.estimate.flops` (per sample, 1 MAC = one multiply-accumulate,
FLOPs = 2 x MACs, only matmul-like work). What differs from cross-attention DiTs: the caption tokens are
**tokens of the sequence**. They pass through every block, so

- their projections and MLPs are ``linear`` work (parameter kind ``text`` for MM-DiT's text-stream
  weights, which act on caption tokens only; ``per_token`` for weights that act on every token of the
  joint sequence: MM-DiT single-stream blocks and all CogVideoX blocks),
- attention is over the joint sequence ``S = N_visual + L_text``: ``2 * S^2 * D`` MACs per block,
- ``ModelCount.tokens`` is that joint length ``S`` (what sequence parallelism shards), and
  ``text_tokens = L_text``; the padded caption length is counted (flash-attention varlen kernels that
  skip padding, as HunyuanVideo's, do less).

Model files they are checked against (params exact, MACs against FlopCounterMode with explicit
attention): :mod:`soraprep.models.mmdit`, :mod:`soraprep.models.cogvideox`.

Activation elements per token (flash attention, no ``S x S`` scores), in units of the width ``D``:

- double-stream block, per stream: adaLN attention ``8 D`` (norm in/out, modulated, q, k, v, attn out,
  proj out) + ``2 D`` with qk-norm (normed q, k) + adaLN MLP ``4 D + 2 H`` | selective ``6 D + 2 D + H``
- single-stream block: norm in/out, modulated, linear1 out ``3 D + H``, attn out, activation ``H``,
  linear2 in (= attn out + activation, a concat: ``D + H``), linear2 out -> ``8 D + 3 H`` (+ ``2 D``
  qk-norm) | selective: modulated, linear1 out, linear2 in, out -> ``6 D + 2 H``
- CogVideoX block (all S tokens): like the double-stream stream, same numbers.
"""

from __future__ import annotations

from soraprep.estimate.flops import Activations, ModelCount, _Tally, register_counter

# ------------------------------------------------------------------------------------------------
# MM-DiT
# ------------------------------------------------------------------------------------------------


def _adaln_attn_mlp_act(d: int, h: int, qk_norm: bool) -> tuple[int, int]:
    """(none, selective) elements per token of one adaLN attention + adaLN MLP stream."""
    none = 8 * d + (2 * d if qk_norm else 0) + 4 * d + 2 * h
    selective = 6 * d + 2 * d + h
    return none, selective


def _single_act(d: int, h: int, qk_norm: bool) -> tuple[int, int]:
    none = 3 * d + (3 * d + h) + d + h + (d + h) + d + (2 * d if qk_norm else 0)
    selective = d + (3 * d + h) + (d + h) + d
    return none, selective


def count_mmdit(cfg, *, name: str = "MMDiT") -> ModelCount:
    """Double-stream + single-stream MM-DiT (Flux / HunyuanVideo / Open-Sora 2.0 / SD3 layout)."""
    d, c = cfg.hidden_size, cfg.in_channels
    pt, ph, pw = cfg.patch_size
    patch = pt * ph * pw
    n = cfg.num_tokens
    s = cfg.text_len
    seq = n + s
    h = int(d * cfg.mlp_ratio)
    hd = d // cfg.num_heads
    L2, L1 = cfg.depth_double, cfg.depth_single
    qkn = 2 * hd if cfg.qk_norm else 0  # q_norm + k_norm scales (RMSNorm over head_dim)
    t = _Tally()
    # ---- embeddings ---------------------------------------------------------------------------
    if cfg.pos_embed == "learned":
        t.param("pos_embed", n * d, "positional")
    t.param("img_in", c * patch * d + d, "per_token")
    t.mac("img_in", "conv", n * c * patch * d)
    if cfg.cond_embed:  # Open-Sora 2.0 i2v: the conditioning latent + a mask per patch position
        t.linear("cond_in", n, c * patch + ph * pw, d)
    t.linear("time_in.in_layer", 1, 256, d, kind="per_sample", component="conditioning")
    t.linear("time_in.out_layer", 1, d, d, kind="per_sample", component="conditioning")
    if cfg.pooled_dim > 0:
        t.linear("vector_in.in_layer", 1, cfg.pooled_dim, d, kind="per_sample", component="conditioning")
        t.linear("vector_in.out_layer", 1, d, d, kind="per_sample", component="conditioning")
    if cfg.guidance_embed:
        t.linear("guidance_in.in_layer", 1, 256, d, kind="per_sample", component="conditioning")
        t.linear("guidance_in.out_layer", 1, d, d, kind="per_sample", component="conditioning")
    t.linear("txt_in.input_embedder", s, cfg.text_dim, d, kind="text", component="conditioning")
    R = cfg.text_refiner_depth
    if R:  # HunyuanVideo SingleTokenRefiner: its own t / pooled-context embedders, R pre-norm blocks
        t.linear("txt_in.t_embedder.0", 1, 256, d, kind="per_sample", component="conditioning")
        t.linear("txt_in.t_embedder.2", 1, d, d, kind="per_sample", component="conditioning")
        t.linear("txt_in.c_embedder.linear_1", 1, cfg.text_dim, d, kind="per_sample", component="conditioning")
        t.linear("txt_in.c_embedder.linear_2", 1, d, d, kind="per_sample", component="conditioning")
        t.param("txt_in.refiner.norm1+norm2", 4 * d, "text", repeat=R)  # affine LayerNorms
        t.linear("txt_in.refiner.qkv", s, d, 3 * d, kind="text", component="conditioning", repeat=R)
        t.mac("txt_in.refiner.attn.core", "conditioning", 2 * s * s * d, repeat=R)
        t.linear("txt_in.refiner.proj", s, d, d, kind="text", component="conditioning", repeat=R)
        t.linear("txt_in.refiner.mlp.fc1", s, d, h, kind="text", component="conditioning", repeat=R)
        t.linear("txt_in.refiner.mlp.fc2", s, h, d, kind="text", component="conditioning", repeat=R)
        t.linear("txt_in.refiner.adaLN_modulation", 1, d, 2 * d, kind="per_sample", component="conditioning",
                 repeat=R)
    # ---- double-stream blocks: visual stream (n tokens), text stream (s tokens), joint attention --------
    t.linear("double.img_mod", 1, d, 6 * d, kind="per_sample", component="conditioning", repeat=L2)
    t.linear("double.img_attn.qkv", n, d, 3 * d, bias=cfg.qkv_bias, repeat=L2)
    t.param("double.img_attn.qk_norm", qkn, "per_token", repeat=L2)
    t.linear("double.img_attn.proj", n, d, d, repeat=L2)
    t.linear("double.img_mlp.fc1", n, d, h, repeat=L2)
    t.linear("double.img_mlp.fc2", n, h, d, repeat=L2)
    full, last = (L2 - 1, 1) if cfg.context_pre_only_last else (L2, 0)
    t.linear("double.txt_mod", 1, d, 6 * d, kind="per_sample", component="conditioning", repeat=full)
    t.linear("double.txt_attn.qkv", s, d, 3 * d, bias=cfg.qkv_bias, kind="text", repeat=L2)
    t.param("double.txt_attn.qk_norm", qkn, "text", repeat=L2)
    t.linear("double.txt_attn.proj", s, d, d, kind="text", repeat=full)
    t.linear("double.txt_mlp.fc1", s, d, h, kind="text", repeat=full)
    t.linear("double.txt_mlp.fc2", s, h, d, kind="text", repeat=full)
    if last:  # SD3's last block: text only contributes k, v; its modulation is shift + scale
        t.linear("double[-1].txt_mod", 1, d, 2 * d, kind="per_sample", component="conditioning")
    t.attention("double.attn.core", 1, seq, seq, d, repeat=L2)
    # ---- single-stream blocks over [text; visual] ------------------------------------------------
    t.linear("single.modulation", 1, d, 3 * d, kind="per_sample", component="conditioning", repeat=L1)
    t.linear("single.linear1", seq, d, 3 * d + h, repeat=L1)
    t.param("single.qk_norm", qkn, "per_token", repeat=L1)
    t.attention("single.attn.core", 1, seq, seq, d, repeat=L1)
    t.linear("single.linear2", seq, d + h, d, repeat=L1)
    # ---- final layer (visual tokens only) ---------------------------------------------------------
    out = patch * cfg.out_channels
    t.linear("final_layer.linear", n, d, out)
    t.linear("final_layer.adaLN_modulation", 1, d, 2 * d, kind="per_sample", component="conditioning")

    # ---- activations ----------------------------------------------------------------------------
    dn, ds = _adaln_attn_mlp_act(d, h, cfg.qk_norm)
    sn, ss = _single_act(d, h, cfg.qk_norm)
    refiner_none = R * s * (6 * d + 2 * d + 2 * h)  # pre-norm attention + MLP (U-ViT numbers)
    refiner_sel = R * s * (5 * d + d + h)
    io = c * cfg.input_size[0] * cfg.input_size[1] * cfg.input_size[2] + n * (3 * d + out) \
        + s * (cfg.text_dim + d)
    none = io + refiner_none + L2 * seq * dn + L1 * seq * sn
    sel = io + refiner_sel + L2 * seq * ds + L1 * seq * ss
    act = Activations(none=none, selective=sel, full_stored=io + (L2 + L1) * seq * d + refiner_none,
                      full_working=seq * max(dn if L2 else 0, sn if L1 else 0))
    notes = (f"joint sequence {seq} = {n} visual + {s} text tokens; attention over all of it",)
    return ModelCount(name, cfg, (c, *cfg.input_size), seq, s, tuple(t.params), tuple(t.terms), act, notes)


# ------------------------------------------------------------------------------------------------
# CogVideoX
# ------------------------------------------------------------------------------------------------


def count_cogvideox(cfg, *, name: str = "CogVideoX") -> ModelCount:
    """diffusers ``CogVideoXTransformer3DModel`` (1.0): expert adaLN, shared attention/FFN on [text; video]."""
    d, c = cfg.hidden_size, cfg.in_channels
    pt, ph, pw = cfg.patch_size
    patch = pt * ph * pw
    n = cfg.num_tokens
    s = cfg.text_len
    seq = n + s
    h = int(d * cfg.mlp_ratio)
    e = cfg.time_embed_dim
    hd = cfg.attention_head_dim
    L = cfg.num_layers
    t = _Tally()
    if cfg.pos_embed == "learned":
        t.param("pos_embedding", n * d, "positional")
    t.param("patch_embed.proj", c * patch * d + d, "per_token")
    t.mac("patch_embed.proj", "conv", n * c * patch * d)
    t.linear("patch_embed.text_proj", s, cfg.text_embed_dim, d, kind="text", component="conditioning")
    t.linear("time_embedding.linear_1", 1, d, e, kind="per_sample", component="conditioning")  # sinusoid of width D
    t.linear("time_embedding.linear_2", 1, e, e, kind="per_sample", component="conditioning")
    # expert adaLN: one Linear(E, 6D) per norm gives (shift, scale, gate) for video AND for text tokens
    t.linear("blocks.norm1.linear", 1, e, 6 * d, kind="per_sample", component="conditioning", repeat=L)
    t.linear("blocks.norm2.linear", 1, e, 6 * d, kind="per_sample", component="conditioning", repeat=L)
    t.param("blocks.norm1+norm2.norm", 4 * d, "per_token", repeat=L)  # affine LayerNorms
    t.linear("blocks.attn1.to_qkv", seq, d, 3 * d, bias=cfg.attention_bias, repeat=L)
    t.param("blocks.attn1.norm_q+norm_k", 4 * hd if cfg.qk_norm else 0, "per_token", repeat=L)
    t.attention("blocks.attn1.core", 1, seq, seq, d, repeat=L)
    t.linear("blocks.attn1.to_out", seq, d, d, repeat=L)
    t.linear("blocks.ff.proj", seq, d, h, repeat=L)
    t.linear("blocks.ff.out", seq, h, d, repeat=L)
    t.param("norm_final", 2 * d, "per_token")
    t.linear("norm_out.linear", 1, e, 2 * d, kind="per_sample", component="conditioning")
    t.param("norm_out.norm", 2 * d, "per_token")
    out = patch * cfg.out_channels
    t.linear("proj_out", n, d, out)

    bn, bs = _adaln_attn_mlp_act(d, h, cfg.qk_norm)
    io = c * cfg.input_size[0] * cfg.input_size[1] * cfg.input_size[2] + n * (3 * d + out) \
        + s * (cfg.text_embed_dim + d)
    act = Activations(none=io + L * seq * bn, selective=io + L * seq * bs, full_stored=io + L * seq * d,
                      full_working=seq * bn)
    notes = (f"joint sequence {seq} = {n} visual + {s} text tokens; attention over all of it",)
    return ModelCount(name, cfg, (c, *cfg.input_size), seq, s, tuple(t.params), tuple(t.terms), act, notes)


def count_joint(cfg, *, name: str | None = None) -> ModelCount:
    """Dispatch for the configs of :mod:`soraprep.models.config_joint`."""
    if cfg.config_type == "mmdit":
        return count_mmdit(cfg, name=name or "MMDiT")
    if cfg.config_type == "cogvideox":
        return count_cogvideox(cfg, name=name or "CogVideoX")
    raise TypeError(f"no joint-attention counter for {type(cfg).__name__}")


@register_counter("mmdit")
def _count_mmdit(cfg, name: str | None = None) -> ModelCount:
    return count_mmdit(cfg, name=name or "MMDiT")


@register_counter("cogvideox")
def _count_cogvideox(cfg, name: str | None = None) -> ModelCount:
    return count_cogvideox(cfg, name=name or "CogVideoX")
