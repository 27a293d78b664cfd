"""Published training runs as data: load, validate, estimate each from its public config, leave-one-out.

The table is ``published.yaml`` (package data). A ``ground_truth`` run has a reported budget and enough
of its public config (model, shapes, batch per bucket, steps, GPUs, recompute, online encoders) to be
estimated with :func:`soraprep.estimate.plan.estimate`, the code users run; ``reference`` runs are kept
for the record with what is ``missing``. Every block carries a ``source``.

For each run, every phase is estimated at ``mfu=1`` (so ``gpu_hours`` is "hours at 100 % of peak");
the *implied utilisation* is that over the published GPU-hours. :mod:`.efficiency` fits a model of the
utilisation to those points, and :func:`leave_one_out` predicts each run from a model fitted without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from soraprep.estimate import efficiency

STATUSES = ("ground_truth", "reference")
REPORTED_FORMS = ("gpu_hours", "gpu_days", "gpus_x_hours", "wall_days", "wall_hours", "steps_per_second")
RECOMPUTE = ("none", "selective", "full")


@dataclass(frozen=True)
class Bucket:
    frames: int  # pixel frames handed to estimate() (latent frames x VAE factor for the Open-Sora 1.2 rule)
    height: int
    width: int
    global_batch: float  # samples per step over all GPUs


@dataclass(frozen=True)
class Phase:
    steps: int
    recompute: str
    buckets: tuple[Bucket, ...]
    source: str


@dataclass(frozen=True)
class Run:
    id: str
    name: str
    status: str
    reported_gpu_hours: float | None
    reported: dict[str, Any]
    raw: dict[str, Any] = field(repr=False, compare=False)
    phases: tuple[Phase, ...] = ()
    missing: tuple[str, ...] = ()
    assumptions: tuple[str, ...] = ()

    @property
    def ground_truth(self) -> bool:
        return self.status == "ground_truth"


def table_path() -> Path:
    return Path(str(resources.files("soraprep.estimate").joinpath("published.yaml")))


def _need(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"published table, {where}: {msg}")


def _sourced(block: Any, where: str) -> dict[str, Any]:
    _need(isinstance(block, dict), where, "must be a mapping")
    _need(isinstance(block.get("source"), str) and len(block["source"].strip()) > 8, where,
          "needs a 'source' (paper section, report file, config path or URL)")
    return block


def _latent_frames(frames: int, rule: str | None) -> int:
    """Open-Sora 1.2's VAE: 17-frame chunks -> 5 latents each, an image -> 1 latent."""
    if rule is None:
        return frames
    if rule == "opensora-1.2":
        return 1 if frames == 1 else -(-frames // 17) * 5
    raise ValueError(f"unknown latent_frames rule {rule!r}")


def _expand_phase(ph: dict[str, Any], *, where: str, num_gpus: int, resolutions: dict[str, Any],
                  rule: str | None, t: int) -> Phase:
    _sourced(ph, where)
    steps = ph.get("steps")
    _need(isinstance(steps, int) and steps > 0, where, "steps must be a positive integer")
    rec = ph.get("recompute")
    _need(rec in RECOMPUTE, where, f"recompute must be one of {RECOMPUTE}")

    def pixel_frames(f: int) -> int:
        if rule is None:  # a causal VAE: estimate() maps F pixel frames to ceil(F / t) latents
            return f
        lat = _latent_frames(f, rule)  # another rule: hand estimate() frames with ceil(frames / t) == lat
        return lat if t == 1 else 1 + (lat - 1) * t

    buckets: list[Bucket] = []
    if "global_batch" in ph:
        f, h, w = ph["shape"]
        buckets.append(Bucket(pixel_frames(int(f)), int(h), int(w), float(ph["global_batch"])))
    elif "buckets" in ph:
        for f, h, w, local in ph["buckets"]:
            buckets.append(Bucket(pixel_frames(int(f)), int(h), int(w), float(local) * num_gpus))
    elif "bucket_config" in ph:
        for res, by_frames in ph["bucket_config"].items():
            _need(str(res) in resolutions, where, f"resolution {res!r} is not in the resolutions table")
            h, w = resolutions[str(res)]
            for f, (keep, local) in by_frames.items():
                keep = keep[0] if isinstance(keep, list) else keep
                if local and keep > 0:
                    buckets.append(Bucket(pixel_frames(int(f)), int(h), int(w), float(local) * num_gpus))
    _need(bool(buckets), where, "needs global_batch + shape, buckets, or bucket_config")
    return Phase(steps, rec, tuple(buckets), ph["source"])


def reported_gpu_hours(rep: dict[str, Any], *, num_gpus: int | None = None, steps: int | None = None) -> float:
    """GPU-hours from whichever form the report used."""
    if "gpu_hours" in rep:
        return float(rep["gpu_hours"])
    if "gpu_days" in rep:
        return float(rep["gpu_days"]) * 24
    if "gpus_x_hours" in rep:
        n, h = rep["gpus_x_hours"]
        return float(n) * float(h)
    if "wall_days" in rep or "wall_hours" in rep:
        if not num_gpus:
            raise ValueError("wall-clock budgets need hardware.num_gpus")
        hours = float(rep["wall_days"]) * 24 if "wall_days" in rep else float(rep["wall_hours"])
        return hours * num_gpus
    if "steps_per_second" in rep:
        if not (num_gpus and steps):
            raise ValueError("a throughput needs hardware.num_gpus and the steps")
        return steps / float(rep["steps_per_second"]) / 3600 * num_gpus
    raise ValueError(f"reported needs one of {REPORTED_FORMS}")


def parse_table(data: dict[str, Any]) -> list[Run]:
    """Validate the parsed YAML and return its runs (configs fail loud with the run id and the fix)."""
    _need(isinstance(data, dict) and data.get("schema") == 1, "top", "expected 'schema: 1'")
    resolutions = _sourced(data.get("resolutions"), "resolutions")
    runs, seen = [], set()
    for i, r in enumerate(data.get("runs") or []):
        rid = r.get("id") if isinstance(r, dict) else None
        where = f"run {rid or i}"
        _need(isinstance(rid, str) and rid not in seen, where, "needs a unique string id")
        seen.add(rid)
        _need(r.get("status") in STATUSES, where, f"status must be one of {STATUSES}")
        rep = _sourced(r.get("reported"), f"{where}.reported")
        forms = [k for k in REPORTED_FORMS if k in rep]
        missing = tuple(r.get("missing") or ())
        if r["status"] == "reference":
            _need(bool(missing), where, "a reference run must say what is missing")
            runs.append(Run(rid, r.get("name", rid), "reference", None, rep, r, (), missing,
                            tuple(r.get("assumptions") or ())))
            continue
        _need(len(forms) == 1, f"{where}.reported", f"needs exactly one of {REPORTED_FORMS}, got {forms}")
        model = _sourced(r.get("model"), f"{where}.model")
        _need("preset" in model, f"{where}.model", "needs a preset")
        data_b = _sourced(r.get("data"), f"{where}.data")
        enc = _sourced(r.get("encoders"), f"{where}.encoders")
        _need(isinstance(enc.get("online"), bool), f"{where}.encoders", "online must be true or false")
        hw = _sourced(r.get("hardware"), f"{where}.hardware")
        n = hw.get("num_gpus")
        _need(isinstance(n, int) and n > 0, f"{where}.hardware", "num_gpus must be a positive integer")
        t = int(data_b.get("vae_compression", [1, 8, 8])[0])
        phases = tuple(_expand_phase(ph, where=f"{where}.phases[{j}]", num_gpus=n, resolutions=resolutions,
                                     rule=data_b.get("latent_frames"), t=t)
                       for j, ph in enumerate(r.get("phases") or []))
        _need(bool(phases), where, "needs at least one phase")
        hours = reported_gpu_hours(rep, num_gpus=n, steps=sum(p.steps for p in phases))
        runs.append(Run(rid, r.get("name", rid), "ground_truth", hours, rep, r, phases, missing,
                        tuple(r.get("assumptions") or ())))
    _need(bool(runs), "top", "no runs")
    return runs


@lru_cache(maxsize=4)
def load_table(path: str | None = None) -> tuple[Run, ...]:
    import yaml

    p = Path(path) if path else table_path()
    return tuple(parse_table(yaml.safe_load(p.read_text())))


# ------------------------------------------------------------------------------------------------
# Estimating a run with estimate()
# ------------------------------------------------------------------------------------------------


def run_config(run: Run) -> tuple[Any, str]:
    """(config, what was used): the exact preset when this soraprep has it, else the stand-in."""
    from soraprep.models.config import PRESETS, get_config

    m = run.raw["model"]
    exact = m.get("exact")
    if exact and exact in PRESETS:
        return PRESETS[exact], exact
    over = dict(m.get("overrides") or {})
    label = m["preset"] + (f" {over}" if over else "")
    return get_config(m["preset"], **over), (f"{label} (stand-in for {exact})" if exact else label)


@dataclass(frozen=True)
class RunEstimate:
    """One run estimated at 100 % of peak, and what the efficiency model needs to know about it."""

    run: Run
    model_used: str
    compute_flops: float  # denoiser training + online encoders, all phases
    hours_at_peak: float  # compute_flops / peak / 3600, summed over phases
    features: efficiency.Features  # FLOP-weighted over phases
    bucket_range: tuple[float, float]  # hours at peak if every step were the cheapest / dearest bucket

    @property
    def implied_utilisation(self) -> float:
        return self.hours_at_peak / self.run.reported_gpu_hours  # type: ignore[operator]

    def gpu_hours(self, utilisation: float) -> float:
        return self.hours_at_peak / utilisation


def _estimate_phase(run: Run, cfg, phase: Phase, buckets: tuple[Bucket, ...] | None = None):
    from soraprep.estimate.plan import estimate

    d, e, hw = run.raw["data"], run.raw["encoders"], run.raw["hardware"]
    bs = buckets or phase.buckets
    mean_batch = sum(b.global_batch for b in bs) / len(bs)
    return estimate(
        config=cfg, buckets=[(b.frames, b.height, b.width, b.global_batch) for b in bs],
        vae_compression=tuple(d.get("vae_compression", (1, 8, 8))), latent_channels=d.get("latent_channels"),
        steps=phase.steps, batch=max(1, round(mean_batch)), micro_batch=1, gpu=hw["gpu"], num_gpus=hw["num_gpus"],
        peak_tflops=hw.get("peak_tflops"), gpu_memory_gib=hw.get("gpu_memory_gib"), recompute=phase.recompute,
        mfu=1.0, online_encoders=e["online"], vae=e.get("vae", "sd"), text_tokens=e.get("text_tokens"),
        text_encoder_params=e.get("text_encoder_params"),
    ), mean_batch


def estimate_run(run: Run) -> RunEstimate:
    """Estimate every phase of ``run`` from its public config at 100 % of peak (hours and features)."""
    if not run.ground_truth:
        raise ValueError(f"{run.id} is a reference run: {'; '.join(run.missing)}")
    cfg, used = run_config(run)
    total_flops = hours = lo = hi = 0.0
    vecs, weights = [], []
    for ph in run.phases:
        est, mean_batch = _estimate_phase(run, cfg, ph)
        # steps x round(mean batch) samples were counted; rescale to the exact mean batch
        scale = mean_batch / max(1, round(mean_batch))
        flops = est.compute_flops * scale
        ph_hours = est.gpu_hours * scale
        total_flops += flops
        hours += ph_hours
        vecs.append(est.features)
        weights.append(flops)
        per_bucket = [_estimate_phase(run, cfg, ph, (b,))[0].gpu_hours * b.global_batch / max(1, round(b.global_batch))
                      for b in ph.buckets] if len(ph.buckets) > 1 else [ph_hours]
        lo += min(per_bucket)
        hi += max(per_bucket)
    w = np.asarray(weights) / sum(weights)
    f0 = vecs[0]
    feats = efficiency.Features(
        width=f0.width, tokens=float(sum(wi * f.tokens for wi, f in zip(w, vecs, strict=True))),
        hopper=f0.hopper, recompute_full=bool(sum(wi * f.recompute_full for wi, f in zip(w, vecs, strict=True)) >= 0.5),
        online_share=float(sum(wi * f.online_share for wi, f in zip(w, vecs, strict=True))), num_gpus=f0.num_gpus,
        step_seconds=hours * 3600 / sum(p.steps for p in run.phases) / f0.num_gpus)
    return RunEstimate(run, used, total_flops, hours, feats, (lo, hi))


@dataclass(frozen=True)
class CalibrationTable:
    ids: list[str]
    X: np.ndarray  # features, one row per ground-truth run
    y: np.ndarray  # log implied utilisation
    estimates: list[RunEstimate]


@lru_cache(maxsize=2)
def calibration_table(path: str | None = None) -> CalibrationTable:
    ests = [estimate_run(r) for r in load_table(path) if r.ground_truth]
    X = np.asarray([e.features.vector() for e in ests])
    y = np.log([e.implied_utilisation for e in ests])
    return CalibrationTable([e.run.id for e in ests], X, y, ests)


# ------------------------------------------------------------------------------------------------
# Leave-one-out comparison (what `soraprep estimate --published` prints)
# ------------------------------------------------------------------------------------------------


def leave_one_out(path: str | None = None) -> dict[str, Any]:
    """Each ground-truth run estimated with the utilisation model fitted without it."""
    t = calibration_table(path)
    pred, lams = efficiency.leave_one_out(t.X, t.y)
    rows = []
    for e, lu, lam in zip(t.estimates, pred, lams, strict=True):
        u = math.exp(lu)
        est_h = e.gpu_hours(u)
        pub = e.run.reported_gpu_hours
        rows.append({
            "id": e.run.id, "name": e.run.name, "model_used": e.model_used,
            "gpu": e.run.raw["hardware"].get("accelerator") or e.run.raw["hardware"]["gpu"],
            "num_gpus": e.run.raw["hardware"]["num_gpus"], "steps": sum(p.steps for p in e.run.phases),
            "compute_flops": e.compute_flops, "hours_at_peak": e.hours_at_peak,
            "published_gpu_hours": pub, "implied_utilisation": e.implied_utilisation,
            "loo_utilisation": u, "loo_lambda": lam, "estimated_gpu_hours": est_h,
            "ratio": est_h / pub, "log_ratio": math.log(est_h / pub),
            "bucket_range_gpu_hours": [e.bucket_range[0] / u, e.bucket_range[1] / u],
            "features": e.features.to_dict(), "reported": e.run.reported,
            "missing": list(e.run.missing), "assumptions": list(e.run.assumptions),
        })
    abs_log = sorted(abs(r["log_ratio"]) for r in rows)
    worst = max(rows, key=lambda r: abs(r["log_ratio"]))
    model, _ = efficiency.fit_table(t.X, t.y, tuple(t.ids))
    return {
        "runs": rows,
        "n": len(rows),
        "median_abs_log_ratio": float(np.median(abs_log)),
        "median_factor": float(math.exp(np.median(abs_log))),
        "within_1_5x": sum(a <= math.log(1.5) for a in abs_log),
        "worst": {"id": worst["id"], "ratio": worst["ratio"]},
        "fixed_mfu_0_4": {"median_abs_log_ratio": float(np.median(
            [abs(math.log(e.gpu_hours(0.4) / e.run.reported_gpu_hours)) for e in t.estimates]))},
        "model": model.to_dict(),
        "reference_runs": [{"id": r.id, "name": r.name, "reported": r.reported, "missing": list(r.missing)}
                           for r in load_table(path) if not r.ground_truth],
    }


def _h(x: float) -> str:
    return f"{x:,.0f}"


def format_table(res: dict[str, Any]) -> str:
    """The leave-one-out comparison as a Markdown table (CLI, benchmark and docs/estimate.md)."""
    lines = ["| run | GPUs | steps | published GPU-h | estimated GPU-h (LOO) | bucket range | ratio est/pub "
             "| implied util. | LOO util. |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        lo, hi = r["bucket_range_gpu_hours"]
        rng = "-" if abs(hi - lo) < 1e-6 * max(hi, 1) else f"{_h(lo)} .. {_h(hi)}"
        lines.append(f"| {r['name']} | {r['num_gpus']} x {r['gpu']} | {r['steps']:,} | {_h(r['published_gpu_hours'])} "
                     f"| {_h(r['estimated_gpu_hours'])} | {rng} | {r['ratio']:.2f} | {r['implied_utilisation']:.3f} "
                     f"| {r['loo_utilisation']:.3f} |")
    return "\n".join(lines)


def format_report(res: dict[str, Any]) -> str:
    """Table + summary lines (what ``soraprep estimate --published`` prints)."""
    m = res["model"]
    worst = next(r for r in res["runs"] if r["id"] == res["worst"]["id"])
    out = [format_table(res), "",
           f"leave-one-out over {res['n']} runs: median |log(estimate / published)| = "
           f"{res['median_abs_log_ratio']:.3f} (a factor {res['median_factor']:.2f}); "
           f"{res['within_1_5x']} of {res['n']} within 1.5x; worst {worst['name']} ({worst['ratio']:.2f}x)",
           f"fixed --mfu 0.4 instead: median factor {math.exp(res['fixed_mfu_0_4']['median_abs_log_ratio']):.2f}",
           f"model on all runs: log u = {m['intercept']:.3f} + "
           + " + ".join(f"{c:.3f} z({n})" for n, c in zip(m["features"], m["coef"], strict=True))
           + f"; lambda {m['lambda']:g}; LOO rms log error {m['sigma']:.2f} (the range of an estimate)",
           f"{len(res['reference_runs'])} reference runs (budget or schedule incomplete) are listed in "
           "soraprep/estimate/published.yaml with what is missing"]
    return "\n".join(out)
