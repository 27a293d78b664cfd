"""Gaussian diffusion: schedules, respacing, oracle models, DDIM(eta=1, all steps) == DDPM."""

import math

import pytest

torch = pytest.importorskip("torch")

from soraprep.diffusion.gaussian import (  # noqa: E402
    GaussianDiffusion,
    create_diffusion,
    get_named_beta_schedule,
    respace,
    space_timesteps,
)


def test_schedules():
    lin = get_named_beta_schedule("linear", 1000)
    assert lin[0].item() == pytest.approx(1e-4) and lin[-1].item() == pytest.approx(0.02)
    cos = get_named_beta_schedule("cosine", 1000)
    ab = torch.cumprod(1 - cos, 0)

    def f(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    assert ab[499].item() == pytest.approx(f(500 / 1000) / f(0), rel=1e-9)
    assert cos.max().item() <= 0.999
    sd = get_named_beta_schedule("scaled_linear", 1000)
    assert sd[0].item() == pytest.approx(0.00085) and sd[-1].item() == pytest.approx(0.012)
    assert sd[500].item() == pytest.approx((0.00085**0.5 + (0.012**0.5 - 0.00085**0.5) * 500 / 999) ** 2)
    with pytest.raises(ValueError, match="schedule"):
        get_named_beta_schedule("sigmoid", 10)


def test_space_timesteps():
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    steps = space_timesteps(1000, "250")
    assert len(steps) == 250 and steps[0] == 0 and steps[-1] == 999
    assert len(space_timesteps(300, "10,15,20")) == 45
    with pytest.raises(ValueError):
        space_timesteps(10, "ddim7")


def test_respacing_keeps_marginals_and_original_timesteps():
    base = create_diffusion(learn_sigma=False)
    sub = create_diffusion("ddim10", learn_sigma=False)
    kept = space_timesteps(1000, "ddim10")
    assert torch.allclose(sub.alphas_cumprod, base.alphas_cumprod[kept], rtol=1e-12)
    seen = []

    def model(x, t):
        seen.extend(t.tolist())
        return torch.zeros_like(x)

    sub.ddim_sample_loop(model, (1, 2), dtype=torch.float64)
    assert seen == kept[::-1]  # the model is called with the original step indices


def _delta_oracle(diffusion, x0_star, prediction):
    """Exact model for data that is a single point x0*: returns eps, v or x0 for any x_t."""

    def model(x, t):
        t = t.long()  # (respacing would map t; here the map is the identity)
        sab = diffusion.sqrt_alphas_cumprod[t].reshape(-1, 1).to(x.dtype)
        s1ab = diffusion.sqrt_one_minus_alphas_cumprod[t].reshape(-1, 1).to(x.dtype)
        eps = (x - sab * x0_star) / s1ab
        return {"eps": eps, "v": sab * eps - s1ab * x0_star, "x0": x0_star.expand_as(x)}[prediction]

    return model


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_oracle_has_zero_loss_and_samplers_recover_the_data_point(prediction):
    diffusion = GaussianDiffusion(betas=get_named_beta_schedule("cosine", 50), prediction=prediction,
                                  learn_sigma=False)
    x0_star = torch.tensor([[0.3, -0.7, 0.5]], dtype=torch.float64)
    model = _delta_oracle(diffusion, x0_star, prediction)
    x = x0_star.repeat(8, 1)
    losses = diffusion.training_losses(model, x, {}, t=torch.arange(1, 49, 6))
    assert losses["loss"].abs().max().item() < 1e-12
    gen = torch.Generator().manual_seed(0)
    ddim = diffusion.ddim_sample_loop(model, (4, 3), generator=gen, dtype=torch.float64)
    ddpm = diffusion.p_sample_loop(model, (4, 3), generator=gen, dtype=torch.float64)
    assert torch.allclose(ddim, x0_star.expand(4, 3), atol=1e-9)
    assert torch.allclose(ddpm, x0_star.expand(4, 3), atol=1e-9)


class _Toy(torch.nn.Module):
    """A fixed nonlinear eps-model (N, C) -> (N, C)."""

    def forward(self, x, t):
        return torch.tanh(0.7 * x + 0.002 * t[:, None].to(x.dtype)) * 0.9


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddim_all_steps_eta1_reproduces_the_ddpm_posterior_mean_path(schedule):
    diffusion = GaussianDiffusion(betas=get_named_beta_schedule(schedule, 100), learn_sigma=False,
                                  variance="fixed_small")
    model, shape = _Toy(), (6, 5)
    ddpm = list(diffusion.p_sample_loop_progressive(model, shape, generator=torch.Generator().manual_seed(3),
                                                    dtype=torch.float64))
    ddim = list(diffusion.ddim_sample_loop_progressive(model, shape, eta=1.0,
                                                       generator=torch.Generator().manual_seed(3),
                                                       dtype=torch.float64))
    assert len(ddpm) == len(ddim) == 100
    for a, b in zip(ddpm, ddim, strict=True):
        assert torch.allclose(a["mean"], b["mean"], atol=1e-10, rtol=1e-9)  # DDIM mean == posterior mean
        assert torch.allclose(a["sample"], b["sample"], atol=1e-10, rtol=1e-9)
    # eta=0 is deterministic: the per-step noise stream does not matter once x_T is fixed
    x_t = torch.randn(shape, dtype=torch.float64)
    a = diffusion.ddim_sample_loop(model, shape, noise=x_t, generator=torch.Generator().manual_seed(1))
    b = diffusion.ddim_sample_loop(model, shape, noise=x_t, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.allclose(a, ddpm[-1]["sample"])


def test_ddpm_step_mean_equals_q_posterior_mean_of_predicted_x0():
    diffusion = create_diffusion(learn_sigma=False)
    x, t = torch.randn(4, 3, dtype=torch.float64), torch.tensor([1, 10, 500, 999])
    out = diffusion.p_mean_variance(_Toy(), x, t)
    mean, var, _ = diffusion.q_posterior_mean_variance(out["pred_xstart"], x, t)
    assert torch.allclose(out["mean"], mean) and torch.allclose(out["variance"], var)


def test_learned_sigma_hybrid_loss():
    diffusion = create_diffusion()  # learned sigma, DiT defaults
    calls = []

    def model(x, t):
        calls.append(1)
        return torch.cat([torch.zeros_like(x), torch.full_like(x, 0.3)], dim=1)

    x = torch.rand(5, 2, 4, 4) * 2 - 1
    terms = diffusion.training_losses(model, x, {}, t=torch.tensor([0, 1, 10, 500, 999]))
    assert len(calls) == 1  # the VLB reuses the model output
    assert terms["loss"].shape == (5,) and bool((terms["vb"] >= 0).all())
    assert torch.allclose(terms["loss"], terms["mse"] + terms["vb"])
    with pytest.raises(ValueError, match="output channels"):
        diffusion.training_losses(lambda x, t: x, x, {})


def test_respace_of_respaced_diffusion_composes():
    base = create_diffusion(learn_sigma=False, diffusion_steps=100)
    once = respace(base, range(0, 100, 2))
    twice = respace(once, range(0, 50, 5))
    assert twice.timestep_map.tolist() == list(range(0, 100, 10))
    assert torch.allclose(twice.alphas_cumprod, base.alphas_cumprod[::10])
