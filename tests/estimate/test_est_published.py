"""Published runs as ground truth: table validation, per-run estimates, leave-one-out, CLI, --mfu override."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from soraprep.cli import app
from soraprep.estimate import efficiency, published
from soraprep.estimate.plan import T5_XXL_ENCODER_PARAMS, estimate
from soraprep.estimate.vae import ldm_encoder_macs

runner = CliRunner()


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(published.table_path().read_text())


# ---- the table ---------------------------------------------------------------------------------------


def test_table_has_enough_sourced_ground_truth(raw):
    runs = published.load_table()
    truth = [r for r in runs if r.ground_truth]
    assert len(truth) >= 10
    for r in truth:
        for block in ("model", "data", "encoders", "hardware", "reported"):
            assert len(r.raw[block]["source"]) > 8, (r.id, block)
        assert all(len(p.source) > 8 for p in r.phases), r.id
        assert r.reported_gpu_hours > 0
    for r in runs:
        if not r.ground_truth:
            assert r.missing, r.id  # a reference run says what keeps it out


def test_reported_forms_convert_to_gpu_hours():
    assert published.reported_gpu_hours({"gpu_days": 117}) == 117 * 24
    assert published.reported_gpu_hours({"gpus_x_hours": [32, 142]}) == 32 * 142
    assert published.reported_gpu_hours({"wall_days": 2}, num_gpus=64) == 2 * 24 * 64
    assert published.reported_gpu_hours({"wall_hours": 14}, num_gpus=64) == 14 * 64
    assert published.reported_gpu_hours({"steps_per_second": 5.7}, num_gpus=128, steps=7_000_000) == \
        pytest.approx(7e6 / 5.7 / 3600 * 128)
    with pytest.raises(ValueError, match="num_gpus"):
        published.reported_gpu_hours({"wall_days": 2})


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["runs"][1]["model"].pop("source"), "needs a 'source'"),
    (lambda r: r["runs"][1]["reported"].update(gpu_hours=1.0), "exactly one of"),
    (lambda r: r["runs"][2].update(id=r["runs"][1]["id"]), "unique string id"),
    (lambda r: r["runs"][1]["phases"][0].update(recompute="some"), "recompute must be one of"),
    (lambda r: r["runs"][-1].update(missing=[]), "must say what is missing"),
    (lambda r: r["runs"][5]["phases"][0]["bucket_config"].update({"999p": {16: [1.0, 2]}}), "999p"),
])
def test_invalid_tables_fail_loud_naming_the_run(raw, edit, message):
    bad = copy.deepcopy(raw)
    edit(bad)
    with pytest.raises(ValueError, match=message):
        published.parse_table(bad)


def test_bucket_config_expands_like_the_open_sora_config(raw):
    run = next(r for r in published.load_table() if r.id == "opensora-1.1-stage1b")
    (phase,) = run.phases
    # stage1.py: 144p {1, 16, 32, 96}, 256 {1, 16, 48}, 240p {16, 32}, 512 {1}, 1024 {1}; zero keep or None dropped
    assert len(phase.buckets) == 4 + 3 + 2 + 1 + 1
    assert published.Bucket(16, 144, 256, 6 * 64) in phase.buckets
    # Open-Sora 1.2's VAE: 51 frames -> 15 latents, handed to estimate() as 57 frames (ceil(57 / 4) = 15)
    os12 = next(r for r in published.load_table() if r.id == "opensora-1.2")
    assert published.Bucket(57, 144, 256, 51 * 96) in os12.phases[0].buckets


# ---- every run estimates, with the same estimate() users run ------------------------------------------


def test_every_ground_truth_run_estimates():
    t = published.calibration_table()
    assert len(t.ids) == sum(r.ground_truth for r in published.load_table())
    for e in t.estimates:
        assert e.hours_at_peak > 0 and 0 < e.implied_utilisation < 1, e.run.id
        assert e.bucket_range[0] <= e.hours_at_peak * (1 + 1e-9) and e.hours_at_peak <= e.bucket_range[1] * (1 + 1e-9)


def test_runs_use_the_exact_preset_when_soraprep_has_it():
    from soraprep.models.config import PRESETS

    for run in published.load_table():
        exact = run.raw.get("model", {}).get("exact") if run.ground_truth else None
        _, used = published.run_config(run) if run.ground_truth else (None, None)
        if exact in PRESETS:
            assert used == exact, run.id
        elif run.ground_truth:
            assert used.startswith(run.raw["model"]["preset"]), run.id


def test_a_fixed_shape_run_matches_a_hand_count():
    """Open-Sora 1.0 256 pretrain: 80k steps x 512 clips of 16x256x256, full recompute, SD VAE + T5 online."""
    run = next(r for r in published.load_table() if r.id == "opensora-1.0-256-pretrain")
    e = published.estimate_run(run)
    cfg, _ = published.run_config(run)
    plain = estimate(config=cfg, frames=16, height=256, width=256, steps=80_000, batch=512, gpu="h800",
                     num_gpus=64, recompute="full", mfu=1.0)
    samples = 80_000 * 512
    encoders = samples * (2 * 16 * ldm_encoder_macs(256, 256) + 2 * T5_XXL_ENCODER_PARAMS * 120)
    assert e.compute_flops == pytest.approx(plain.train_flops + encoders, rel=1e-9)
    assert e.hours_at_peak == pytest.approx(e.compute_flops / 989e12 / 3600, rel=1e-9)
    assert e.implied_utilisation == pytest.approx(e.hours_at_peak / (117 * 24))


# ---- leave-one-out on synthetic data with a known answer ---------------------------------------------


def test_loo_recovers_an_exact_linear_law_and_never_sees_the_held_out_row():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3))
    y = -2.0 + X @ np.array([0.5, -0.3, 0.2])
    pred, _ = efficiency.leave_one_out(X, y, lambdas=(1e-9,), nested=False)
    np.testing.assert_allclose(pred, y, atol=1e-6)
    y2 = y.copy()
    y2[4] += 3.0  # change only the held-out target: its own prediction must not move
    pred2, _ = efficiency.leave_one_out(X, y2, lambdas=(1e-9,), nested=False)
    assert pred2[4] == pytest.approx(pred[4], abs=1e-9)
    assert not np.allclose(pred2[np.arange(12) != 4], pred[np.arange(12) != 4])


def test_loo_with_constant_features_predicts_the_mean_of_the_others():
    X = np.ones((5, 2))
    y = np.log([0.1, 0.2, 0.05, 0.1, 0.4])
    pred, _ = efficiency.leave_one_out(X, y)
    for i in range(5):
        assert pred[i] == pytest.approx(np.delete(y, i).mean())


def test_ridge_shrinks_towards_the_mean():
    X = np.arange(6, dtype=float)[:, None]
    y = 0.5 * X[:, 0]
    slope = [efficiency.fit(X, y, lam).coef[0] for lam in (1e-9, 1.0, 100.0)]
    assert slope[0] > slope[1] > slope[2] > 0


def test_published_leave_one_out_meets_the_target():
    res = published.leave_one_out()
    assert res["n"] >= 8
    assert res["median_abs_log_ratio"] <= math.log(1.5)
    assert res["median_abs_log_ratio"] < res["fixed_mfu_0_4"]["median_abs_log_ratio"]
    for r in res["runs"]:
        assert r["ratio"] == pytest.approx(r["estimated_gpu_hours"] / r["published_gpu_hours"])


# ---- CLI and the --mfu override ----------------------------------------------------------------------


def test_cli_published_table_and_json():
    r = runner.invoke(app, ["estimate", "--published"])
    assert r.exit_code == 0, r.output
    assert "published GPU-h" in r.stdout and "leave-one-out over" in r.stdout
    for run in published.load_table():
        if run.ground_truth:
            assert run.name[:30] in r.stdout
    j = runner.invoke(app, ["estimate", "--published", "--json"])
    assert j.exit_code == 0
    d = json.loads(j.stdout)
    assert {"runs", "median_abs_log_ratio", "worst", "model", "reference_runs"} <= set(d)
    assert all({"estimated_gpu_hours", "published_gpu_hours", "ratio"} <= set(x) for x in d["runs"])


def test_mfu_overrides_the_calibrated_default():
    kw = dict(model="STDiT-XL/2", frames=16, height=256, width=256, steps=1000, batch=64, gpu="h100", num_gpus=8)
    given = estimate(mfu=0.3, **kw).to_dict()
    assert given["settings"]["mfu"] == 0.3 and given["gpu_hours_range"] is None
    assert given["gpu_hours"] == pytest.approx(given["train_flops"] / (989e12 * 0.3) / 3600)
    default = estimate(**kw).to_dict()
    lo, hi = default["gpu_hours_range"]
    assert lo < default["gpu_hours"] < hi
    assert default["gpu_hours"] == pytest.approx(default["train_flops"] / (989e12 * default["settings"]["mfu"]) / 3600)
    assert "calibrated" in default["mfu_source"]
    r = runner.invoke(app, ["estimate", "--model", "STDiT-XL/2", "--frames", "16", "--height", "256", "--width", "256",
                            "--steps", "1000", "--batch", "64", "--mfu", "0.3", "--json"])
    assert json.loads(r.stdout)["gpu_hours"] == pytest.approx(given["gpu_hours"])


def test_online_encoders_move_the_encode_cost_into_training():
    kw = dict(model="STDiT-S/2", frames=16, height=128, width=128, clips=1000, gpu="h100", num_gpus=8, mfu=0.5)
    cached = estimate(**kw).to_dict()
    online = estimate(online_encoders=True, **kw).to_dict()
    enc = cached["data_prep"]["vae_encode"]["flops"] + cached["data_prep"]["text_encode"]["flops"]
    assert online["online_encoder_flops"] == pytest.approx(enc)
    assert online["gpu_hours"] == pytest.approx((online["train_flops"] + enc) / (989e12 * 0.5) / 3600)
    assert online["data_prep"]["vae_encode"]["flops"] == 0 and online["data_prep"]["text_encode"]["flops"] == 0


def test_prediction_says_when_it_extrapolates():
    model = efficiency.calibrated()
    inside = efficiency.Features(1152, 4096, True, True, 0.2, 64, step_seconds=0.3)
    far = efficiency.Features(3072, 500_000, True, True, 0.0, 512, step_seconds=100.0)
    assert "extrapolated" not in model.predict(inside).source
    assert "log_tokens, log_step_seconds" in model.predict(far).source


def test_the_sora_class_worked_example_prints_what_its_page_says(capsys):
    """docs/estimate-sora-class.md: its Python block runs and prints the output block below it."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "estimate-sora-class.md").read_text()
    code, expected = re.search(r"```python\n(.*?)```\n\n```\n(.*?)```", page, flags=re.S).groups()
    exec(compile(code, "estimate-sora-class.md", "exec"), {})
    assert capsys.readouterr().out.strip() == expected.strip()
