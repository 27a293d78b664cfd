"""Analytic parameters, MACs and activations of :class:`~soraprep.models.config.VideoDiTConfig` models.

Covers soraprep's ``VideoDiT`` in every variant its config expresses (the torch model is
:mod:`soraprep.models.video_dit`; tests check both agree exactly): full, factorized (spatial + temporal in
one block, Open-Sora 1.0/1.1) or alternating (Latte, Open-Sora 1.2 STDiT3) attention; adaLN-Zero per block
or PixArt-alpha adaLN-single; modulation per sample, per frame or per token; caption cross-attention with
one or two text encoders; GELU or SwiGLU MLPs; q/k RMSNorm, RoPE and micro-conditions (no MACs).

Per-frame / per-token adaLN: the timestep embedding and the modulation projections run once per frame
(T' times) or once per token (L times) instead of once per sample, so their MACs scale with that count and
their parameters are of kind ``per_frame`` / ``per_token``. Conventions: :mod:`soraprep.estimate.flops`.
"""

from __future__ import annotations

from soraprep.estimate.flops import Activations, ModelCount, _Tally, register_counter


def _block_axes(cfg) -> list[str]:
    if cfg.attention == "alternating":
        return ["spatial" if i % 2 == 0 else "temporal" for i in range(cfg.depth)]
    return [cfg.attention] * cfg.depth


@register_counter("video_dit")
def _count(cfg, name: str | None = None) -> ModelCount:
    return count_video_dit(cfg, name=name or "VideoDiT")


def count_video_dit(cfg, *, name: str = "VideoDiT") -> ModelCount:
    """soraprep's ``VideoDiT`` for any ``VideoDiTConfig`` (see the module docstring)."""
    from soraprep.models.config import MICRO_CONDITIONS

    d, c = cfg.hidden_size, cfg.in_channels
    pt, ph, pw = cfg.patch_size
    gt, gh, gw = cfg.grid_size
    n, hw = gt * gh * gw, gh * gw
    h = cfg.mlp_hidden_size
    text = cfg.conditioning == "text"
    s = cfg.text_len + cfg.text2_len if text else 0
    single = cfg.modulation == "single"
    # how many conditioning vectors a sample has: the timestep MLP and modulation run this many times
    m, cond_kind = {"sample": (1, "per_sample"), "frame": (gt, "per_frame"), "token": (n, "per_token")}[cfg.adaln]
    bias = cfg.block_bias
    t = _Tally()

    # ---- embedders ----------------------------------------------------------------------------
    t.param("x_embedder", c * pt * ph * pw * d + d, "per_token")
    t.mac("x_embedder", "conv", n * c * pt * ph * pw * d)
    if cfg.pos_embed == "learned":
        t.param("pos_embed", (gt + gh + gw) * d, "positional")
    t.linear("t_embedder.mlp.0", m, 256, d, kind=cond_kind, component="conditioning")
    t.linear("t_embedder.mlp.2", m, d, d, kind=cond_kind, component="conditioning")
    for cond in cfg.micro_conditions:
        scalars, div = MICRO_CONDITIONS[cond]
        w = d // div
        t.linear(f"{cond}_embedder.mlp.0", scalars, 256, w, kind="per_sample", component="conditioning")
        t.linear(f"{cond}_embedder.mlp.2", scalars, w, w, kind="per_sample", component="conditioning")
    if text:
        if cfg.null_caption == "param":
            t.param("y_embedder.y_embedding", cfg.text_len * cfg.text_dim, "lookup")  # the null caption
        t.linear("y_embedder.y_proj.fc1", cfg.text_len, cfg.text_dim, d, kind="text", component="conditioning")
        t.linear("y_embedder.y_proj.fc2", cfg.text_len, d, d, kind="text", component="conditioning")
        if cfg.text2_dim:
            t.linear("y2_embedder", cfg.text2_len, cfg.text2_dim, d, kind="text", component="conditioning")
    elif cfg.conditioning == "class":
        t.param("y_embedder", (cfg.num_classes + int(cfg.caption_dropout_prob > 0)) * d, "lookup")
    if single:  # adaLN-single: one projection of each conditioning vector, shared by all blocks
        t.linear("t_block", m, d, 6 * d, kind=cond_kind, component="conditioning")
        if cfg.attention == "factorized" and cfg.temporal_modulation:
            t.linear("t_block_temp", m, d, 3 * d, kind=cond_kind, component="conditioning")

    # ---- blocks: group identical blocks so each layer is one term ---------------------------------
    axes = _block_axes(cfg)
    groups: dict[tuple[str, bool, bool], int] = {}
    for i, axis in enumerate(axes):
        cross = text and (axis != "temporal" or cfg.temporal_cross)
        sparse = cfg.skiparse > 1 and cfg.skiparse_dense <= i < cfg.depth - cfg.skiparse_dense
        groups[(axis, cross, sparse)] = groups.get((axis, cross, sparse), 0) + 1
    qk_params = {"none": 0, "rms_head": 2 * (d // cfg.num_heads), "rms_full": 2 * d}
    block_acts: list[tuple[int, int, int, int]] = []  # (count, none per token, selective per token, text)
    for (axis, cross, sparse), k in groups.items():
        pre = "blocks" if len(groups) == 1 else \
            f"blocks[{axis}{'' if cross or not text else ',no-cross'}{',skiparse' if sparse else ''}]"
        temp_mod = axis == "factorized" and cfg.temporal_modulation
        attn_names = [("attn", "spatial" if axis == "factorized" else axis)]
        if axis == "factorized":
            attn_names.append(("attn_temp", "temporal"))
        n_norm = 2 + int(temp_mod)
        if cfg.norm_affine:
            t.param(f"{pre}.norms", n_norm * 2 * d, "per_token", repeat=k)
        for mod_name, ax in attn_names:
            t.linear(f"{pre}.{mod_name}.qkv", n, d, 3 * d, bias=bias, repeat=k)
            t.param(f"{pre}.{mod_name}.qk_norm", qk_params[cfg.qk_norm], "per_token", repeat=k)
            if ax == "spatial":  # gt sequences of hw tokens
                t.attention(f"{pre}.{mod_name}.core(spatial)", gt, hw, hw, d, repeat=k)
            elif ax == "temporal":  # hw sequences of gt tokens
                t.attention(f"{pre}.{mod_name}.core(temporal)", hw, gt, gt, d, repeat=k)
            elif sparse:  # Skiparse: the padded sequence split into `skiparse` groups attending within
                g = cfg.skiparse
                lg = -(-n // g**2) * g  # ceil(L / g^2) * g^2 / g tokens per group
                t.attention(f"{pre}.{mod_name}.core(skiparse)", g, lg, lg, d, repeat=k)
            else:
                t.attention(f"{pre}.{mod_name}.core", 1, n, n, d, repeat=k)
            t.linear(f"{pre}.{mod_name}.proj", n, d, d, bias=bias, repeat=k)
        if cross:
            if cfg.cross_norm:
                t.param(f"{pre}.norm_cross", 2 * d, "per_token", repeat=k)
            t.linear(f"{pre}.cross_attn.q", n, d, d, bias=bias, repeat=k)
            t.linear(f"{pre}.cross_attn.kv", s, d, 2 * d, bias=bias, kind="text", component="conditioning", repeat=k)
            if cfg.cross_qk_norm:
                t.param(f"{pre}.cross_attn.qk_norm", qk_params[cfg.qk_norm], "per_token", repeat=k)
            t.attention(f"{pre}.cross_attn.core", 1, n, s, d, repeat=k)
            t.linear(f"{pre}.cross_attn.proj", n, d, d, bias=bias, repeat=k)
        if cfg.mlp == "swiglu":
            t.linear(f"{pre}.mlp.w1", n, d, h, bias=bias, repeat=k)
            t.linear(f"{pre}.mlp.w3", n, d, h, bias=bias, repeat=k)
            t.linear(f"{pre}.mlp.w2", n, h, d, bias=bias, repeat=k)
        else:
            t.linear(f"{pre}.mlp.fc1", n, d, h, bias=bias, repeat=k)
            t.linear(f"{pre}.mlp.fc2", n, h, d, bias=bias, repeat=k)
        n_mod = 9 if temp_mod else 6
        if single:  # a learned table added to the shared projection: read, not multiplied
            t.param(f"{pre}.scale_shift_table", n_mod * d, cond_kind, repeat=k)
        else:
            t.linear(f"{pre}.adaLN_modulation", m, d, n_mod * d, kind=cond_kind, component="conditioning", repeat=k)
        block_acts.append((k, *_block_act(cfg, axis, cross, n_mod, m, n), 2 * s * d if cross else 0))

    # ---- final layer --------------------------------------------------------------------------
    out = pt * ph * pw * cfg.out_channels
    t.linear("final_layer.linear", n, d, out)
    if single:
        t.param("final_layer.scale_shift_table", 2 * d, "per_sample")
    else:
        t.linear("final_layer.adaLN_modulation", m, d, 2 * d, kind=cond_kind, component="conditioning")

    notes = []
    if cfg.adaln != "sample":
        notes.append(f"adaLN per {cfg.adaln}: timestep MLP and modulation run {m} times per sample")
    text_in = cfg.text_len * (cfg.text_dim + 3 * d) + cfg.text2_len * (cfg.text2_dim + d) if text else 0
    io = c * gt * pt * gh * ph * gw * pw + n * (3 * d + out) + text_in
    none = io + sum(k * (n * a + txt) for k, a, _, txt in block_acts)
    sel = io + sum(k * (n * b + txt) for k, _, b, txt in block_acts)
    act = Activations(none=none, selective=sel, full_stored=io + cfg.depth * n * d,
                      full_working=max(n * a + txt for _, a, _, txt in block_acts))
    return ModelCount(name, cfg, (c, *cfg.input_size), n, s, tuple(t.params), tuple(t.terms), act, tuple(notes))


def _block_act(cfg, axis: str, cross: bool, n_mod: int, m: int, n: int) -> tuple[int, int]:
    """Activation elements per token kept by one block (``none``, ``selective``); see flops.py's table.

    On top of the adaLN-Zero block table: q/k norm inputs (2 D per attention, ``none`` only), the cross-
    attention norm input (D), SwiGLU's second branch (w3 out, product: 4 H instead of 2 H; selective 3 H),
    and per-token modulation vectors (n_mod x D per token, per frame: amortised over the frame's tokens).
    """
    d, h = cfg.hidden_size, cfg.mlp_hidden_size
    n_attn = 2 if axis == "factorized" else 1
    plain_temporal = axis == "factorized" and not cfg.temporal_modulation  # no norm, no modulation: 6 D
    none = n_attn * 8 * d - (2 * d if plain_temporal else 0)
    sel = n_attn * 6 * d - (d if plain_temporal else 0)
    if cfg.qk_norm != "none":
        none += n_attn * 2 * d
    if cfg.mlp == "swiglu":
        none, sel = none + 4 * d + 4 * h, sel + 2 * d + 3 * h
    else:
        none, sel = none + 4 * d + 2 * h, sel + 2 * d + h
    if cross:
        none, sel = none + 3 * d + (d if cfg.cross_norm else 0), sel + 3 * d
    mod = n_mod * d * m // n if m > 1 else 0  # modulation vectors kept for backward, per token
    return none + mod, sel + mod
