"""MM-DiT and CogVideoX reference builds: preset sizes on the meta device, zero-init, fused == explicit
attention, padded caption tokens ignored, gradients reach every parameter."""

import pytest

torch = pytest.importorskip("torch")

from soraprep.estimate.flops import count_model  # noqa: E402
from soraprep.models import MODELS, layers  # noqa: E402

TINY_MM = dict(hidden_size=64, num_heads=2, depth_double=2, depth_single=2, input_size=(2, 8, 8), text_len=5,
               text_dim=24, pooled_dim=12)
TINY_COG = dict(num_layers=2, num_attention_heads=2, attention_head_dim=32, input_size=(2, 8, 8), text_len=5,
                text_embed_dim=24)


def _perturb(model):
    """Fresh models output exactly zero (adaLN-Zero); give every parameter a value so outputs mean something."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def _mm(name="HunyuanVideo-13B", **kw):
    return MODELS[name](**{**TINY_MM, **kw})


def _mm_inputs(n=2, gen_seed=0):
    gen = torch.Generator().manual_seed(gen_seed)
    x = torch.randn(n, 16, 2, 8, 8, generator=gen)
    txt = torch.randn(n, 5, 24, generator=gen)
    kw = dict(pooled=torch.randn(n, 12, generator=gen), guidance=torch.full((n,), 4.0),
              txt_mask=torch.tensor([[True, True, True, False, False]] * n))
    return x, torch.tensor([3.0, 500.0][:n]), txt, kw


@pytest.mark.parametrize("name", ["HunyuanVideo-13B", "OpenSora-2.0-11B", "Flux.1-dev", "SD3-Medium",
                                  "CogVideoX-2B", "CogVideoX-5B"])
def test_full_size_presets_build_with_the_counted_parameters(name):
    with torch.device("meta"):
        model = MODELS[name]()
    assert sum(p.numel() for p in model.parameters()) == count_model(model.config).params_total


def test_fresh_models_output_zero():
    x, t, txt, kw = _mm_inputs()
    assert torch.count_nonzero(_mm()(x, t, txt, **kw)) == 0
    cog = MODELS["CogVideoX-5B"](**TINY_COG)
    assert torch.count_nonzero(cog(x, t, txt)) == 0


@pytest.mark.parametrize("name", ["HunyuanVideo-13B", "SD3-Medium", "CogVideoX-5B"])
def test_fused_and_explicit_attention_agree_and_padding_is_ignored(name):
    cog = name.startswith("CogVideoX")
    model = _perturb(MODELS[name](**(TINY_COG if cog else {**TINY_MM, **({"depth_single": 0} if "SD3" in name
                                                                         else {})}))).eval()
    x, t, txt, kw = _mm_inputs()
    if cog:
        kw = {"txt_mask": kw["txt_mask"]}
    with torch.no_grad():
        fused = model(x, t, txt, **kw)
        layers.FUSED_ATTENTION = False
        try:
            explicit = model(x, t, txt, **kw)
        finally:
            layers.FUSED_ATTENTION = True
        assert torch.allclose(fused, explicit, atol=1e-5)
        assert fused.abs().mean() > 1e-3
        # padded caption tokens (mask False) change nothing (HunyuanVideo's refiner mean is masked too);
        # real ones do
        txt2 = txt.clone()
        txt2[:, 3:] += 10.0
        assert torch.allclose(model(x, t, txt2, **kw), fused, atol=1e-5)
        txt2[:, 0] += 1.0
        assert not torch.allclose(model(x, t, txt2, **kw), fused, atol=1e-4)


def test_every_parameter_gets_a_gradient():
    for model, extra in ((_perturb(_mm(cond_embed=True)), True), (_perturb(MODELS["CogVideoX-2B"](**TINY_COG)), False)):
        x, t, txt, kw = _mm_inputs()
        if extra:
            kw["cond"] = torch.randn(2, 32, 16 * 4 + 4)
        else:
            kw = {}
        model(x, t, txt, **kw).square().mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert missing == []


def test_missing_conditions_fail_loud():
    x, t, txt, kw = _mm_inputs()
    model = _mm()
    with pytest.raises(ValueError, match="guidance"):
        model(x, t, txt, pooled=kw["pooled"])
    with pytest.raises(ValueError, match="pooled"):
        model(x, t, txt, guidance=kw["guidance"])
    with pytest.raises(ValueError, match="divisible"):
        model(x[..., :7], t, txt, **kw)
