"""Gaussian diffusion (DDPM): objective, DDPM and DDIM samplers, timestep respacing.

The model, the objective and the sampler stay apart: a :class:`GaussianDiffusion` holds only the noise
schedule; ``training_losses(model, x, model_kwargs)`` and the samplers take the model when called, so one
diffusion serves any backbone whose forward is ``model(x, t, **model_kwargs)``.

Supported: epsilon-, v- and x0-prediction; fixed (small / large) or learned variance (the model outputs
2C channels, the second half interpolating between log beta_t and log posterior variance, trained with the
hybrid MSE + VLB loss as in Improved DDPM / DiT); linear and cosine schedules; respacing ("250",
"ddim50", "10,15,20").

Example::

    from soraprep.diffusion.gaussian import create_diffusion
    train_diffusion = create_diffusion()                       # 1000 steps, linear, eps, learned sigma
    loss = train_diffusion.training_losses(model, x, dict(y=y))["loss"].mean()
    sampler = create_diffusion(timestep_respacing="250")
    samples = sampler.p_sample_loop(model, x.shape, model_kwargs=dict(y=y))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

Model = Callable[..., torch.Tensor]

# ------------------------------------------------------------------------------------------------
# Schedules and respacing
# ------------------------------------------------------------------------------------------------


def get_named_beta_schedule(name: str, num_timesteps: int) -> torch.Tensor:
    """Betas (float64, shape (T,)). ``linear``: DDPM's 1e-4..0.02 scaled to T steps; ``scaled_linear``:
    Stable Diffusion's (sqrt-spaced 0.00085..0.012, used by U-ViT's latent models); ``cosine``: Nichol &
    Dhariwal's alpha_bar(t) = cos^2((t/T + s) / (1 + s) * pi / 2), s = 0.008, betas clipped at 0.999."""
    if name == "linear":
        scale = 1000 / num_timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)
    if name == "scaled_linear":  # Stable Diffusion / U-ViT latent models: sqrt-linear from 0.00085 to 0.012
        return torch.linspace(0.00085**0.5, 0.012**0.5, num_timesteps, dtype=torch.float64) ** 2
    if name == "cosine":
        def alpha_bar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), 0.999)
                 for i in range(num_timesteps)]
        return torch.tensor(betas, dtype=torch.float64)
    raise ValueError(f"unknown noise schedule {name!r}; use 'linear', 'scaled_linear' or 'cosine'")


def space_timesteps(num_timesteps: int, section_counts: str | int | Sequence[int]) -> list[int]:
    """Timesteps kept when respacing. ``"ddimN"``: N evenly strided steps (DDIM); ``"250"`` or 250: 250 steps
    spread evenly; ``"10,15,20"``: the schedule split in 3 equal sections with 10, 15 and 20 steps."""
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            want = int(section_counts[4:])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == want:
                    return list(range(0, num_timesteps, stride))
            raise ValueError(f"cannot create exactly {want} DDIM steps from {num_timesteps}")
        section_counts = [int(x) for x in section_counts.split(",")]
    elif isinstance(section_counts, int):
        section_counts = [section_counts]
    size_per, extra = divmod(num_timesteps, len(section_counts))
    kept: list[int] = []
    start = 0
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        kept += [start + round(stride * j) for j in range(count)]
        start += size
    return sorted(set(kept))


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def _extract(arr: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """arr[t] (float64 table) as like.dtype, broadcast to like's shape (N, 1, 1, ...)."""
    out = arr.to(t.device)[t].to(like.dtype)
    return out.reshape(-1, *([1] * (like.ndim - 1)))


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, *, means, log_scales) -> torch.Tensor:
    """Log-likelihood of data in [-1, 1] discretised to 256 bins under N(means, e^(2 log_scales))."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _approx_std_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=list(range(1, x.ndim)))


# ------------------------------------------------------------------------------------------------
# Diffusion
# ------------------------------------------------------------------------------------------------


class GaussianDiffusion:
    """Discrete-time Gaussian diffusion with ``T = len(betas)`` steps.

    Args:
        betas: noise schedule (T,), e.g. from :func:`get_named_beta_schedule`.
        prediction: what the model's first C channels predict: ``"eps"`` | ``"v"`` | ``"x0"``.
        learn_sigma: model outputs 2C channels, the second C interpolating the log variance.
        variance: used when not learned: ``"fixed_small"`` (posterior variance) | ``"fixed_large"`` (beta).
        loss: ``"mse"`` | ``"rescaled_mse"`` (VLB term scaled by T/1000, Improved DDPM).
        timestep_map: model timestep for each step (respacing); default ``range(T)``.
    """

    def __init__(self, *, betas: torch.Tensor, prediction: str = "eps", learn_sigma: bool = True,
                 variance: str = "fixed_small", loss: str = "mse", timestep_map: Sequence[int] | None = None):
        if prediction not in ("eps", "v", "x0"):
            raise ValueError(f"prediction must be 'eps', 'v' or 'x0', got {prediction!r}")
        if variance not in ("fixed_small", "fixed_large"):
            raise ValueError(f"variance must be 'fixed_small' or 'fixed_large', got {variance!r}")
        if loss not in ("mse", "rescaled_mse"):
            raise ValueError(f"loss must be 'mse' or 'rescaled_mse', got {loss!r}")
        self.betas = torch.as_tensor(betas, dtype=torch.float64)
        if self.betas.ndim != 1 or not bool(((self.betas > 0) & (self.betas <= 1)).all()):
            raise ValueError("betas must be a 1-D schedule with 0 < beta <= 1")
        self.prediction, self.learn_sigma, self.variance, self.loss = prediction, learn_sigma, variance, loss
        self.num_timesteps = T = len(self.betas)
        self.timestep_map = torch.as_tensor(list(timestep_map) if timestep_map is not None else range(T))

        b = self.betas
        alphas = 1.0 - b
        self.alphas_cumprod = ac = torch.cumprod(alphas, dim=0)
        self.alphas_cumprod_prev = acp = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
        self.sqrt_alphas_cumprod = ac.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - ac).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / ac).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / ac - 1).sqrt()
        # q(x_{t-1} | x_t, x_0) = N(coef1 * x_0 + coef2 * x_t, posterior_variance)
        self.posterior_variance = b * (1.0 - acp) / (1.0 - ac)
        # log clipped: the variance is 0 at t = 0
        pv = self.posterior_variance
        self.posterior_log_variance_clipped = torch.log(torch.cat([pv[1:2], pv[1:]])) if T > 1 else torch.log(b)
        self.posterior_mean_coef1 = b * acp.sqrt() / (1.0 - ac)
        self.posterior_mean_coef2 = (1.0 - acp) * alphas.sqrt() / (1.0 - ac)

    # ---- forward process ------------------------------------------------------------------------

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0) = N(sqrt(ab_t) x_0, (1 - ab_t) I)."""
        noise = torch.randn_like(x_start) if noise is None else noise
        return (_extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
                + _extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise)

    def q_posterior_mean_variance(self, x_start, x_t, t):
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = _extract(self.posterior_mean_coef1, t, x_t) * x_start + _extract(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, _extract(self.posterior_variance, t, x_t), _extract(self.posterior_log_variance_clipped, t, x_t)

    def v_target(self, x_start, noise, t) -> torch.Tensor:
        """v = sqrt(ab) eps - sqrt(1 - ab) x_0 (Salimans & Ho, 2022)."""
        return _extract(self.sqrt_alphas_cumprod, t, x_start) * noise - _extract(
            self.sqrt_one_minus_alphas_cumprod, t, x_start) * x_start

    # ---- model output -> distributions ----------------------------------------------------------

    def _call(self, model: Model, x, t, model_kwargs):
        return model(x, self.timestep_map.to(t.device)[t], **(model_kwargs or {}))

    def p_mean_variance(self, model: Model, x, t, *, model_kwargs=None, clip_denoised: bool = False,
                        model_output: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """p(x_{t-1} | x_t): mean, variance, log_variance, and the model's x_0 and eps estimates."""
        out = self._call(model, x, t, model_kwargs) if model_output is None else model_output
        c = x.shape[1]
        if self.learn_sigma:
            if out.shape[1] != 2 * c:
                raise ValueError(f"learn_sigma=True needs {2 * c} output channels, model gave {out.shape[1]}")
            out, var_values = out[:, :c], out[:, c:]
            min_log = _extract(self.posterior_log_variance_clipped, t, x)
            max_log = _extract(torch.log(self.betas), t, x)
            frac = (var_values + 1) / 2  # model output in [-1, 1] -> [0, 1]
            log_variance = frac * max_log + (1 - frac) * min_log
            variance = torch.exp(log_variance)
        else:
            out = out[:, :c]  # a learned-sigma model can be sampled with a fixed variance
            if self.variance == "fixed_small":
                variance, log_variance = (_extract(self.posterior_variance, t, x),
                                          _extract(self.posterior_log_variance_clipped, t, x))
            else:  # fixed_large: beta_t, with the posterior variance at t = 0 (as Improved DDPM)
                large = torch.cat([self.posterior_variance[1:2], self.betas[1:]])
                variance, log_variance = _extract(large, t, x), _extract(torch.log(large), t, x)
        sab, s1ab = _extract(self.sqrt_alphas_cumprod, t, x), _extract(self.sqrt_one_minus_alphas_cumprod, t, x)
        if self.prediction == "eps":
            pred_xstart = (x - s1ab * out) / sab
        elif self.prediction == "v":
            pred_xstart = sab * x - s1ab * out
        else:
            pred_xstart = out
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        eps = (x - sab * pred_xstart) / s1ab
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {"mean": mean, "variance": variance, "log_variance": log_variance,
                "pred_xstart": pred_xstart, "eps": eps}

    # ---- objective ------------------------------------------------------------------------------

    def _vb_terms_bpd(self, out: dict, x_start, x_t, t) -> torch.Tensor:
        """VLB term L_{t-1} in bits per dim (KL for t > 0, decoder NLL at t = 0)."""
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x_start, x_t, t)
        kl = _mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x_start, means=out["mean"], log_scales=0.5 * out["log_variance"])
        nll = _mean_flat(nll) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    def training_losses(self, model: Model, x_start: torch.Tensor, model_kwargs: dict[str, Any] | None = None,
                        t: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-sample losses: ``loss`` (N,), ``mse`` (N,) and, with learned sigma, ``vb`` (N,).

        ``t`` defaults to uniform random steps, ``noise`` to N(0, I).
        """
        n = x_start.shape[0]
        if t is None:
            t = torch.randint(0, self.num_timesteps, (n,), device=x_start.device)
        noise = torch.randn_like(x_start) if noise is None else noise
        x_t = self.q_sample(x_start, t, noise)  # (N, C, ...)
        out = self._call(model, x_t, t, model_kwargs)  # (N, C or 2C, ...)
        c = x_start.shape[1]
        terms: dict[str, torch.Tensor] = {}
        if self.learn_sigma:
            # The VLB trains only the variance: the mean half is detached (Improved DDPM's hybrid loss).
            frozen = torch.cat([out[:, :c].detach(), out[:, c:]], dim=1)
            terms["vb"] = self._vb_terms_bpd(self.p_mean_variance(model, x_t, t, model_output=frozen), x_start, x_t, t)
            if self.loss == "rescaled_mse":
                terms["vb"] = terms["vb"] * (self.num_timesteps / 1000.0)
        target = {"eps": noise, "x0": x_start}.get(self.prediction)
        if target is None:
            target = self.v_target(x_start, noise, t)
        terms["mse"] = _mean_flat((target - out[:, :c]) ** 2)
        terms["loss"] = terms["mse"] + terms.get("vb", 0.0)
        return terms

    # ---- samplers (take the model at call time) -------------------------------------------------

    def _randn(self, shape, like_device, dtype, generator):
        return torch.randn(shape, generator=generator, device=like_device, dtype=dtype)

    def p_sample_loop_progressive(self, model: Model, shape: Sequence[int], *, noise=None, model_kwargs=None,
                                  clip_denoised: bool = False, generator: torch.Generator | None = None,
                                  device: str | torch.device = "cpu", dtype=torch.float32) -> Iterator[dict]:
        """Ancestral DDPM sampling; yields ``{"t", "sample", "mean", "pred_xstart"}`` after each step."""
        x = self._randn(shape, device, dtype, generator) if noise is None else noise
        for i in reversed(range(self.num_timesteps)):
            t = torch.full((shape[0],), i, device=x.device, dtype=torch.long)
            z = self._randn(shape, x.device, x.dtype, generator)  # drawn every step (same stream as DDIM)
            with torch.no_grad():
                out = self.p_mean_variance(model, x, t, model_kwargs=model_kwargs, clip_denoised=clip_denoised)
            nonzero = float(i > 0)  # no noise on the last step
            x = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * z
            yield {"t": i, "sample": x, "mean": out["mean"], "pred_xstart": out["pred_xstart"]}

    def p_sample_loop(self, model: Model, shape: Sequence[int], **kwargs) -> torch.Tensor:
        """DDPM sample of ``shape``; keyword arguments as :meth:`p_sample_loop_progressive`."""
        for step in self.p_sample_loop_progressive(model, shape, **kwargs):
            x = step["sample"]
        return x

    def ddim_sample_loop_progressive(self, model: Model, shape: Sequence[int], *, noise=None, model_kwargs=None,
                                     eta: float = 0.0, clip_denoised: bool = False,
                                     generator: torch.Generator | None = None,
                                     device: str | torch.device = "cpu", dtype=torch.float32) -> Iterator[dict]:
        """DDIM (Song et al., 2021) over this diffusion's steps; ``eta=0`` deterministic, ``eta=1`` equals
        DDPM with the posterior variance. Yields ``{"t", "sample", "mean", "pred_xstart"}`` per step."""
        x = self._randn(shape, device, dtype, generator) if noise is None else noise
        for i in reversed(range(self.num_timesteps)):
            t = torch.full((shape[0],), i, device=x.device, dtype=torch.long)
            z = self._randn(shape, x.device, x.dtype, generator)
            with torch.no_grad():
                out = self.p_mean_variance(model, x, t, model_kwargs=model_kwargs, clip_denoised=clip_denoised)
            ab, ab_prev = _extract(self.alphas_cumprod, t, x), _extract(self.alphas_cumprod_prev, t, x)
            sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab)) * torch.sqrt(1 - ab / ab_prev)
            mean = out["pred_xstart"] * torch.sqrt(ab_prev) + torch.sqrt(1 - ab_prev - sigma**2) * out["eps"]
            x = mean + float(i > 0) * sigma * z
            yield {"t": i, "sample": x, "mean": mean, "pred_xstart": out["pred_xstart"]}

    def ddim_sample_loop(self, model: Model, shape: Sequence[int], **kwargs) -> torch.Tensor:
        """DDIM sample of ``shape``; keyword arguments as :meth:`ddim_sample_loop_progressive`."""
        for step in self.ddim_sample_loop_progressive(model, shape, **kwargs):
            x = step["sample"]
        return x


def respace(diffusion: GaussianDiffusion, use_timesteps: Sequence[int]) -> GaussianDiffusion:
    """A diffusion over a subset of the original steps (same marginals); the model still sees original t."""
    keep = sorted(set(int(i) for i in use_timesteps))
    last, betas = 1.0, []
    for i in keep:
        ab = float(diffusion.alphas_cumprod[i])
        betas.append(1 - ab / last)
        last = ab
    return GaussianDiffusion(betas=torch.tensor(betas, dtype=torch.float64), prediction=diffusion.prediction,
                             learn_sigma=diffusion.learn_sigma, variance=diffusion.variance, loss=diffusion.loss,
                             timestep_map=[int(diffusion.timestep_map[i]) for i in keep])


def create_diffusion(timestep_respacing: str | int | Sequence[int] = "", *, noise_schedule: str = "linear",
                     prediction: str = "eps", learn_sigma: bool = True, diffusion_steps: int = 1000,
                     variance: str = "fixed_small", loss: str = "mse") -> GaussianDiffusion:
    """DiT's defaults: 1000 linear steps, eps-prediction, learned sigma, MSE + VLB. ``timestep_respacing``
    ``""`` keeps all steps (training); ``"250"`` / ``"ddim50"`` for sampling."""
    base = GaussianDiffusion(betas=get_named_beta_schedule(noise_schedule, diffusion_steps), prediction=prediction,
                             learn_sigma=learn_sigma, variance=variance, loss=loss)
    if timestep_respacing in ("", None):
        return base
    return respace(base, space_timesteps(diffusion_steps, timestep_respacing))
