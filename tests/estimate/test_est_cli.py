"""``soraprep estimate``: JSON contract, readable output, exit codes, sweep files."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from soraprep.cli import app

runner = CliRunner()
REQUIRED = ("params", "forward_macs", "forward_flops", "train_flops", "gpu_hours", "wall_hours", "cost",
            "memory_per_gpu_bytes", "fits")


def test_json_is_one_object_on_stdout_with_the_contract_keys():
    r = runner.invoke(app, ["estimate", "--model", "DiT-XL/2", "--height", "256", "--width", "256",
                            "--steps", "400000", "--batch", "256", "--gpu", "a100", "--num-gpus", "8",
                            "--mfu", "0.4", "--price-per-hour", "2", "--precision", "bf16", "--recompute", "none",
                            "--zero", "0", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)  # the whole of stdout is one JSON object
    assert set(REQUIRED) <= set(d)
    assert d["params"] == 675_129_632
    assert d["forward_flops"] == 2 * d["forward_macs"]
    assert d["train_flops"] == 3 * d["forward_flops"] * 400_000 * 256
    assert d["cost"] == d["gpu_hours"] * 2
    assert d["fits"] is True and d["memory_per_gpu_bytes"] > 0
    for key in ("vae_encode", "text_encode", "captioning", "curation"):
        assert key not in d  # data-preparation budgets live under data_prep (none: no --clips given)
    assert d["data_prep"] is None


def test_json_data_prep_keys_with_clips():
    r = runner.invoke(app, ["estimate", "--model", "STDiT-S/2", "--frames", "16", "--height", "128", "--width",
                            "128", "--clips", "1000", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert {"vae_encode", "text_encode", "captioning", "curation"} <= set(d["data_prep"])
    assert d["total_cost"] == d["cost"] + d["data_prep"]["cost"]


def test_table_output_and_bad_input_exit_code():
    r = runner.invoke(app, ["estimate", "--model", "DiT-S/2", "--height", "256", "--width", "256",
                            "--clips", "1000"])
    assert r.exit_code == 0, r.output
    assert "GPU-hours" in r.stdout and "FLOPs = 2 x MACs" in r.stdout
    bad = runner.invoke(app, ["estimate", "--model", "DiT-S/2", "--gpu", "v100", "--json"])
    assert bad.exit_code == 2 and bad.stdout == ""
    assert "unknown GPU" in bad.stderr
    bad = runner.invoke(app, ["estimate", "--model", "DiT-S/2", "--mfu", "0", "--json"])
    assert bad.exit_code == 2 and "(0, 1]" in bad.stderr
    bad = runner.invoke(app, ["estimate", "--model", "STDiT-S/2", "--vae-compression", "4,8"])
    assert bad.exit_code == 2 and "--vae-compression" in bad.stderr


def test_list_gpus_json():
    r = runner.invoke(app, ["estimate", "--list-gpus", "--json"])
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert {g["name"] for g in d["gpus"]} >= {"h100-sxm", "mi300x", "ascend-910b"}
    assert d["aliases"]["h100"] == "h100-sxm"


def test_sweep_writes_json_and_html(tmp_path):
    out = tmp_path / "sweep"
    r = runner.invoke(app, ["estimate", "--model", "STDiT-S/2", "--frames", "16", "--height", "256", "--width",
                            "256", "--clips", "100000", "--sweep", "height=128,256,250", "--sweep", "frames=8,16",
                            "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    points = d["sweep"]
    assert len(points) == 6
    bad = [p for p in points if "error" in p]
    assert len(bad) == 2 and all(p["height"] == 250 for p in bad)  # 250 px is not a multiple of 8
    good = sorted((p for p in points if "error" not in p), key=lambda p: (p["frames"], p["height"]))
    assert good[0]["cost"] < good[1]["cost"] < good[3]["cost"]  # cost grows with resolution and length
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["points"] == points
    page = (out / "sweep.html").read_text()
    assert page.count("<svg") == 2 and "polyline" in page
    try:
        import matplotlib  # noqa: F401  (the [estimate] extra)
    except ImportError:
        assert d["files"]["png"] is None and "no PNG written" in r.stderr
    else:
        assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = runner.invoke(app, ["estimate", "--model", "STDiT-S/2", "--sweep", "depth=1,2"])
    assert r.exit_code == 2 and "AXIS" in r.stderr
