"""Configs: torch-free import, round trip, fail-loud validation, registry kwargs."""

import json
import subprocess
import sys

import pytest

from soraprep.estimate.flops import count_model
from soraprep.models import MODELS, PRESETS, config_from_dict, get_config
from soraprep.models.config import DiTConfig, UViTConfig, VideoDiTConfig, VQVAEConfig


def test_config_import_does_not_import_torch():
    code = "import sys, soraprep.models, soraprep.models.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_json(name):
    cfg = PRESETS[name]
    d = json.loads(json.dumps(cfg.to_dict()))
    assert config_from_dict(d) == cfg
    assert type(cfg).from_dict(d) == cfg


def test_registry_has_the_issue_names_and_matches_presets():
    for name in ("DiT-XL/2", "SiT-XL/2", "U-ViT-H/2", "U-ViT-L/2", "VQVAE-videogpt", "VideoDiT-XL/2", "STDiT-XL/2"):
        assert name in MODELS
    assert set(MODELS) == set(PRESETS)
    assert len([n for n in MODELS if n.startswith("DiT-")]) == 12  # S/B/L/XL x 2/4/8


def test_released_256px_defaults():
    dit = PRESETS["DiT-XL/2"]
    assert (dit.input_size, dit.num_classes, dit.learn_sigma, dit.hidden_size, dit.depth) == (32, 1000, True, 1152, 28)
    uvit = PRESETS["U-ViT-H/2"]
    assert (uvit.hidden_size, uvit.depth, uvit.num_heads, uvit.qkv_bias, uvit.num_classes, uvit.conv) == (
        1152, 28, 16, False, 1001, False)
    assert PRESETS["VQVAE-videogpt"].latent_size == (4, 16, 16)
    assert PRESETS["STDiT-XL/2"].num_tokens == 16 * 16 * 16


def test_unknown_kwargs_raise_type_error_before_building():
    with pytest.raises(TypeError, match="unexpected keyword"):
        MODELS["DiT-XL/2"](not_a_field=1)
    with pytest.raises(TypeError, match="unexpected keyword"):
        MODELS["U-ViT-H/2"](not_a_field=3)
    with pytest.raises(TypeError, match="no field"):
        DiTConfig.from_dict({"config_type": "dit", "bogus": 1})
    with pytest.raises(KeyError, match="available"):
        get_config("DiT-XXL/2")


@pytest.mark.parametrize("bad", [
    lambda: DiTConfig(input_size=33, patch_size=2),
    lambda: DiTConfig(hidden_size=100, num_heads=16),
    lambda: UViTConfig(input_size=31),
    lambda: UViTConfig().replace(img_size=31),  # the old name, still validated
    lambda: VideoDiTConfig(input_size=(5, 32, 32), patch_size=(2, 2, 2)),
    lambda: VideoDiTConfig(attention="axial"),
    lambda: VideoDiTConfig(conditioning="class", num_classes=0),
    lambda: VQVAEConfig(downsample=(3, 4, 4)),
])
def test_invalid_configs_fail_loud(bad):
    with pytest.raises(ValueError):
        bad()


def test_wrong_config_type_is_rejected():
    with pytest.raises(ValueError, match="config_type"):
        DiTConfig.from_dict(UViTConfig().to_dict())
    with pytest.raises(ValueError, match="unknown config_type"):
        config_from_dict({"config_type": "gan"})


# ---- configs own model behaviour (issue 13, item 2) ------------------------------------------------------


def test_old_uvit_config_dict_still_loads_and_builds_the_same_state_dict():
    """A U-ViT config saved before the field rename (img_size / in_chans / embed_dim) loads, equals the
    new-style config, and builds a model with the same state-dict keys and shapes (checkpoints still load)."""
    torch = pytest.importorskip("torch")
    from soraprep.models import build_model

    old = {"config_type": "uvit", "img_size": 8, "patch_size": 2, "in_chans": 4, "embed_dim": 32, "depth": 2,
           "num_heads": 2, "mlp_ratio": 4.0, "qkv_bias": False, "qk_scale": None, "mlp_time_embed": False,
           "num_classes": 11, "use_checkpoint": False, "conv": True, "skip": True}
    cfg = config_from_dict(old)
    assert cfg == UViTConfig(input_size=8, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=11)
    assert (cfg.img_size, cfg.in_chans, cfg.embed_dim) == (8, 4, 32)  # read-only old names
    assert "img_size" not in cfg.to_dict() and cfg.to_dict()["input_size"] == 8
    torch.manual_seed(0)
    a = build_model(cfg).state_dict()
    assert {k: tuple(v.shape) for k, v in a.items()}["patch_embed.proj.weight"] == (32, 4, 2, 2)
    b = build_model(config_from_dict(cfg.to_dict()))
    b.load_state_dict(a)  # strict: same keys, same shapes
    with pytest.raises(TypeError, match="old name"):
        UViTConfig.from_dict({**old, "input_size": 16})


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_owns_its_hooks(name):
    from soraprep.models.config import CONDITIONINGS, CONFIG_TYPES, LAYOUTS

    cfg = PRESETS[name]
    assert CONFIG_TYPES[cfg.config_type] is type(cfg)
    assert cfg.latent_layout in LAYOUTS and cfg.conditioning in CONDITIONINGS
    assert cfg.text_input in ("tokens", "pooled")
    assert callable(cfg.build)
    assert count_model(cfg).config == cfg  # the estimator has a counter registered for every config_type
    if cfg.latent_layout != "pixels":
        pt, p = (1, cfg.patch_size) if cfg.latent_layout == "image" else cfg.patch_size[:2]
        small = cfg.with_latent(pt, 4 * p, 4 * p)
        assert type(small) is type(cfg) and count_model(small).tokens >= 16


def test_family_behaviour_is_read_off_the_config():
    dit, sit, uvit = PRESETS["DiT-S/2"], PRESETS["SiT-S/2"], PRESETS["U-ViT-H/2"]
    assert (dit.conditioning, dit.label_classes, dit.learns_sigma, dit.null_condition) == ("class", 1000, True, True)
    assert sit.learns_sigma is False  # SiT's forward drops the sigma half
    assert dit.replace(text_dim=8).conditioning == "text" and dit.text_input == "pooled"
    assert (uvit.conditioning, uvit.label_classes, uvit.null_condition) == ("class", 1000, True)
    assert uvit.replace(num_classes=0).conditioning == "none"
    vid = PRESETS["STDiT-S/2"]
    assert (vid.latent_layout, vid.conditioning, vid.text_input) == ("video", "text", "tokens")
    assert vid.replace(caption_dropout_prob=0).null_condition is False
    assert PRESETS["VQVAE-videogpt"].latent_layout == "pixels"
    assert PRESETS["CogVideoX-2B"].latent_layout == "video" and PRESETS["Flux.1-dev"].conditioning == "text"
    assert uvit.with_latent(1, 16, 16, channels=3) == uvit.replace(input_size=16, in_channels=3)


def test_registries_refuse_duplicates_and_models_is_a_live_view():
    from soraprep.models import register_config, register_preset
    from soraprep.models.config import CONFIG_TYPES

    class Other(DiTConfig):
        config_type = "dit"

    with pytest.raises(ValueError, match="already registered"):
        register_config(Other)
    with pytest.raises(ValueError, match="already registered"):
        register_preset("DiT-S/2", PRESETS["DiT-S/2"])
    assert register_config(DiTConfig) is DiTConfig and CONFIG_TYPES["dit"] is DiTConfig  # idempotent
    name = "DiT-test-live/2"
    assert name not in MODELS
    register_preset(name, PRESETS["DiT-S/2"].replace(depth=1))
    try:
        assert name in MODELS and set(MODELS) == set(PRESETS)
        assert MODELS[name].__doc__.startswith(f"Build {name}")
    finally:
        del PRESETS[name]
    assert name not in MODELS
