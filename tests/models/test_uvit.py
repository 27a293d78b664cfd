"""U-ViT: tokens for time and label, long skips, conv head, checkpointing, official-layout round trip."""

import pytest

torch = pytest.importorskip("torch")

from soraprep.diffusion.gaussian import create_diffusion  # noqa: E402
from soraprep.models import MODELS  # noqa: E402
from soraprep.models.dit import load_official_checkpoint  # noqa: E402

TINY = dict(input_size=8, hidden_size=32, depth=4, num_heads=4, num_classes=11)


def test_forward_shapes_and_token_layout():
    model = MODELS["U-ViT-H/2"](**TINY).eval()
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([1, 999])
    assert model(x, t, torch.tensor([0, 10])).shape == (2, 4, 8, 8)
    assert model.pos_embed.shape == (1, 2 + 16, 32) and model.extras == 2
    unconditional = MODELS["U-ViT-H/2"](**{**TINY, "num_classes": 0}).eval()
    assert unconditional(x, t).shape == (2, 4, 8, 8) and unconditional.extras == 1
    conv = MODELS["U-ViT-L/2"](**TINY).eval()
    assert isinstance(conv.final_layer, torch.nn.Conv2d) and conv(x, t, torch.tensor([0, 1])).shape == (2, 4, 8, 8)


def test_long_skips_change_the_output_and_exist_only_in_output_blocks():
    torch.manual_seed(0)
    with_skip = MODELS["U-ViT-H/2"](**TINY).eval()
    assert all(b.skip_linear is not None for b in with_skip.out_blocks)
    assert all(b.skip_linear is None for b in [*with_skip.in_blocks, with_skip.mid_block])
    x, t, y = torch.randn(1, 4, 8, 8), torch.tensor([3]), torch.tensor([2])
    before = with_skip(x, t, y)
    with torch.no_grad():  # the skip half of the fusing layer matters
        with_skip.out_blocks[-1].skip_linear.weight[:, 32:] = 0
    assert not torch.allclose(before, with_skip(x, t, y))
    assert len(MODELS["U-ViT-H/2"](**TINY, skip=False).state_dict()) < len(with_skip.state_dict())


def test_mlp_time_embed_and_qk_scale_and_checkpointing():
    model = MODELS["U-ViT-H/2"](**TINY, mlp_time_embed=True, qkv_bias=True, qk_scale=0.1)
    assert "time_embed.0.weight" in model.state_dict() and "in_blocks.0.attn.qkv.bias" in model.state_dict()
    ckpt = MODELS["U-ViT-H/2"](**TINY, mlp_time_embed=True, qkv_bias=True, qk_scale=0.1, use_checkpoint=True)
    ckpt.load_state_dict(model.state_dict())
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 4]), torch.tensor([1, 2])
    model(x, t, y).square().sum().backward()
    ckpt(x, t, y).square().sum().backward()
    assert torch.allclose(model.pos_embed.grad, ckpt.pos_embed.grad, atol=1e-6)


def test_official_layout_round_trip_and_training_step(tmp_path):
    model = MODELS["U-ViT-H/2"](**TINY)
    torch.save(model.state_dict(), tmp_path / "nnet.pth")
    loaded = load_official_checkpoint(MODELS["U-ViT-H/2"](**TINY), tmp_path / "nnet.pth")
    x = torch.randn(2, 4, 8, 8)
    diffusion = create_diffusion(learn_sigma=False)  # U-ViT predicts noise only
    t, noise = torch.tensor([10, 700]), torch.randn_like(x)
    a = diffusion.training_losses(model, x, dict(y=torch.tensor([1, 2])), t=t, noise=noise)["loss"]
    b = diffusion.training_losses(loaded, x, dict(y=torch.tensor([1, 2])), t=t, noise=noise)["loss"]
    assert torch.equal(a, b)
    a.mean().backward()
    assert model.patch_embed.proj.weight.grad.abs().sum() > 0
