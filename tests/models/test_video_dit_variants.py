"""VideoDiT variants behave as their names say: zero init, per-frame / per-token adaLN, alternating blocks'
receptive fields, relative RoPE, micro-conditions and a second caption encoder."""

import pytest

torch = pytest.importorskip("torch")

from soraprep.models import MODELS  # noqa: E402
from soraprep.models.layers import Attention, attention, skiparse_order  # noqa: E402
from soraprep.models.video_dit import rope_angles  # noqa: E402

TINY = dict(hidden_size=48, depth=2, num_heads=4, text_dim=20, text_len=6)
VARIANTS = {
    "latte": dict(attention="alternating", conditioning="class", num_classes=4),
    "stdit3": dict(attention="alternating", modulation="single", qk_norm="rms_head", pos_embed="sincos2d_rope_t",
                   micro_conditions=("fps",), null_caption="buffer"),
    "opensora-1.0": dict(attention="factorized", modulation="single", temporal_modulation=False),
    "opensora-1.1": dict(attention="factorized", modulation="single", qk_norm="rms_head",
                         pos_embed="sincos2d_rope_t", micro_conditions=("csize", "ar", "fl", "fps")),
    "wan": dict(modulation="single", qk_norm="rms_full", cross_qk_norm=True, cross_norm=True, pos_embed="rope",
                null_caption="none", caption_dropout_prob=0.0),
    "step-video": dict(modulation="single", qk_norm="rms_head", cross_qk_norm=True, norm_affine=True,
                       block_bias=False, pos_embed="rope", text_norm=True, text2_dim=12, text2_len=3),
    "swiglu-learned": dict(mlp="swiglu", pos_embed="learned", input_size=(4, 8, 8)),
}


def _perturb(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def _kwargs(model, n=2):
    cfg = model.config
    gen = torch.Generator().manual_seed(1)
    if cfg.conditioning == "class":
        return dict(y=torch.tensor([0, 3][:n]))
    kw = dict(y=torch.randn(n, 5, cfg.text_dim, generator=gen), mask=torch.ones(n, 5, dtype=torch.bool))
    if cfg.text2_dim:
        kw["y2"] = torch.randn(n, cfg.text2_len, cfg.text2_dim, generator=gen)
    return kw


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_start_at_zero_and_learn_away_from_it(variant):
    model = MODELS["VideoDiT-S/2"](**{**TINY, **VARIANTS[variant]}).eval()
    x, t = torch.randn(2, 4, 2, 4, 6), torch.tensor([5, 900])
    out = model(x, t, **_kwargs(model))
    assert out.shape == (2, model.out_channels, 2, 4, 6)
    assert torch.count_nonzero(out) == 0  # zeroed gates (adaLN-Zero / zero tables), cross-attn proj, final layer
    assert _perturb(model)(x, t, **_kwargs(model)).abs().sum() > 0


@pytest.mark.parametrize("adaln", ["frame", "token"])
@pytest.mark.parametrize("modulation", ["block", "single"])
def test_per_frame_and_per_token_adaln_equal_per_sample_when_all_timesteps_agree(adaln, modulation):
    kw = dict(**TINY, attention="factorized", modulation=modulation)
    sample = _perturb(MODELS["VideoDiT-S/2"](**kw)).eval()
    other = MODELS["VideoDiT-S/2"](**kw, adaln=adaln).eval()
    other.load_state_dict(sample.state_dict())  # the same weights: only how often they are applied differs
    x, y = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 5, 20)
    grid = (3, 2, 2)
    t = torch.tensor([7.0, 300.0])
    t_other = t.reshape(2, *([1] * (1 if adaln == "frame" else 3))).expand(2, *(grid[:1] if adaln == "frame" else grid))
    assert torch.allclose(sample(x, t, y=y), other(x, t_other.contiguous(), y=y), atol=1e-5)
    with pytest.raises(ValueError, match="timesteps of shape"):
        other(x, torch.zeros(2, 5), y=y)


def test_per_frame_timesteps_act_on_their_own_frame_only():
    # no temporal mixing (temporal blocks switched off): a frame's output depends on its own timestep alone
    model = _perturb(MODELS["VideoDiT-S/2"](**TINY, attention="alternating", adaln="frame")).eval()
    with torch.no_grad():
        model.blocks[1].adaLN_modulation[-1].weight.zero_()
        model.blocks[1].adaLN_modulation[-1].bias.zero_()  # block 1 (temporal) gates = 0: identity
    x, y = torch.randn(1, 4, 3, 4, 4), torch.randn(1, 5, 20)
    a = model(x, torch.tensor([[10.0, 20.0, 30.0]]), y=y)
    b = model(x, torch.tensor([[10.0, 500.0, 30.0]]), y=y)
    changed = (a - b).abs().sum(dim=(0, 1, 3, 4)) > 0  # per latent frame
    assert changed.tolist() == [False, True, False]


def _grad_support(zero_block):
    model = _perturb(MODELS["VideoDiT-S/2"](**{**TINY, "depth": 2}, attention="alternating", conditioning="none"))
    blk = model.blocks[zero_block]
    torch.nn.init.zeros_(blk.attn.proj.weight)
    torch.nn.init.zeros_(blk.attn.proj.bias)
    x = torch.randn(1, 4, 3, 4, 4, requires_grad=True)
    model.eval()(x, torch.tensor([10]))[0, :, 0, 0:2, 0:2].sum().backward()
    return x.grad.abs().sum(dim=(0, 1)) > 0  # (T, H, W)


def test_alternating_blocks_attend_within_a_frame_then_along_time():
    spatial = _grad_support(zero_block=1)  # block 0 (spatial) alone: all of frame 0, nothing else
    assert bool(spatial[0].all()) and not bool(spatial[1:].any())
    temporal = _grad_support(zero_block=0)  # block 1 (temporal) alone: patch (0, 0) in every frame
    assert bool(temporal[:, :2, :2].all())
    temporal[:, :2, :2] = False
    assert not bool(temporal.any())


@pytest.mark.parametrize("pos_embed", ["rope", "sincos2d_rope_t"])
def test_rope_makes_attention_depend_on_relative_positions(pos_embed):
    attn = _perturb(Attention(48, 4, qk_norm="rms_head")).eval()
    x = torch.randn(1, 2 * 3 * 4, 48)
    angles = rope_angles(pos_embed, 12, (3, 3, 4))  # one frame more than the tokens span
    first, last = angles[: 2 * 12], angles[12:]  # the same tokens placed at frames 0-1 or frames 1-2
    out0 = attn(x, rope=(first.cos()[None, None], first.sin()[None, None]))
    out1 = attn(x, rope=(last.cos()[None, None], last.sin()[None, None]))
    assert torch.allclose(out0, out1, atol=1e-5)  # a shift in time does not matter ...
    plain = attn(x)
    assert not torch.allclose(out0, plain, atol=1e-3)  # ... but positions do


def test_micro_conditions_and_second_captions_reach_the_output():
    model = _perturb(MODELS["VideoDiT-S/2"](**TINY, **VARIANTS["opensora-1.1"])).eval()
    x, t, y = torch.randn(1, 4, 2, 4, 4), torch.tensor([3]), torch.randn(1, 5, 20)
    micro = torch.tensor([[240.0, 320.0, 0.75, 16.0, 24.0]])  # csize (h, w), ar, fl, fps
    assert torch.equal(model(x, t, y=y), model(x, t, y=y, micro=torch.zeros(1, 5)))  # default: zeros
    assert not torch.allclose(model(x, t, y=y), model(x, t, y=y, micro=micro))
    step = _perturb(MODELS["VideoDiT-S/2"](**TINY, **VARIANTS["step-video"])).eval()
    y2 = torch.randn(1, 3, 12)
    assert not torch.allclose(step(x, t, y=y, y2=y2), step(x, t, y=y, y2=y2 + 1))
    with pytest.raises(ValueError, match="y2"):
        step(x, t, y=y)


@pytest.mark.parametrize("group_skip", [False, True])
def test_skiparse_attends_within_its_groups_only(group_skip):
    attn = _perturb(Attention(48, 4)).eval()
    x = torch.randn(1, 36, 48)  # padded to 48 = 3 x 4^2, 4 groups of 12
    out = attn(x, skiparse=(4, group_skip))
    order = skiparse_order(36, 4, group_skip).reshape(4, 12)
    q, k, v = (z.reshape(1, 36, 4, 12).transpose(1, 2) for z in attn.qkv(x).chunk(3, dim=-1))
    for members in order:
        idx = members[members < 36]  # the group's real tokens: padding is never attended to
        ref = attention(q[:, :, idx], k[:, :, idx], v[:, :, idx]).transpose(1, 2).reshape(1, -1, 48)
        assert torch.allclose(out[:, idx], attn.proj(ref), atol=1e-5)
    expected = [0, 4, 8] if not group_skip else [0, 1, 2, 3]  # first members of group 0
    assert order[0][: len(expected)].tolist() == expected
