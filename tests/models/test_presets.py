"""Exact parameter counts of every preset (built on the meta device) and official checkpoint layouts."""

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from soraprep.models import MODELS, PRESETS  # noqa: E402
from soraprep.models.dit import load_official_checkpoint  # noqa: E402

REFERENCE = Path(__file__).parents[1] / "data" / "reference" / "dit_official_state_dicts.json"  # see SOURCES.md there
# Official DiT counts (DiT README / paper, re-measured on facebookresearch/DiT models.py).
OFFICIAL_DIT = {("DiT-XL/2", 32): 675_129_632, ("DiT-XL/2", 64): 676_014_368,
                ("DiT-S/2", 32): 32_963_360, ("DiT-B/4", 32): 130_475_648}


def _meta(name, **kw):
    with torch.device("meta"):
        return MODELS[name](**kw)


def _count(model):
    return sum(p.numel() for p in model.parameters())


def dit_formula(d, depth, p, input_size=32, cin=4, classes=1000):
    """Closed form of the official DiT: pos_embed (frozen parameter) + embedders + blocks + final layer."""
    out = 2 * cin
    tokens = (input_size // p) ** 2
    block = (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d) + (6 * d * d + 6 * d)
    return (tokens * d + (d * cin * p * p + d) + (256 * d + d + d * d + d) + (classes + 1) * d
            + depth * block + (d * p * p * out + p * p * out + 2 * d * d + 2 * d))


def test_dit_formula_matches_the_official_counts():
    sizes = {"S": (384, 12), "B": (768, 12), "XL": (1152, 28)}
    for (name, inp), n in OFFICIAL_DIT.items():
        size, p = name[4:].split("/")
        assert dit_formula(*sizes[size], int(p), input_size=inp) == n


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if n[:4] in ("DiT-", "SiT-")))
def test_dit_and_sit_preset_counts(name):
    sizes = {"S": (384, 12), "B": (768, 12), "L": (1024, 24), "XL": (1152, 28)}
    size, p = name[4:].split("/")
    assert _count(_meta(name)) == dit_formula(*sizes[size], int(p))


@pytest.mark.parametrize("key", ["DiT-XL/2@256", "DiT-XL/2@512", "DiT-S/2@256", "DiT-B/4@256"])
def test_dit_state_dict_keys_and_shapes_equal_official(key):
    ref = json.loads(REFERENCE.read_text())[key]
    name, res = key.split("@")
    for family in ("DiT", "SiT"):  # SiT-XL-2-256x256.pt uses the same backbone
        model = _meta(family + name[3:], input_size=int(res) // 8)
        assert {k: list(v.shape) for k, v in model.state_dict().items()} == ref["state_dict"]
        assert _count(model) == ref["params"]


def test_official_layout_checkpoint_loads_strictly(tmp_path):
    """A file laid out exactly as the reference DiT-S/2 state dict loads with strict=True, weights_only."""
    ref = json.loads(REFERENCE.read_text())["DiT-S/2@256"]["state_dict"]
    gen = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(shape, generator=gen, dtype=torch.float16) for k, shape in ref.items()}
    torch.save(sd, tmp_path / "DiT-S-2-256x256.pt")
    model = load_official_checkpoint(MODELS["DiT-S/2"](), tmp_path / "DiT-S-2-256x256.pt")
    assert torch.equal(model.blocks[3].attn.qkv.weight, sd["blocks.3.attn.qkv.weight"].float())
    torch.save({"ema": sd, "opt": {}}, tmp_path / "train.pt")  # training checkpoints keep weights under "ema"
    load_official_checkpoint(MODELS["SiT-S/2"](), tmp_path / "train.pt")
    sd.pop("final_layer.linear.bias")
    torch.save(sd, tmp_path / "broken.pt")
    with pytest.raises(RuntimeError, match="final_layer.linear.bias"):
        load_official_checkpoint(MODELS["DiT-S/2"](), tmp_path / "broken.pt")


def test_uvit_paper_counts():
    assert _count(_meta("U-ViT-H/2")) == 500_832_016
    assert _count(_meta("U-ViT-L/2")) == 286_763_172


def test_uvit_huge_has_the_official_module_names():
    """Names and shapes of baofff/U-ViT libs/uvit.py for imagenet256_uvit_huge (conv=False, qkv_bias=False)."""
    sd = {k: tuple(v.shape) for k, v in _meta("U-ViT-H/2").state_dict().items()}
    # 29 blocks x 11 tensors + 14 skip_linear x 2 + pos, patch w/b, label, norm w/b, decoder w/b
    assert len(sd) == 29 * 11 + 14 * 2 + 8
    expected = {
        "pos_embed": (1, 258, 1152), "patch_embed.proj.weight": (1152, 4, 2, 2), "label_emb.weight": (1001, 1152),
        "in_blocks.0.norm1.weight": (1152,), "in_blocks.0.attn.qkv.weight": (3456, 1152),
        "in_blocks.13.mlp.fc1.weight": (4608, 1152), "mid_block.attn.proj.bias": (1152,),
        "out_blocks.13.skip_linear.weight": (1152, 2304), "out_blocks.0.mlp.fc2.bias": (1152,),
        "norm.weight": (1152,), "decoder_pred.weight": (16, 1152), "decoder_pred.bias": (16,),
    }
    for k, shape in expected.items():
        assert sd[k] == shape, k
    assert "in_blocks.0.attn.qkv.bias" not in sd and not any(k.startswith("final_layer") for k in sd)
    assert "out_blocks.0.skip_linear.weight" in sd and "in_blocks.0.skip_linear.weight" not in sd
    assert tuple(_meta("U-ViT-L/2").state_dict()["final_layer.weight"].shape) == (4, 4, 3, 3)


@pytest.mark.parametrize("name", ["VQVAE-videogpt", "VQVAE-videogpt-4x2x2", "VQVAE-videogpt-2x4x4"])
def test_vqvae_counts_parameters_only(name):
    model = _meta(name)
    assert _count(model) == 21_141_619  # VideoGPT default: 240 hidden, 4 res blocks; codebook is buffers
    buffers = dict(model.named_buffers())
    assert tuple(buffers["codebook.embeddings"].shape) == (2048, 256)
    assert tuple(buffers["codebook.z_avg"].shape) == (2048, 256) and tuple(buffers["codebook.N"].shape) == (2048,)


def video_formula(d, depth, factorized, cin=4, patch=(1, 2, 2), text_dim=4096, text_len=120):
    pt, ph, pw = patch
    block = (4 * d * d + 4 * d) * 2 + (8 * d * d + 5 * d) + 6 * d * d + 6 * d  # self, cross, mlp, adaLN
    if factorized:
        block += 4 * d * d + 4 * d + 3 * d * d + 3 * d  # temporal attention + its shift/scale/gate
    npatch = pt * ph * pw
    return ((d * cin * npatch + d) + (256 * d + d + d * d + d) + (text_dim * d + d + d * d + d)
            + text_len * text_dim + depth * block + (d * npatch * 2 * cin + npatch * 2 * cin + 2 * d * d + 2 * d))


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if "DiT-" in n and n[:3] in ("Vid", "STD")))
def test_video_dit_preset_counts(name):
    cfg = PRESETS[name]
    assert _count(_meta(name)) == video_formula(cfg.hidden_size, cfg.depth, cfg.attention == "factorized")
