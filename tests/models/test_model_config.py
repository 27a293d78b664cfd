"""Configs: torch-free import, round trip, fail-loud validation, registry kwargs."""

import json
import subprocess
import sys

import pytest

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
    assert (uvit.embed_dim, uvit.depth, uvit.num_heads, uvit.qkv_bias, uvit.num_classes, uvit.conv) == (
        1152, 28, 16, False, 1001, False)
    assert PRESETS["VQVAE-videogpt"].latent_size == (4, 16, 16)
    assert PRESETS["STDiT-XL/2"].num_tokens == 16 * 16 * 16


def test_unknown_kwargs_raise_type_error_before_building():
    with pytest.raises(TypeError, match="unexpected keyword"):
        MODELS["DiT-XL/2"](not_a_field=1)
    with pytest.raises(TypeError, match="unexpected keyword"):
        MODELS["U-ViT-H/2"](hidden_size=3)  # U-ViT calls it embed_dim
    with pytest.raises(TypeError, match="no field"):
        DiTConfig.from_dict({"config_type": "dit", "bogus": 1})
    with pytest.raises(KeyError, match="available"):
        get_config("DiT-XXL/2")


@pytest.mark.parametrize("bad", [
    lambda: DiTConfig(input_size=33, patch_size=2),
    lambda: DiTConfig(hidden_size=100, num_heads=16),
    lambda: UViTConfig(img_size=31),
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
