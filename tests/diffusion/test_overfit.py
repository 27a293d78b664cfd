"""A tiny DiT (DDPM objective) and a tiny SiT (interpolant objective) overfit a handful of latents, then
sample finite tensors of the right shape with every sampler."""

import pytest

torch = pytest.importorskip("torch")

from soraprep.diffusion.gaussian import create_diffusion  # noqa: E402
from soraprep.diffusion.transport import Sampler, Transport  # noqa: E402
from soraprep.models import MODELS  # noqa: E402

TINY = dict(input_size=8, hidden_size=64, depth=2, num_heads=4, num_classes=4, class_dropout_prob=0.1)


def _overfit(loss_fn, model, steps=120):
    model.eval()  # deterministic overfit: no label dropout (the model has no dropout layers otherwise)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    with torch.no_grad():
        first = loss_fn().item()
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return first, loss_fn().item()


def _data():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(4, 4, 8, 8, generator=gen), torch.arange(4), torch.randn(4, 4, 8, 8, generator=gen)


def test_tiny_dit_overfits_and_samples():
    torch.manual_seed(0)
    x, y, noise = _data()
    model = MODELS["DiT-S/2"](**TINY)
    diffusion = create_diffusion()  # 1000 steps, eps-prediction, learned sigma (MSE + VLB)
    t = torch.tensor([30, 250, 500, 900])
    first, last = _overfit(lambda: diffusion.training_losses(model, x, dict(y=y), t=t, noise=noise)["loss"].mean(),
                           model)
    assert last < first / 10, (first, last)
    sampler = create_diffusion("10")
    gen = torch.Generator().manual_seed(1)
    for sample in (sampler.p_sample_loop(model, (4, 4, 8, 8), model_kwargs=dict(y=y), generator=gen),
                   sampler.ddim_sample_loop(model, (4, 4, 8, 8), model_kwargs=dict(y=y), generator=gen)):
        assert sample.shape == (4, 4, 8, 8) and torch.isfinite(sample).all()
    # classifier-free guidance through forward_with_cfg
    y_cfg = torch.cat([y[:2], model.null_condition(2)])
    sample = sampler.ddim_sample_loop(model.forward_with_cfg, (4, 4, 8, 8), model_kwargs=dict(y=y_cfg, cfg_scale=2.0))
    assert torch.isfinite(sample).all()


def test_tiny_sit_overfits_and_samples():
    torch.manual_seed(0)
    x, y, noise = _data()
    model = MODELS["SiT-S/2"](**TINY)
    transport = Transport(path="linear", prediction="velocity")
    t = torch.tensor([0.1, 0.4, 0.7, 0.95])
    first, last = _overfit(lambda: transport.training_losses(model, x, dict(y=y), t=t, noise=noise)["loss"].mean(),
                           model)
    assert last < first / 10, (first, last)
    sampler = Sampler(transport)
    z = torch.randn(4, 4, 8, 8)
    for fn in (sampler.sample_ode(method="heun", num_steps=5), sampler.sample_ode(method="dopri5", rtol=1e-2),
               sampler.sample_sde(method="euler", num_steps=10)):
        sample = fn(z, model, y=y)
        assert sample.shape == (4, 4, 8, 8) and torch.isfinite(sample).all()
