"""Analytic counts against ground truth: the official DiT table and soraprep's own models, measured."""

from __future__ import annotations

from collections import defaultdict

import pytest
from flop_measure import measured_flops

from soraprep.estimate.flops import count_model
from soraprep.estimate.vae import count_vqvae, ldm_encoder_macs, vae_encode_cost, vqvae_encode_macs
from soraprep.models.config import PRESETS

# Parameters per top-level module of the official DiT, summed from the state-dict shapes in
# shared/reference/dit_official_state_dicts.json (facebookresearch/DiT models.py on the meta device).
OFFICIAL_MODULES = {
    ("DiT-XL/2", 32): {"pos_embed": 294912, "x_embedder": 19584, "t_embedder": 1624320, "y_embedder": 1153152,
                       "blocks": 669344256, "final_layer": 2693408},
    ("DiT-XL/2", 64): {"pos_embed": 1179648, "x_embedder": 19584, "t_embedder": 1624320, "y_embedder": 1153152,
                       "blocks": 669344256, "final_layer": 2693408},
    ("DiT-S/2", 32): {"pos_embed": 98304, "x_embedder": 6528, "t_embedder": 246528, "y_embedder": 384384,
                      "blocks": 31919616, "final_layer": 308000},
    ("DiT-B/4", 32): {"pos_embed": 49152, "x_embedder": 49920, "t_embedder": 787968, "y_embedder": 768768,
                      "blocks": 127540224, "final_layer": 1279616},
}

# (preset, latent side, params, forward GMACs) from shared/reference/README.md (fvcore on the official code)
DIT_TABLE = [
    ("DiT-XL/2", 32, 675_129_632, 118.69),
    ("DiT-XL/2", 64, 676_014_368, 524.81),
    ("DiT-B/4", 32, 130_475_648, 5.57),
    ("DiT-S/2", 32, 32_963_360, 6.07),
]


@pytest.mark.parametrize("name,side,params,gmacs", DIT_TABLE)
def test_dit_reference_table(name, side, params, gmacs):
    c = count_model(PRESETS[name].replace(input_size=side))
    assert c.params_total == params
    assert c.forward_macs / 1e9 == pytest.approx(gmacs, rel=0.01)
    assert c.forward_flops == 2 * c.forward_macs
    # the frozen sin-cos pos_embed counts in the total but is not trainable
    assert c.params_total - c.params_trainable == (side // PRESETS[name].patch_size) ** 2 * PRESETS[name].hidden_size


@pytest.mark.parametrize("name,side", sorted(OFFICIAL_MODULES))
def test_dit_params_per_module_match_official_state_dict(name, side):
    ours: dict[str, int] = defaultdict(int)
    for p in count_model(PRESETS[name].replace(input_size=side)).params:
        ours[p.name.split(".")[0]] += p.count
    assert dict(ours) == OFFICIAL_MODULES[(name, side)]


def test_6nd_overestimates_dit_by_about_1_46():
    c = count_model(PRESETS["DiT-XL/2"])
    assert c.naive_6nd_flops() / (6 * c.forward_macs) == pytest.approx(1.46, abs=0.01)
    kinds = c.params_by_kind()
    assert kinds["per_sample"] == pytest.approx(c.params_total / 3, rel=0.02)  # adaLN ~ a third of DiT-XL/2


def test_vqvae_default_params_match_videogpt():
    assert count_vqvae(PRESETS["VQVAE-videogpt"]).params_total == 21_141_619


def test_attention_scaling_full_vs_factorized():
    full = count_model(PRESETS["VideoDiT-XL/2"].replace(input_size=(16, 32, 32)))
    fact = count_model(PRESETS["STDiT-XL/2"].replace(input_size=(16, 32, 32)))
    n, d, depth, hw, t = 16 * 16 * 16, 1152, 28, 256, 16
    assert full.macs_by_component()["attention"] == depth * (2 * n * n * d + 2 * n * 120 * d)
    assert fact.macs_by_component()["attention"] == depth * (2 * t * hw * hw * d + 2 * hw * t * t * d
                                                              + 2 * n * 120 * d)
    # doubling the frames quadruples full attention but only doubles the rest (per-token) work
    full2 = count_model(PRESETS["VideoDiT-XL/2"].replace(input_size=(32, 32, 32)))
    a1, a2 = full.macs_by_component(), full2.macs_by_component()
    assert a2["linear"] == 2 * a1["linear"]
    assert a2["attention"] > 3.9 * a1["attention"]


def test_vae_costs():
    # SD VAE encoder: ~2.08 M MACs per pixel at 256 px (more than DiT-XL/2's whole forward per image)
    assert ldm_encoder_macs(256, 256) / 256**2 == pytest.approx(2.08e6, rel=0.01)
    sd = vae_encode_cost("sd", frames=16, height=256, width=256)
    assert sd.macs_per_clip == 16 * ldm_encoder_macs(256, 256)
    assert vae_encode_cost("none", frames=16, height=256, width=256).macs_per_clip == 0
    assert vae_encode_cost("sd", frames=2, height=8, width=8, macs_per_pixel=10).macs_per_clip == 1280
    vq = PRESETS["VQVAE-videogpt"]
    assert vae_encode_cost("VQVAE-videogpt", frames=16, height=64, width=64).macs_per_clip == \
        vqvae_encode_macs(vq, frames=16, height=64, width=64)
    with pytest.raises(ValueError, match="unknown VAE"):
        vae_encode_cost("nope", frames=1, height=8, width=8)


# ------------------------------------------------------------------------------------------------
# soraprep's own implementations: analytic == measured (FlopCounterMode + attention counted explicitly)
# ------------------------------------------------------------------------------------------------


def _cases():
    import torch

    def img(c=4, s=8):
        return torch.randn(1, c, s, s)

    def vid(t=4, s=8):
        return torch.randn(1, 4, t, s, s)

    tiny = dict(depth=2, hidden_size=64, num_heads=4)
    t3, cap = torch.tensor([3]), torch.randn(1, 7, 32)
    return [
        ("DiT", PRESETS["DiT-S/2"].replace(input_size=8, **tiny), (img(), t3, torch.tensor([1]))),
        ("DiT-text", PRESETS["SiT-S/2"].replace(input_size=8, text_dim=32, **tiny), (img(), t3, torch.randn(1, 32))),
        ("U-ViT", PRESETS["U-ViT-L/2"].replace(input_size=8, depth=4, hidden_size=64, num_heads=4, num_classes=11),
         (img(), t3, torch.tensor([1]))),
        ("U-ViT-uncond", PRESETS["U-ViT-H/2"].replace(input_size=8, depth=4, hidden_size=64, num_heads=4, num_classes=0,
                                                      mlp_time_embed=True), (img(), t3)),
        ("VideoDiT", PRESETS["VideoDiT-S/2"].replace(input_size=(4, 8, 8), text_dim=32, text_len=7, **tiny),
         (vid(), t3, cap)),
        ("STDiT", PRESETS["STDiT-S/2"].replace(input_size=(4, 8, 8), text_dim=32, text_len=7, **tiny),
         (vid(), t3, cap)),
        ("STDiT-class", PRESETS["STDiT-S/2"].replace(input_size=(4, 8, 8), patch_size=(2, 2, 2), conditioning="class",
                                                     num_classes=5, **tiny), (vid(), t3, torch.tensor([1]))),
        ("VQVAE", PRESETS["VQVAE-videogpt"].replace(n_hiddens=32, n_res_layers=1, embedding_dim=16, n_codes=64,
                                                    input_size=(8, 16, 16)), (torch.randn(1, 3, 8, 16, 16),)),
    ]


def test_analytic_matches_measured_for_soraprep_models():
    pytest.importorskip("torch")  # the [models] extra
    from soraprep.models import build_model

    for name, cfg, args in _cases():
        model = build_model(cfg).eval()
        c = count_model(cfg)
        assert c.params_total == sum(p.numel() for p in model.parameters()), name
        measured = measured_flops(model, *args)
        assert c.forward_flops == pytest.approx(measured, rel=0.01), name
