"""DiT / SiT forward behaviour on tiny configs."""

import pytest

torch = pytest.importorskip("torch")

from soraprep.models import MODELS, build_model, config_from_dict  # noqa: E402

TINY = dict(input_size=8, hidden_size=32, depth=2, num_heads=4, num_classes=5)


def _perturb(model, seed=0):
    """Give the zero-initialised layers random weights so outputs depend on every input."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def test_fresh_dit_outputs_exactly_zero():
    model = MODELS["DiT-S/2"](**TINY)
    out = model(torch.randn(3, 4, 8, 8), torch.tensor([0, 10, 999]), torch.tensor([0, 4, 5]))
    assert out.shape == (3, 8, 8, 8)
    assert torch.count_nonzero(out) == 0
    for block in model.blocks:  # adaLN-Zero: modulation zeroed so every block starts as the identity
        assert torch.count_nonzero(block.adaLN_modulation[-1].weight) == 0


@pytest.mark.parametrize("p", [2, 4])
def test_image_shapes_and_sit_drops_sigma(p):
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([1, 500]), torch.tensor([1, 2])
    dit = _perturb(MODELS[f"DiT-S/{p}"](**TINY)).eval()
    assert dit(x, t, y).shape == (2, 8, 8, 8)
    assert MODELS[f"DiT-S/{p}"](**TINY, learn_sigma=False)(x, t, y).shape == (2, 4, 8, 8)
    sit = MODELS[f"SiT-S/{p}"](**TINY).eval()
    sit.load_state_dict(dit.state_dict())  # same backbone, same keys
    out = sit(x, torch.tensor([0.1, 0.9]), y)
    assert out.shape == (2, 4, 8, 8)
    assert torch.allclose(out, dit(x, torch.tensor([0.1, 0.9]), y)[:, :4])


def test_classifier_free_guidance_forward():
    model = _perturb(MODELS["DiT-S/2"](**TINY)).eval()
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([100, 100])
    y = torch.cat([torch.tensor([3]), model.null_condition(1)])
    x2 = torch.cat([x[:1], x[:1]])
    cond, uncond = model(x2, t, torch.tensor([3, 3])), model(x2, t, torch.tensor([5, 5]))
    out = model.forward_with_cfg(torch.cat([x[:1], x[1:]]), t, y, cfg_scale=4.0)
    assert out.shape == (2, 8, 8, 8)
    expect = uncond[0, :4] + 4.0 * (cond[0, :4] - uncond[0, :4])
    assert torch.allclose(out[0, :4], expect, atol=1e-5) and torch.allclose(out[1, :4], expect, atol=1e-5)
    assert torch.allclose(out[0, 4:], cond[0, 4:], atol=1e-6)  # learned sigma is not guided
    assert torch.allclose(model.forward_with_cfg(x2, t, y, cfg_scale=1.0)[0], cond[0], atol=1e-5)


def test_label_dropout_uses_the_null_row():
    model = _perturb(MODELS["DiT-S/2"](**TINY, class_dropout_prob=1.0)).train()
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([5, 6])
    dropped = model(x, t, torch.tensor([1, 2]))
    model.eval()
    assert torch.allclose(dropped, model(x, t, torch.tensor([5, 5])), atol=1e-6)
    assert not torch.allclose(dropped, model(x, t, torch.tensor([1, 2])), atol=1e-4)


def test_pooled_text_conditioning():
    model = _perturb(MODELS["DiT-S/2"](**TINY, text_dim=16)).eval()
    emb = torch.randn(2, 16)
    out = model(torch.randn(2, 4, 8, 8), torch.tensor([3, 4]), emb)
    assert out.shape == (2, 8, 8, 8)
    assert model.null_condition(2).shape == (2, 16)


def test_rebuild_from_checkpoint_config(tmp_path):
    model = _perturb(MODELS["DiT-B/4"](**TINY)).eval()
    torch.save({"config": model.config.to_dict(), "model": model.state_dict()}, tmp_path / "ckpt.pt")
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    rebuilt = build_model(config_from_dict(ckpt["config"])).eval()
    rebuilt.load_state_dict(ckpt["model"], strict=True)
    x, t, y = torch.randn(1, 4, 8, 8), torch.tensor([7]), torch.tensor([2])
    assert torch.equal(rebuilt(x, t, y), model(x, t, y))


def test_fused_and_naive_attention_agree():
    from soraprep.models import layers

    model = _perturb(MODELS["DiT-S/2"](**TINY)).eval()
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([7, 8]), torch.tensor([2, 3])
    fused = model(x, t, y)
    layers.FUSED_ATTENTION = False
    try:
        naive = model(x, t, y)
    finally:
        layers.FUSED_ATTENTION = True
    assert torch.allclose(fused, naive, atol=1e-5)
