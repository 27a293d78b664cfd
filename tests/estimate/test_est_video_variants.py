"""VideoDiT variants (Latte alternating blocks, adaLN-single, per-frame/per-token adaLN, Open-Sora 1.x, Wan,
Step-Video, SwiGLU ...): analytic parameters == the built model's, analytic FLOPs == FlopCounterMode + attention."""

from __future__ import annotations

import pytest
from flop_measure import measured_flops

from soraprep.estimate.flops import count_model
from soraprep.models.config import PRESETS

TINY = dict(input_size=(4, 6, 8), hidden_size=48, depth=2, num_heads=4, text_dim=20, text_len=7)

VARIANTS = {
    "latte-class": dict(attention="alternating", conditioning="class", num_classes=5),
    "latte-t2v": dict(attention="alternating", depth=4, modulation="single", temporal_cross=False),
    "stdit3": dict(attention="alternating", modulation="single", qk_norm="rms_head", pos_embed="sincos2d_rope_t",
                   micro_conditions=("fps",), null_caption="buffer"),
    "opensora-1.0": dict(attention="factorized", modulation="single", temporal_modulation=False,
                         null_caption="buffer"),
    "opensora-1.1": dict(attention="factorized", modulation="single", qk_norm="rms_head",
                         pos_embed="sincos2d_rope_t", micro_conditions=("csize", "ar", "fl", "fps")),
    "pixart": dict(input_size=(1, 8, 8), modulation="single", null_caption="buffer"),
    "wan": dict(modulation="single", qk_norm="rms_full", cross_qk_norm=True, cross_norm=True, pos_embed="rope",
                null_caption="none", caption_dropout_prob=0.0, mlp_hidden=100, learn_sigma=False),
    "step-video": dict(modulation="single", qk_norm="rms_head", cross_qk_norm=True, norm_affine=True,
                       block_bias=False, pos_embed="rope", text_norm=True, text2_dim=12, text2_len=3,
                       patch_size=(1, 1, 1), learn_sigma=False),
    "swiglu-learned-pos": dict(mlp="swiglu", mlp_hidden=64, pos_embed="learned"),
    "opensora-plan-1.3": dict(depth=4, modulation="single", pos_embed="rope", null_caption="none",
                              caption_dropout_prob=0.0, skiparse=2, skiparse_dense=1, in_channels=8,
                              learn_sigma=False),
    "skiparse-padded": dict(input_size=(3, 6, 8), depth=3, skiparse=4),  # 36 tokens -> 48 in 4 groups
    "frame-adaln-factorized": dict(attention="factorized", adaln="frame"),
    "frame-adaln-single-stdit2": dict(attention="factorized", adaln="frame", modulation="single"),
    "token-adaln-single": dict(adaln="token", modulation="single", pos_embed="rope"),
    "token-adaln-alternating-class": dict(attention="alternating", adaln="token", conditioning="class", num_classes=3),
}


def _inputs(cfg):
    import torch

    gen = torch.Generator().manual_seed(0)
    n = 1
    x = torch.randn(n, cfg.in_channels, *cfg.input_size, generator=gen)
    grid = cfg.grid_size
    t = {"sample": torch.tensor([3.0]), "frame": torch.arange(grid[0]).float()[None] * 10,
         "token": torch.rand(n, *grid, generator=gen) * 900}[cfg.adaln]
    kw = {}
    if cfg.conditioning == "text":
        kw["y"] = torch.randn(n, cfg.text_len, cfg.text_dim, generator=gen)
        kw["mask"] = torch.ones(n, cfg.text_len, dtype=torch.bool)
        if cfg.text2_dim:
            kw["y2"] = torch.randn(n, cfg.text2_len, cfg.text2_dim, generator=gen)
    elif cfg.conditioning == "class":
        kw["y"] = torch.tensor([1])
    return (x, t), kw


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_analytic_matches_built_model(variant):
    pytest.importorskip("torch")
    from soraprep.models import build_model

    cfg = PRESETS["VideoDiT-S/2"].replace(**{**TINY, **VARIANTS[variant]})
    model = build_model(cfg).eval()
    c = count_model(cfg)
    assert c.params_total == sum(p.numel() for p in model.parameters())
    args, kw = _inputs(cfg)
    assert model(*args, **kw).shape == (1, cfg.out_channels, *cfg.input_size)
    assert c.forward_flops == measured_flops(model, *args, **kw)


def test_per_frame_and_per_token_adaln_scale_the_conditioning_work():
    base = PRESETS["VideoDiT-XL/2"]
    sample = count_model(base)
    frame, token = count_model(base.replace(adaln="frame")), count_model(base.replace(adaln="token"))
    t_frames, tokens, d = base.grid_size[0], base.num_tokens, base.hidden_size
    per_cond = 256 * d + d * d + 28 * 6 * d * d + 2 * d * d  # timestep MLP + 28 block modulations + final layer
    cs, cf, ct = (x.macs_by_component()["conditioning"] for x in (sample, frame, token))
    assert cf - cs == (t_frames - 1) * per_cond
    assert ct - cs == (tokens - 1) * per_cond
    assert sample.params_total == frame.params_total == token.params_total  # same weights, used more often
    kinds = frame.params_by_kind()
    assert kinds["per_frame"] == 256 * d + d + d * d + d + 28 * (6 * d * d + 6 * d) + 2 * d * d + 2 * d
    assert token.params_by_kind()["per_token"] == sample.params_by_kind()["per_token"] + kinds["per_frame"]
    assert frame.macs_by_component()["linear"] == sample.macs_by_component()["linear"]


def test_alternating_attention_cost_and_adaln_single_params():
    # Latte: 28 blocks = 14 spatial (over H'W' per frame) + 14 temporal (over T' per position), each with an MLP
    cfg = PRESETS["STDiT-XL/2"].replace(attention="alternating", conditioning="class", num_classes=101)
    c = count_model(cfg)
    t, hw, d = 16, 256, 1152
    assert c.macs_by_component()["attention"] == 14 * 2 * t * hw * hw * d + 14 * 2 * hw * t * t * d
    assert c.macs_by_component()["linear"] == 28 * t * hw * 12 * d * d + t * hw * d * 32  # + final layer (2x2x8)
    block = count_model(PRESETS["VideoDiT-XL/2"])
    single = count_model(PRESETS["VideoDiT-XL/2"].replace(modulation="single"))
    # adaLN-single: 28 projections D -> 6D (and the final layer's D -> 2D) become one shared D -> 6D plus
    # a (6, D) table per block (and a (2, D) one in the final layer)
    assert block.params_total - single.params_total == \
        27 * (6 * d * d + 6 * d) - 28 * 6 * d + (2 * d * d + 2 * d) - 2 * d


def test_rope_variants_need_a_suitable_head_dim():
    with pytest.raises(ValueError, match="RoPE"):
        PRESETS["VideoDiT-S/2"].replace(hidden_size=36, num_heads=4, pos_embed="rope")  # head_dim 9
    with pytest.raises(ValueError, match="alternating"):
        PRESETS["VideoDiT-S/2"].replace(attention="alternating", depth=3)


def test_estimate_cli_on_a_wan_preset():
    import json

    from typer.testing import CliRunner

    from soraprep.cli import app

    r = CliRunner().invoke(app, ["estimate", "--model", "Wan2.1-14B", "--frames", "81", "--height", "480",
                                 "--width", "832", "--vae-compression", "4,8,8", "--latent-channels", "16",
                                 "--clips", "1000", "--gpu", "h100", "--num-gpus", "8", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    n, dim, depth, text = 21 * 30 * 52, 5120, 40, 512  # 81 frames -> 21 latents; 480x832 / 8 / 2 -> 30 x 52
    assert d["tokens"] == n and d["params"] == 14_288_491_584
    assert d["forward_macs_by_component"]["attention"] == depth * (2 * n * n * dim + 2 * n * text * dim)
    ffn = 13824
    assert d["forward_macs_by_component"]["linear"] == depth * n * (6 * dim * dim + 2 * dim * ffn) + n * dim * 64
