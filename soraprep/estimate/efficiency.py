"""Achieved utilisation as a function of the run, fitted to published training budgets.

Counting FLOPs exactly (:mod:`.flops`) is half of a budget; the other half is how much of the GPU's
dense peak a real run turns into counted work. Published video-DiT runs reached 2-20 % of peak, not
the 40 % an LLM-style ``--mfu 0.4`` assumes (data loading, online VAE/T5 encoding, small kernels,
checkpoint restarts, evaluation and idle time all land in the published wall-clock hours). So the
default utilisation is a small model fitted to the table of published runs
(:mod:`.published`), with its uncertainty, and ``--mfu`` still overrides it.

Model (log-linear, ridge-regularised, two features because there are 15 points)::

    log u = b0 + b1 * z(log(tokens per sample / 4096)) + b2 * z(log(step seconds at peak))

    z(x) = (x - mean) / std over the fitted runs

``tokens``: the sequence length through the blocks, FLOP-weighted over the training shapes.
``step seconds at peak``: the counted work per GPU per optimizer step at 100 % of peak (batch x work
per sample / GPUs / peak). Fixed per-step costs (gradient reduction, optimizer, data loading, Python,
logging) weigh more on short steps (b2 > 0); at equal work per step, fewer and longer samples ran at
lower utilisation in the table (b1 < 0: memory-bound work such as online VAE encoding of large frames
and norms/RoPE over long sequences is not in the counted FLOPs). The features were chosen by
leave-one-out among seven candidates (also model width, GPU generation, full recompute, the online-
encoder share of the FLOPs and the GPU count, all still recorded in :class:`Features`): adding any of
them did not lower the leave-one-out error. Because that choice used the same runs, the leave-one-out
error of the chosen model is optimistic; repeating the choice inside every fold is reported next to it
in docs/estimate.md.

``u`` multiplies the dense bf16 peak and divides *all counted work*: denoiser training FLOPs
(3 or 4 x forward) plus, for runs that encode online, the VAE and text-encoder forward FLOPs.
The intercept is not penalised; the other coefficients are shrunk by ``lam`` (chosen by
leave-one-out on the training runs only, from :data:`LAMBDAS`). The uncertainty is the spread of
the leave-one-out residuals of the whole table: ``sigma = rms(log(published / LOO estimate))``
and the printed range is ``central x exp(+-Z80 x sigma)`` (an 80 % interval if the residuals
were normal). A prediction for features outside the range of the fitted runs extrapolates the
trend, and its ``source`` says which feature was outside (clamping to the range instead was worse
on the table itself: leave-one-out median factor 1.61 instead of 1.48).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

#: Feature names, in the order of :meth:`Features.vector`.
FEATURES = ("log_tokens", "log_step_seconds")
#: Ridge strengths tried by the inner leave-one-out (on standardised features).
LAMBDAS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
#: Two-sided 80 % normal quantile: the printed range is central x exp(+-Z80 x sigma).
Z80 = 1.2816
#: GPU presets counted as Hopper (H100-class tensor cores, FP8-era software stacks).
HOPPER = ("h100-sxm", "h100-pcie", "h800", "h200")


@dataclass(frozen=True)
class Features:
    """What the efficiency model sees of one run (or one user estimate)."""

    width: float  # hidden size D of the denoiser
    tokens: float  # mean tokens per sample through the blocks (FLOP-weighted over shapes)
    hopper: bool
    recompute_full: bool
    online_share: float  # fraction of counted FLOPs spent in online encoders (0 when latents are cached)
    num_gpus: int
    step_seconds: float  # counted work per GPU per optimizer step at 100 % of peak (s)

    def vector(self) -> list[float]:
        return [math.log(max(self.tokens, 1.0) / 4096), math.log(max(self.step_seconds, 1e-6))]

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "tokens": self.tokens, "step_seconds": self.step_seconds,
                "hopper": self.hopper, "recompute_full": self.recompute_full, "online_share": self.online_share,
                "num_gpus": self.num_gpus}


@dataclass(frozen=True)
class Utilisation:
    """Predicted fraction of dense peak: central value and an 80 % range."""

    central: float
    low: float
    high: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"central": self.central, "low": self.low, "high": self.high, "source": self.source}


@dataclass(frozen=True)
class EfficiencyModel:
    """A fitted log-linear utilisation model (see the module docstring)."""

    intercept: float
    coef: tuple[float, ...]  # per standardised feature
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    lam: float
    sigma: float  # rms leave-one-out log residual of the table it was fitted on (0 if unknown)
    n: int
    runs: tuple[str, ...] = field(default=())
    low: tuple[float, ...] = field(default=())  # feature range of the fitted runs: predictions clamp to it
    high: tuple[float, ...] = field(default=())

    def outside(self, f: Features) -> list[str]:
        """Features of ``f`` outside the range of the fitted runs (the prediction extrapolates there)."""
        x = f.vector()
        return [name for k, name in enumerate(FEATURES)
                if self.low and (x[k] < self.low[k] - 1e-9 or x[k] > self.high[k] + 1e-9)]

    def log_u(self, f: Features) -> float:
        z = (np.asarray(f.vector()) - np.asarray(self.mean)) / np.asarray(self.scale)
        return float(self.intercept + np.dot(self.coef, z))

    def predict(self, f: Features) -> Utilisation:
        lu = self.log_u(f)
        u = min(1.0, math.exp(lu))
        spread = Z80 * self.sigma
        outside = self.outside(f)
        note = (f"; extrapolated: {', '.join(outside)} outside the published runs' range" if outside else "")
        return Utilisation(u, min(1.0, math.exp(lu - spread)), min(1.0, math.exp(lu + spread)),
                           f"calibrated on {self.n} published runs (leave-one-out rms log error "
                           f"{self.sigma:.2f}, range = 80 %){note}")

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "intercept": self.intercept, "coef": list(self.coef),
                "mean": list(self.mean), "scale": list(self.scale), "lambda": self.lam, "sigma": self.sigma,
                "n": self.n, "runs": list(self.runs), "feature_low": list(self.low), "feature_high": list(self.high)}


def fit(X: np.ndarray, y: np.ndarray, lam: float, *, runs: tuple[str, ...] = (), sigma: float = 0.0) -> EfficiencyModel:
    """Ridge fit of ``y = log u`` on standardised features; the intercept is not penalised.

    Constant features (zero spread in the training rows) get coefficient 0.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if X.ndim != 2 or len(X) != len(y) or len(y) < 2:
        raise ValueError("fit needs at least two runs with one feature row each")
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    live = scale > 1e-12
    scale = np.where(live, scale, 1.0)
    Z = (X - mean) / scale
    Z[:, ~live] = 0.0
    yc = y - y.mean()
    k = Z.shape[1]
    coef = np.linalg.solve(Z.T @ Z + lam * np.eye(k), Z.T @ yc)
    coef[~live] = 0.0
    return EfficiencyModel(float(y.mean()), tuple(float(c) for c in coef), tuple(float(m) for m in mean),
                           tuple(float(s) for s in scale), float(lam), float(sigma), len(y), runs,
                           tuple(float(v) for v in X.min(axis=0)), tuple(float(v) for v in X.max(axis=0)))


def choose_lambda(X: np.ndarray, y: np.ndarray, lambdas: tuple[float, ...] = LAMBDAS) -> float:
    """The ridge strength with the smallest leave-one-out squared log error on (X, y)."""
    best, best_err = lambdas[-1], math.inf
    for lam in lambdas:
        err = 0.0
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            m = fit(X[keep], y[keep], lam)
            err += (m.intercept + np.dot(m.coef, _z(m, X[i])) - y[i]) ** 2
        if err < best_err - 1e-12:
            best, best_err = lam, err
    return best


def _z(m: EfficiencyModel, x: np.ndarray) -> np.ndarray:
    return (np.asarray(x, dtype=float) - np.asarray(m.mean)) / np.asarray(m.scale)


def leave_one_out(X: np.ndarray, y: np.ndarray, *, lambdas: tuple[float, ...] = LAMBDAS,
                  nested: bool = True) -> tuple[np.ndarray, list[float]]:
    """Predicted ``log u`` for each row from a model fitted without it (and the lambda each used).

    With ``nested`` the ridge strength is itself chosen by leave-one-out on the remaining rows, so
    the held-out row influences nothing about its own prediction.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    pred = np.empty(len(y))
    lams = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        lam = choose_lambda(X[keep], y[keep], lambdas) if nested else lambdas[0]
        m = fit(X[keep], y[keep], lam)
        pred[i] = m.intercept + float(np.dot(m.coef, _z(m, X[i])))
        lams.append(lam)
    return pred, lams


def fit_table(X: np.ndarray, y: np.ndarray, runs: tuple[str, ...] = ()) -> tuple[EfficiencyModel, np.ndarray]:
    """The model on all rows (lambda by leave-one-out) with sigma from the nested LOO residuals."""
    pred, _ = leave_one_out(X, y)
    resid = np.asarray(y) - pred
    sigma = float(math.sqrt(np.mean(resid**2)))
    lam = choose_lambda(np.asarray(X, dtype=float), np.asarray(y, dtype=float))
    return fit(X, y, lam, runs=runs, sigma=sigma), pred


@lru_cache(maxsize=1)
def calibrated() -> EfficiencyModel:
    """The model fitted to every ground-truth run of ``published.yaml`` (cached per process)."""
    from soraprep.estimate import published

    table = published.calibration_table()
    model, _ = fit_table(table.X, table.y, tuple(table.ids))
    return model


def predict_utilisation(features: Features) -> Utilisation:
    """Central utilisation and 80 % range for a run with these features (the ``--mfu`` default)."""
    return calibrated().predict(features)
