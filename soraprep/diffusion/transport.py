"""SiT's interpolant framework (Ma et al., 2024): paths, objectives, ODE and SDE samplers.

Convention (as SiT): ``x_t = alpha(t) * x1 + sigma(t) * x0`` with ``x1`` the data, ``x0 ~ N(0, I)`` and
``t`` running from 0 (noise) to 1 (data). The model is called as ``model(x_t, t, **model_kwargs)`` with a
float ``t`` in [0, 1] of shape (N,) and predicts, per ``prediction``:

* ``"velocity"``: ``u_t = alpha'(t) x1 + sigma'(t) x0`` (flow matching / rectified flow for the linear path)
* ``"noise"``: ``x0`` (the noise, like DDPM's eps)
* ``"score"``: ``grad log p_t(x_t) = -E[x0 | x_t] / sigma(t)``

Any of the three is converted to the others through the noise estimate ``E[x0 | x_t]``, so every sampler
works with every prediction type. A model with 2C output channels (learned sigma, e.g. official SiT with
``family="DiT"``) has its second half ignored.

Example::

    from soraprep.diffusion.transport import Transport, Sampler
    transport = Transport(path="linear", prediction="velocity")
    loss = transport.training_losses(model, x, dict(y=y))["loss"].mean()
    sample = Sampler(transport).sample_ode(method="heun", num_steps=50)   # configured once
    images = sample(torch.randn_like(x), model, y=y)                      # model given at call time
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

Model = Callable[..., torch.Tensor]

# ------------------------------------------------------------------------------------------------
# Paths: alpha(t), sigma(t) and their derivatives
# ------------------------------------------------------------------------------------------------


class LinearPath:
    """alpha = t, sigma = 1 - t (rectified flow / flow matching)."""

    def coefficients(self, t: torch.Tensor):
        one = torch.ones_like(t)
        return t, 1 - t, one, -one  # alpha, sigma, d_alpha, d_sigma


class GVPPath:
    """Generalised variance-preserving: alpha = sin(pi t / 2), sigma = cos(pi t / 2)."""

    def coefficients(self, t: torch.Tensor):
        a, s = torch.sin(math.pi / 2 * t), torch.cos(math.pi / 2 * t)
        return a, s, math.pi / 2 * s, -math.pi / 2 * a


class VPPath:
    """Variance-preserving SDE path (DDPM's continuous limit) with beta from sigma_min to sigma_max."""

    def __init__(self, sigma_min: float = 0.1, sigma_max: float = 20.0):
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def coefficients(self, t: torch.Tensor):
        r = 1 - t  # diffusion time
        log_mean = -0.25 * r**2 * (self.sigma_max - self.sigma_min) - 0.5 * r * self.sigma_min
        d_log_mean = 0.5 * r * (self.sigma_max - self.sigma_min) + 0.5 * self.sigma_min  # = beta(r) / 2
        a = torch.exp(log_mean)
        s = torch.sqrt((1 - a**2).clamp(min=0))
        d_a = a * d_log_mean
        d_s = -a * d_a / s.clamp(min=1e-12)
        return a, s, d_a, d_s


PATHS: dict[str, Callable[[], Any]] = {"linear": LinearPath, "gvp": GVPPath, "vp": VPPath}


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def _time(t: float, x: torch.Tensor) -> torch.Tensor:
    """(N,) times in float32 (float64 for float64 x): bf16 cannot resolve small steps of t."""
    return torch.full((x.shape[0],), t, device=x.device, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=list(range(1, x.ndim)))


# ------------------------------------------------------------------------------------------------
# Transport: training objective and prediction conversions
# ------------------------------------------------------------------------------------------------


class Transport:
    """Interpolant objective.

    Args:
        path: ``"linear"`` | ``"gvp"`` | ``"vp"``.
        prediction: ``"velocity"`` | ``"noise"`` | ``"score"``.
        loss_weight: for noise/score predictions: ``None`` (uniform), ``"velocity"`` (weight
            (drift_var / sigma)^2, matching the velocity loss) or ``"likelihood"`` (drift_var / sigma^2).
        train_eps / sample_eps: keep t away from singular ends; ``None`` uses SiT's defaults
            (VP: 1e-5 / 1e-3; linear, GVP with noise or score: 1e-3 / 1e-3; otherwise 0 / 0).
    """

    def __init__(self, *, path: str = "linear", prediction: str = "velocity", loss_weight: str | None = None,
                 train_eps: float | None = None, sample_eps: float | None = None):
        if path not in PATHS:
            raise ValueError(f"path must be one of {sorted(PATHS)}, got {path!r}")
        if prediction not in ("velocity", "noise", "score"):
            raise ValueError(f"prediction must be 'velocity', 'noise' or 'score', got {prediction!r}")
        if loss_weight not in (None, "velocity", "likelihood"):
            raise ValueError(f"loss_weight must be None, 'velocity' or 'likelihood', got {loss_weight!r}")
        self.path_name, self.path = path, PATHS[path]()
        self.prediction, self.loss_weight = prediction, loss_weight
        if path == "vp":
            default_train, default_sample = 1e-5, 1e-3
        elif prediction != "velocity":
            default_train, default_sample = 1e-3, 1e-3
        else:
            default_train, default_sample = 0.0, 0.0
        self.train_eps = default_train if train_eps is None else train_eps
        self.sample_eps = default_sample if sample_eps is None else sample_eps

    def interval(self, *, train: bool) -> tuple[float, float]:
        """(t0, t1) used for training or sampling; open ends where a conversion would divide by zero."""
        eps = self.train_eps if train else self.sample_eps
        t0 = eps if (self.path_name == "vp" or self.prediction != "velocity") else 0.0
        t1 = 1 - eps if (self.path_name == "vp" or self.prediction != "velocity") else 1.0
        return t0, t1

    def sample_xt(self, x1: torch.Tensor, x0: torch.Tensor, t: torch.Tensor):
        """x_t and the target velocity u_t for data x1, noise x0, times t (N,)."""
        a, s, da, ds = (_bcast(v, x1) for v in self.path.coefficients(t))
        return a * x1 + s * x0, da * x1 + ds * x0

    def _output(self, model: Model, x, t, model_kwargs) -> torch.Tensor:
        out = model(x, t, **(model_kwargs or {}))
        return out[:, : x.shape[1]] if out.shape[1] == 2 * x.shape[1] else out

    def training_losses(self, model: Model, x1: torch.Tensor, model_kwargs: dict[str, Any] | None = None,
                        t: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-sample ``loss`` (N,) and the model ``pred``; ``t`` ~ U[t0, t1] unless given."""
        n = x1.shape[0]
        t0, t1 = self.interval(train=True)
        if t is None:
            t = torch.rand(n, device=x1.device) * (t1 - t0) + t0
        x0 = torch.randn_like(x1) if noise is None else noise
        xt, ut = self.sample_xt(x1, x0, t)
        pred = self._output(model, xt, t, model_kwargs)
        if self.prediction == "velocity":
            loss = _mean_flat((pred - ut) ** 2)
        else:
            a, s, da, ds = (_bcast(v, x1) for v in self.path.coefficients(t))
            drift_var = da * s**2 / a - s * ds  # the score's coefficient in the velocity
            if self.loss_weight == "velocity":
                w = (drift_var / s) ** 2
            elif self.loss_weight == "likelihood":
                w = drift_var / s**2
            else:
                w = torch.ones_like(s)
            err = pred - x0 if self.prediction == "noise" else pred * s + x0
            loss = _mean_flat(w * err**2)
        return {"loss": loss, "pred": pred}

    # ---- conversions ------------------------------------------------------------------------------

    def noise_estimate(self, model: Model, x, t, model_kwargs=None):
        """(E[x0 | x_t], model output) for t (N,)."""
        out = self._output(model, x, t, model_kwargs)
        a, s, da, ds = (_bcast(v, x) for v in self.path.coefficients(t))
        if self.prediction == "velocity":  # solve x = a x1 + s x0, v = da x1 + ds x0 for x0
            return (da * x - a * out) / (da * s - a * ds), out
        if self.prediction == "noise":
            return out, out
        return -s * out, out

    def velocity(self, model: Model, x, t, model_kwargs=None) -> torch.Tensor:
        """Probability-flow ODE drift v(x, t)."""
        if self.prediction == "velocity":
            return self._output(model, x, t, model_kwargs)
        x0_hat, _ = self.noise_estimate(model, x, t, model_kwargs)
        a, s, da, ds = (_bcast(v, x) for v in self.path.coefficients(t))
        return da * (x - s * x0_hat) / a + ds * x0_hat

    def score(self, model: Model, x, t, model_kwargs=None) -> torch.Tensor:
        """grad log p_t(x) = -E[x0 | x_t] / sigma(t)."""
        x0_hat, _ = self.noise_estimate(model, x, t, model_kwargs)
        return -x0_hat / _bcast(self.path.coefficients(t)[1], x)


# ------------------------------------------------------------------------------------------------
# Samplers: configured once, take the model at call time
# ------------------------------------------------------------------------------------------------

# Dormand-Prince 5(4) tableau
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = ((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
         (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
         (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
         (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
_DP_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


class Sampler:
    """Builds sampling functions ``fn(x_noise, model, **model_kwargs) -> x_data`` for a :class:`Transport`.

    ``nfe`` holds the number of model evaluations of the last call.
    """

    def __init__(self, transport: Transport):
        self.transport = transport
        self.nfe = 0

    def _v(self, model, x, t: float, kw):
        self.nfe += 1
        return self.transport.velocity(model, x, _time(t, x), kw)

    def sample_ode(self, *, method: str = "heun", num_steps: int = 50, atol: float = 1e-6, rtol: float = 1e-3):
        """Probability-flow ODE from t0 (noise) to t1 (data): ``"euler"``, ``"heun"`` (fixed
        ``num_steps``) or ``"dopri5"`` (adaptive Dormand-Prince 5(4) with ``atol`` / ``rtol``)."""
        if method not in ("euler", "heun", "dopri5"):
            raise ValueError(f"ODE method must be 'euler', 'heun' or 'dopri5', got {method!r}")
        t0, t1 = self.transport.interval(train=False)

        @torch.no_grad()
        def sample(x: torch.Tensor, model: Model, **model_kwargs) -> torch.Tensor:
            self.nfe = 0
            if method == "dopri5":
                return self._dopri5(x, model, model_kwargs, t0, t1, atol, rtol)
            ts = torch.linspace(t0, t1, num_steps + 1, dtype=torch.float64).tolist()
            for ta, tb in zip(ts[:-1], ts[1:], strict=True):
                h = tb - ta
                k1 = self._v(model, x, ta, model_kwargs)
                if method == "euler":
                    x = x + h * k1
                else:
                    k2 = self._v(model, x + h * k1, tb, model_kwargs)
                    x = x + h / 2 * (k1 + k2)
            return x

        return sample

    def _dopri5(self, x, model, kw, t0: float, t1: float, atol: float, rtol: float) -> torch.Tensor:
        t, h = t0, (t1 - t0) / 20
        k_first = self._v(model, x, t, kw)
        while t < t1 - 1e-12:
            h = min(h, t1 - t)
            ks = [k_first]
            for i in range(1, 7):
                xi = x + h * sum(a * k for a, k in zip(_DP_A[i], ks, strict=False))
                ks.append(self._v(model, xi, t + _DP_C[i] * h, kw))
            x5 = x + h * sum(b * k for b, k in zip(_DP_B5, ks, strict=True))
            x4 = x + h * sum(b * k for b, k in zip(_DP_B4, ks, strict=True))
            scale = atol + rtol * torch.maximum(x.abs(), x5.abs())
            err = float(torch.sqrt(torch.mean(((x5 - x4) / scale) ** 2)))
            if err <= 1.0:  # accept; the last stage is the next step's first (FSAL)
                t, x, k_first = t + h, x5, ks[6]
            h = h * min(5.0, max(0.2, 0.9 * (err + 1e-10) ** -0.2))
        return x

    def sample_sde(self, *, method: str = "euler", num_steps: int = 250, diffusion_form: str = "sigma",
                   diffusion_norm: float = 1.0, generator: torch.Generator | None = None):
        """Reverse SDE ``dx = [v + w(t)/2 * score] dt + sqrt(w(t)) dW`` (same marginals as the ODE for any
        w >= 0) with Euler-Maruyama (``"euler"``) or stochastic Heun (``"heun"``); the last step is
        noise-free. ``diffusion_form`` w(t): ``"constant"`` (norm), ``"sigma"`` (norm * sigma_t, SiT's
        default), ``"linear"`` (norm * (1 - t)), ``"SBDM"`` (norm * 2 * drift_var: the exact reverse of the
        VP SDE)."""
        if method not in ("euler", "heun"):
            raise ValueError(f"SDE method must be 'euler' or 'heun', got {method!r}")
        if diffusion_form not in ("constant", "sigma", "linear", "SBDM"):
            raise ValueError(f"unknown diffusion_form {diffusion_form!r}")
        tr = self.transport
        t0, t1 = tr.interval(train=False)
        if diffusion_form == "SBDM" and tr.path_name != "vp":
            t0 = max(t0, tr.sample_eps or 1e-3)  # drift_var ~ 1/t near t = 0 on linear / GVP paths

        if diffusion_form != "sigma" and t1 == 1.0:
            t1 = 1 - (tr.sample_eps or 1e-3)  # w / sigma is unbounded at sigma = 0 for these forms

        def w_over_sigma(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
            a, s, da, ds = (_bcast(v, like) for v in tr.path.coefficients(t))
            s = s.clamp(min=1e-12)
            if diffusion_form == "constant":
                return diffusion_norm / s
            if diffusion_form == "sigma":
                return diffusion_norm * torch.ones_like(s)
            if diffusion_form == "linear":
                return diffusion_norm * (1 - _bcast(t, like)) / s
            return diffusion_norm * 2 * (da * s / a - ds)  # SBDM: w = 2 * drift_var

        def drift(model, x, t: float, kw) -> torch.Tensor:
            self.nfe += 1
            tt = _time(t, x)
            x0_hat, out = tr.noise_estimate(model, x, tt, kw)
            if tr.prediction == "velocity":
                v = out
            else:
                a, s, da, ds = (_bcast(c, x) for c in tr.path.coefficients(tt))
                v = da * (x - s * x0_hat) / a + ds * x0_hat
            return v - 0.5 * w_over_sigma(tt, x) * x0_hat  # v + w/2 * score, score = -x0_hat / sigma

        def noise(x: torch.Tensor, t: float, h: float) -> torch.Tensor:
            tt = _time(t, x)
            w = w_over_sigma(tt, x) * _bcast(tr.path.coefficients(tt)[1], x)
            dw = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * math.sqrt(h)
            return torch.sqrt(w.clamp(min=0)) * dw

        @torch.no_grad()
        def sample(x: torch.Tensor, model: Model, **model_kwargs) -> torch.Tensor:
            self.nfe = 0
            ts = torch.linspace(t0, t1, num_steps + 1, dtype=torch.float64).tolist()
            for i, (ta, tb) in enumerate(zip(ts[:-1], ts[1:], strict=True)):
                h = tb - ta
                if i == num_steps - 1:  # final mean step: no noise
                    x = x + h * drift(model, x, ta, model_kwargs)
                elif method == "euler":
                    x = x + h * drift(model, x, ta, model_kwargs) + noise(x, ta, h)
                else:  # stochastic Heun: add the noise first, then a Heun step on the drift
                    x_hat = x + noise(x, ta, h)
                    d1 = drift(model, x_hat, ta, model_kwargs)
                    d2 = drift(model, x_hat + h * d1, tb, model_kwargs)
                    x = x_hat + h / 2 * (d1 + d2)
            return x

        return sample
