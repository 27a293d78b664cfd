"""SiT transport: exact flows for Gaussian data, oracle losses, loss weighting identity, SDE statistics."""

import pytest

torch = pytest.importorskip("torch")

from soraprep.diffusion.transport import Sampler, Transport  # noqa: E402

M, S = 0.7, 0.4  # data distribution N(M, S^2) per element


def _gaussian_oracle(transport):
    """Exact noise / score / velocity for data N(M, S^2) under x_t = a x1 + s x0."""

    def model(x, t):
        a, s, da, ds = (c.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype) for c in transport.path.coefficients(t))
        var = a**2 * S**2 + s**2
        e_x0 = s * (x - a * M) / var
        e_x1 = M + a * S**2 * (x - a * M) / var
        return {"noise": e_x0, "score": -e_x0 / s, "velocity": da * e_x1 + ds * e_x0}[transport.prediction]

    return model


def _flow_map(transport, z, t):
    """The exact ODE transport of standard normal z to time t for Gaussian data: affine in z."""
    a, s, _, _ = transport.path.coefficients(torch.tensor([t], dtype=torch.float64))
    return a * M + torch.sqrt(a**2 * S**2 + s**2) * z


@pytest.mark.parametrize("path", ["linear", "gvp", "vp"])
@pytest.mark.parametrize("prediction", ["velocity", "noise", "score"])
@pytest.mark.parametrize("method,num_steps,tol", [("heun", 100, 1e-3), ("dopri5", 0, 1e-4), ("euler", 400, 1e-2)])
def test_ode_samplers_follow_the_exact_gaussian_flow(path, prediction, method, num_steps, tol):
    transport = Transport(path=path, prediction=prediction)
    sampler = Sampler(transport)
    fn = sampler.sample_ode(method=method, num_steps=num_steps or 50, atol=1e-8, rtol=1e-7)
    t0, t1 = transport.interval(train=False)
    z = torch.linspace(-2.5, 2.5, 11, dtype=torch.float64).reshape(11, 1)
    out = fn(_flow_map(transport, z, t0), _gaussian_oracle(transport))
    assert torch.allclose(out, _flow_map(transport, z, t1), atol=tol)
    if method == "dopri5":
        assert 0 < sampler.nfe < 2000


@pytest.mark.parametrize("path,form", [("linear", "sigma"), ("gvp", "constant"), ("vp", "SBDM"), ("linear", "linear")])
@pytest.mark.parametrize("method", ["euler", "heun"])
def test_sde_samplers_reach_the_data_distribution(path, form, method):
    transport = Transport(path=path, prediction="velocity")
    fn = Sampler(transport).sample_sde(method=method, num_steps=100, diffusion_form=form,
                                       generator=torch.Generator().manual_seed(0))
    t0, _ = transport.interval(train=False)
    z = torch.randn(20000, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = fn(_flow_map(transport, z, t0), _gaussian_oracle(transport))
    assert torch.isfinite(out).all()
    assert out.mean().item() == pytest.approx(M, abs=0.03)
    assert out.std().item() == pytest.approx(S, abs=0.03)


@pytest.mark.parametrize("path", ["linear", "gvp", "vp"])
@pytest.mark.parametrize("prediction", ["velocity", "noise", "score"])
def test_oracle_for_a_single_data_point_has_zero_loss(path, prediction):
    transport = Transport(path=path, prediction=prediction)
    x1 = torch.tensor([[0.5, -1.0, 0.25]], dtype=torch.float64).repeat(6, 1)

    def oracle(x, t):  # data is the single point x1[0]: E[x0 | x_t] = (x_t - a x1) / s
        a, s, da, ds = (c.reshape(-1, 1).to(x.dtype) for c in transport.path.coefficients(t))
        e_x0 = (x - a * x1) / s
        return {"noise": e_x0, "score": -e_x0 / s, "velocity": da * x1 + ds * e_x0}[prediction]

    t = torch.tensor([0.05, 0.2, 0.4, 0.6, 0.8, 0.95], dtype=torch.float64)
    loss = transport.training_losses(oracle, x1, {}, t=t)["loss"]
    assert loss.shape == (6,) and loss.abs().max().item() < 1e-12


def test_velocity_weighting_equals_the_velocity_loss_of_the_converted_model():
    noise_tr = Transport(path="gvp", prediction="noise", loss_weight="velocity")
    vel_tr = Transport(path="gvp", prediction="velocity")

    def noise_model(x, t):
        return torch.sin(x) * 0.5 + t[:, None]

    def velocity_model(x, t):  # the same model expressed as a velocity by the transport's own conversion
        return noise_tr.velocity(noise_model, x, t)

    x1 = torch.randn(8, 3, dtype=torch.float64)
    t = torch.linspace(0.1, 0.9, 8, dtype=torch.float64)
    noise = torch.randn(8, 3, dtype=torch.float64)
    a = noise_tr.training_losses(noise_model, x1, {}, t=t, noise=noise)["loss"]
    b = vel_tr.training_losses(velocity_model, x1, {}, t=t, noise=noise)["loss"]
    assert torch.allclose(a, b, rtol=1e-10)


def test_learned_sigma_channels_are_ignored_and_bad_options_fail_loud():
    transport = Transport()
    x = torch.randn(2, 4, 3, 3)
    out = transport.training_losses(lambda x, t: torch.cat([x, x * 100], dim=1), x, {})
    assert out["pred"].shape == x.shape
    for kw in (dict(path="ot"), dict(prediction="eps"), dict(loss_weight="snr")):
        with pytest.raises(ValueError):
            Transport(**kw)
    with pytest.raises(ValueError):
        Sampler(transport).sample_ode(method="rk4")


def test_default_eps_intervals_follow_sit():
    assert Transport().interval(train=True) == (0.0, 1.0)
    assert Transport(prediction="noise").interval(train=False) == (1e-3, 1 - 1e-3)
    assert Transport(path="vp").interval(train=True) == (1e-5, 1 - 1e-5)
