"""End-to-end estimates: training FLOPs/time/cost arithmetic, shapes, buckets, data prep, bad input."""

from __future__ import annotations

import json

import pytest

from soraprep.estimate.flops import count_model
from soraprep.estimate.plan import estimate
from soraprep.estimate.vae import ldm_encoder_macs
from soraprep.models.config import PRESETS


def test_image_preset_defaults_to_sd_vae_latents():
    est = estimate(model="DiT-XL/2", height=256, width=256)
    d = est.to_dict()
    assert d["params"] == 675_129_632
    assert d["shapes"][0]["latent_shape"] == [4, 1, 32, 32]
    assert d["forward_flops"] == 2 * d["forward_macs"] == 2 * count_model(PRESETS["DiT-XL/2"]).forward_macs
    assert d["train_flops"] is None and d["gpu_hours"] is None  # no training amount given
    d512 = estimate(model="DiT-XL/2", height=512, width=512).to_dict()
    assert d512["params"] == 676_014_368 and d512["tokens"] == 1024


def test_training_time_and_cost_arithmetic():
    est = estimate(model="DiT-XL/2", height=256, width=256, steps=1000, batch=64, gpu="a100", num_gpus=4,
                   mfu=0.5, price_per_hour=2.0)
    d = est.to_dict()
    fwd = count_model(PRESETS["DiT-XL/2"]).forward_flops
    assert d["samples"] == 64_000
    assert d["train_flops"] == 3 * fwd * 64_000
    assert d["gpu_hours"] == pytest.approx(d["train_flops"] / (312e12 * 0.5) / 3600)
    assert d["wall_hours"] == pytest.approx(d["gpu_hours"] / 4)
    assert d["cost"] == pytest.approx(d["gpu_hours"] * 2.0)
    assert d["memory"]["micro_batch"] == 16  # 64 / 4 GPUs
    full = estimate(model="DiT-XL/2", height=256, width=256, steps=1000, batch=64, recompute="full").to_dict()
    assert full["train_flops"] == 4 * fwd * 64_000
    assert full["memory_per_gpu_bytes"] < d["memory_per_gpu_bytes"]
    epochs = estimate(model="DiT-XL/2", height=256, width=256, clips=1000, epochs=2.5).to_dict()
    assert epochs["train_flops"] == 3 * fwd * 2500


def test_video_shapes_vae_compression_and_channels():
    est = estimate(model="STDiT-XL/2", frames=17, height=240, width=432, vae_compression=(4, 8, 8),
                   latent_channels=16)
    s = est.to_dict()["shapes"][0]
    assert s["latent_shape"] == [16, 5, 30, 54]  # ceil(17 / 4) = 5 latent frames (causal VAE)
    assert s["tokens"] == 5 * 15 * 27


@pytest.mark.parametrize("kwargs,match", [
    (dict(model="DiT-XL/2", mfu=0), r"\(0, 1\]"),
    (dict(model="DiT-XL/2", mfu=1.5), r"\(0, 1\]"),
    (dict(model="DiT-XL/2", gpu="v100"), "unknown GPU"),
    (dict(model="DiT-XL/2", height=264, width=264), "multiple of 16"),
    (dict(model="DiT-XL/2", height=250, width=250), "multiple of the VAE's spatial factor 8: use 248 or 256"),
    (dict(model="DiT-XL/2", height=256, width=512), "square"),
    (dict(model="DiT-XL/2", frames=16, height=256, width=256), "image model"),
    (dict(model="STDiT-XL/2", frames=16, height=264, width=256), "divisible by patch size 2"),
    (dict(model="No-Such/2"), "unknown model"),
    (dict(model="DiT-XL/2", steps=10), "--steps and --batch"),
    (dict(model="DiT-XL/2", recompute="half"), "--recompute"),
    (dict(model="DiT-XL/2", zero=5), "ZeRO"),
])
def test_bad_input_names_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        estimate(**kwargs)


def test_config_file_heads_not_dividing_width(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: DiT-S/2\nhidden_size: 388\n")
    with pytest.raises(ValueError, match="divisible by num_heads"):
        estimate(config_path=str(bad))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(PRESETS["DiT-B/4"].to_dict()))
    assert estimate(config_path=str(good)).to_dict()["params"] == 130_475_648


def test_buckets_from_manifest_weight_shapes(tmp_path):
    from soraprep.manifest import write_manifest

    rows = [dict(clip_id=f"c{i}", bucket_frames=16, bucket_height=256, bucket_width=256, keep=True) for i in range(3)]
    rows += [dict(clip_id="d0", bucket_frames=32, bucket_height=512, bucket_width=512, keep=True)]
    rows += [dict(clip_id="x", bucket_frames=32, bucket_height=512, bucket_width=512, keep=False)]
    path = tmp_path / "m.parquet"
    write_manifest(path, rows)
    est = estimate(model="STDiT-S/2", buckets=str(path), epochs=2)
    small = count_model(PRESETS["STDiT-S/2"].replace(input_size=(16, 32, 32))).forward_flops
    big = count_model(PRESETS["STDiT-S/2"].replace(input_size=(32, 64, 64))).forward_flops
    d = est.to_dict()
    assert [s["weight"] for s in d["shapes"]] == [0.75, 0.25]
    assert d["samples"] == 8  # 4 kept clips x 2 epochs
    assert d["train_flops"] == pytest.approx(3 * 8 * (0.75 * small + 0.25 * big))
    assert est.largest.frames == 32  # memory is sized for the largest bucket


def test_data_prep_budgets():
    est = estimate(model="STDiT-XL/2", frames=16, height=256, width=256, clips=1000, gpu="h100", prep_mfu=0.5,
                   caption_throughput=2.0, source_hours=100, decode_fps=500, cpu_price_per_hour=0.1)
    p = est.to_dict()["data_prep"]
    assert p["vae_encode"]["flops"] == 1000 * 2 * 16 * ldm_encoder_macs(256, 256)
    assert p["vae_encode"]["gpu_hours"] == pytest.approx(p["vae_encode"]["flops"] / (989e12 * 0.5) / 3600)
    assert p["text_encode"]["flops"] == 2 * 4_762_310_656 * 120 * 1000  # T5-XXL encoder x 120 tokens
    assert p["captioning"]["gpu_hours"] == pytest.approx(1000 / 2.0 / 3600)
    assert p["curation"]["cpu_core_hours"] == pytest.approx(100 * 24 / 500)
    assert p["curation"]["cost"] == pytest.approx(100 * 24 / 500 * 0.1)
    # class-conditional image model: no captions, no text encoder by default
    q = estimate(model="DiT-XL/2", height=256, width=256, clips=10).to_dict()["data_prep"]
    assert q["captioning"]["flops"] == 0 and q["text_encode"]["flops"] == 0
