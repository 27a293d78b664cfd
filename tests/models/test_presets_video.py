"""Published video presets: parameters of the built model (meta device) == analytic count == pinned, and the
difference to the published total, as documented in docs/models.md."""

import pytest

torch = pytest.importorskip("torch")

from soraprep.estimate.flops import count_model  # noqa: E402
from soraprep.models import MODELS, PRESETS  # noqa: E402
from soraprep.models.presets_video import PUBLISHED_PARAMS  # noqa: E402

# name -> (exact parameters of our build, published total or None, our / published - 1 rounded to 0.1 %)
PINNED = {
    "PixArt-alpha-XL/2": (610_856_096, 0.018),
    "Latte-XL/2": (673_799_072, None),
    "OpenSora-1.0-XL/2": (759_620_768, 0.049),
    "OpenSora-1.1-STDiT2-XL/2": (767_452_064, 0.096),
    "OpenSora-1.2-STDiT3-XL/2": (1_207_643_936, 0.098),
    "Wan2.1-1.3B": (1_418_996_800, 0.092),
    "Wan2.1-14B": (14_288_491_584, 0.021),
    "Step-Video-T2V-30B": (29_342_478_400, -0.022),
    "OpenSora-Plan-1.3": (2_771_981_600, 0.027),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_published_video_preset_params(name):
    with torch.device("meta"):
        model = MODELS[name]()
    built = sum(p.numel() for p in model.parameters())
    exact, rel = PINNED[name]
    assert built == count_model(PRESETS[name]).params_total == exact
    if rel is None:
        assert name not in PUBLISHED_PARAMS
    else:
        assert round(exact / PUBLISHED_PARAMS[name] - 1, 3) == rel


def test_presets_round_trip_their_config():
    from soraprep.models import config_from_dict

    for name in PINNED:
        assert config_from_dict(PRESETS[name].to_dict()) == PRESETS[name]


def test_stdit3_has_28_spatial_and_28_temporal_blocks_each_with_cross_attention():
    with torch.device("meta"):
        model = MODELS["OpenSora-1.2-STDiT3-XL/2"]()
    axes = [b.axis for b in model.blocks]
    assert axes.count("spatial") == axes.count("temporal") == 28 and axes[:2] == ["spatial", "temporal"]
    assert all(b.cross_attn is not None for b in model.blocks)
    assert "y_embedder.y_embedding" in dict(model.named_buffers())  # PixArt-style null caption: a buffer
