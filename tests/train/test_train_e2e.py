"""End to end on generated clips: curate -> encode -> train (CLI) -> sample (CLI) -> decode the mp4 back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from soraprep.cli import app
from soraprep.estimate.vae import vqvae_encode_macs
from soraprep.manifest import read_manifest
from soraprep.models.config import config_from_dict
from soraprep.train.latents import encode, read_index
from soraprep.video.io import decode

runner = CliRunner()


@pytest.fixture(scope="module")
def latents(curated):
    out = curated["root"] / "latents"
    res = runner.invoke(app, ["encode", str(curated["manifest"]), "-o", str(out), "--vae", str(curated["vae"]),
                              "--text-encoder", str(curated["text_encoder"]), "--frames", "8", "--size", "32x32",
                              "--text-len", "8", "--shard-size", "3"])
    assert res.exit_code == 0, res.output
    return out


def test_encode_index_shards_and_cost(curated, latents):
    idx = read_index(latents)
    assert idx["num_samples"] == 4 and idx["errors"] == [] and idx["skipped"] == {}
    assert [s["count"] for s in idx["shards"]] == [3, 1]  # shard_size 3
    assert all(s["latent_shape"] == [4, 2, 8, 8] for s in idx["shards"])  # 4-d codes, 8x32x32 / 4x4x4
    assert idx["text_encoder"]["dim"] == 16 and idx["text_encoder"]["max_length"] == 8
    shard = torch.load(latents / idx["shards"][0]["file"], weights_only=True)
    assert shard["latents"].shape == (3, 4, 2, 8, 8) and shard["text"].shape == (3, 8, 16)
    assert shard["mask"].sum(1).tolist() == [8, 4, 5]  # one token per word of the hand-written captions
    # latents are codebook vectors of the VQ-VAE
    vq = torch.load(curated["vae"], weights_only=True)
    codes = vq["model"]["codebook.embeddings"]
    flat = shard["latents"].movedim(1, -1).reshape(-1, 4)
    dist = torch.cdist(flat, codes)
    assert dist.min(1).values.max() < 1e-3
    assert len(set(dist.argmin(1).tolist())) >= 8  # the clips use many codes
    # the estimator's cost sits beside the measured one
    cfg = config_from_dict(vq["config"])
    assert idx["cost"]["estimated_flops"] == 4 * 2 * vqvae_encode_macs(cfg, frames=8, height=32, width=32)
    assert idx["cost"]["measured_autoencoder_s"] > 0
    assert idx["latent_scale"] == pytest.approx(1 / idx["latent_std"])


def test_encode_resumes_committed_shards(curated, latents, tmp_path):
    import shutil

    work = tmp_path / "lat"
    shutil.copytree(latents, work)
    (work / "shard-8x32x32-00001.pt").unlink()  # as if killed before the second shard was committed
    (work / "shard-8x32x32-00001.json").unlink()
    before = (work / "shard-8x32x32-00000.pt").stat().st_mtime_ns
    res = encode(curated["manifest"], work, vae=str(curated["vae"]), text_encoder=str(curated["text_encoder"]),
                 frames=8, size=(32, 32), text_max_length=8, shard_size=3)
    assert (res.reused, res.encoded) == (3, 1)
    assert (work / "shard-8x32x32-00000.pt").stat().st_mtime_ns == before
    a = torch.load(latents / "shard-8x32x32-00001.pt", weights_only=True)
    b = torch.load(work / "shard-8x32x32-00001.pt", weights_only=True)
    assert torch.equal(a["latents"], b["latents"]) and a["clip_ids"] == b["clip_ids"]
    assert read_index(work)["latent_scale"] == pytest.approx(read_index(latents)["latent_scale"])
    assert read_index(work)["captions_missing"] == 0
    # other settings (here the storage dtype) never reuse shards
    res = encode(curated["manifest"], work, vae=str(curated["vae"]), text_encoder=str(curated["text_encoder"]),
                 frames=8, size=(32, 32), text_max_length=8, shard_size=3, dtype="float16")
    assert (res.reused, res.encoded) == (0, 4)
    assert torch.load(work / "shard-8x32x32-00001.pt", weights_only=True)["latents"].dtype == torch.float16


def _train(tmp_path, latents, name, **overrides):
    cfg = {"data": str(latents), "out": str(tmp_path / name), "model": "STDiT-S/2",
           "model_args": {"hidden_size": 64, "depth": 2, "num_heads": 4}, "batch_size": 4, "lr": 1e-3,
           "ema_decay": 0.9, "log_every": 25, "ckpt_every": 1000, "progress": False, **overrides}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = runner.invoke(app, ["train", "--config", str(path)])
    assert res.exit_code == 0, res.output
    log = [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
    return tmp_path / name, log


def test_train_ddpm_then_sample_mp4(tmp_path, latents):
    run, log = _train(tmp_path, latents, "ddpm", steps=300)
    first, last = log[0]["loss"], np.mean([r["loss"] for r in log[-4:]])
    assert last < 0.35 * first, [r["loss"] for r in log]
    assert log[-1]["step"] == 300 and log[-1]["samples_per_s"] > 0 and log[-1]["tokens_per_s"] > 0
    assert log[-1]["tokens_per_s"] == pytest.approx(log[-1]["samples_per_s"] * 32)  # 2x8x8 latents, patch 1x2x2
    ckpt = run / "checkpoints" / "step-0000300.pt"
    out = tmp_path / "samples"
    res = runner.invoke(app, ["sample", str(ckpt), "-o", str(out), "--prompt", "a red car drives along the coast road",
                              "--prompt", "dog runs in park", "--steps", "10", "--cfg", "3", "--sampler", "ddim"])
    assert res.exit_code == 0, res.output
    for i in range(2):
        frames = [f.array for f in decode(out / f"sample-{i:03d}.mp4")]
        assert len(frames) == 8 and frames[0].shape == (32, 32, 3)
    import cv2

    assert cv2.imread(str(out / "grid.png")).shape == (2 * 32, 8 * 32, 3)
    meta = json.loads((out / "samples.json").read_text())
    assert meta["step"] == 300 and meta["cfg_scale"] == 3 and meta["latent_shape"] == [4, 2, 8, 8]
    # the objective decides the sampler family; a mismatch is a usage error
    res = runner.invoke(app, ["sample", str(ckpt), "-o", str(out), "--prompt", "dog", "--sampler", "ode"])
    assert res.exit_code == 2 and "ddim" in " ".join(res.output.split())
    res = runner.invoke(app, ["sample", str(ckpt), "-o", str(out), "--class-label", "1"])
    assert res.exit_code == 2 and "--prompt" in " ".join(res.output.split())


@pytest.mark.parametrize("sampler", ["ode", "sde"])
def test_train_transport_and_sample(tmp_path, latents, sampler):
    run, log = _train(tmp_path, latents, "sit", steps=150, objective="transport",
                      transport_args={"path": "linear", "prediction": "velocity"})
    assert np.mean([r["loss"] for r in log[-2:]]) < 0.5 * log[0]["loss"], [r["loss"] for r in log]
    out = tmp_path / sampler
    res = runner.invoke(app, ["sample", str(run / "checkpoints" / "step-0000150.pt"), "-o", str(out),
                              "--prompt", "dog runs in park", "--steps", "8", "--sampler", sampler, "--cfg", "2"])
    assert res.exit_code == 0, res.output
    assert len([f for f in decode(out / "sample-000.mp4")]) == 8


def test_encode_rows_fail_soft_and_configs_fail_loud(curated, tmp_path):
    from soraprep.manifest import write_manifest

    rows = read_manifest(curated["manifest"])
    broken = dict(rows[0], clip_id="gone", path="clips/nowhere.mp4")
    manifest = curated["manifest"].parent / "with_missing.parquet"
    write_manifest(manifest, [*rows, broken])
    out = tmp_path / "lat"
    args = ["encode", str(manifest), "-o", str(out), "--vae", str(curated["vae"]), "--size", "32x32"]
    res = runner.invoke(app, [*args, "--frames", "8"])
    assert res.exit_code == 1, res.output  # some rows failed, the rest are encoded
    idx = read_index(out)
    assert idx["num_samples"] == 4 and [e["clip_id"] for e in idx["errors"]] == ["gone"]
    res = runner.invoke(app, [*args, "--frames", "40"])  # longer than every 30-frame clip
    assert res.exit_code == 1
    assert all("30 frames" in e["message"] for e in read_index(out)["errors"][:4])
    res = runner.invoke(app, [*args, "--frames", "6"])  # not a multiple of the VQ-VAE's temporal stride 4
    assert res.exit_code == 2 and "temporal factor" in " ".join(res.output.split())
    res = runner.invoke(app, ["encode", str(manifest), "-o", str(tmp_path / "b"), "--vae", str(curated["vae"])])
    assert res.exit_code == 2  # the curated buckets (17 frames) do not fit the VQ-VAE's stride 4
    assert "17 frames" in " ".join(res.output.split()) and "buckets" in res.output
    res = runner.invoke(app, ["encode", str(manifest), "-o", str(out), "--vae", str(tmp_path / "nope.pt")])
    assert res.exit_code == 2 and "not found" in " ".join(res.output.split())


def test_encode_with_a_diffusers_autoencoderkl_folder(curated, tmp_path):
    """A local diffusers AutoencoderKL (tiny, random) encodes frame by frame; the estimator's per-frame
    SD-encoder count is scaled to its channels."""
    diffusers = pytest.importorskip("diffusers")
    from soraprep.estimate.vae import ldm_encoder_macs
    from soraprep.train.autoencoder import load_autoencoder
    from soraprep.train.latents import load_clip

    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4,
                                  norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2)
    vae.save_pretrained(tmp_path / "akl")
    res = encode(curated["manifest"], tmp_path / "lat", vae=str(tmp_path / "akl"), frames=3, size=(32, 48))
    idx = res.index
    assert idx["autoencoder"]["compression"] == [1, 2, 2] and idx["latent_scale"] == pytest.approx(0.18215)
    assert idx["shards"][0]["latent_shape"] == [4, 3, 16, 24]
    macs = ldm_encoder_macs(32, 48, ch=8, ch_mult=(1, 2), num_res_blocks=1, z_channels=4)
    assert idx["cost"]["estimated_flops"] == 2 * 4 * 3 * macs
    shard = torch.load(tmp_path / "lat" / idx["shards"][0]["file"], weights_only=True)
    rows = read_manifest(curated["manifest"])
    clip = torch.from_numpy(load_clip(rows[0], str(curated["manifest"]), (3, 32, 48)))  # (3, 32, 48, 3)
    with torch.no_grad():
        want = vae.encode(clip.permute(0, 3, 1, 2).float() / 127.5 - 1).latent_dist.mode()  # (3, 4, 16, 24)
    assert torch.allclose(shard["latents"][0].permute(1, 0, 2, 3), want, atol=1e-5)
    decoded = load_autoencoder(str(tmp_path / "akl")).decode(shard["latents"][:1])
    assert decoded.shape == (1, 3, 3, 32, 48)


def test_label_column_trains_a_class_conditional_video_dit(curated, tmp_path):
    from soraprep.manifest import write_manifest
    from soraprep.train.data import LatentData

    rows = read_manifest(curated["manifest"])
    for i, r in enumerate(rows):
        r["label"] = [0, 2, 2, 1][i]
    manifest = curated["manifest"].parent / "labelled.parquet"
    write_manifest(manifest, rows)
    res = runner.invoke(app, ["encode", str(manifest), "-o", str(tmp_path / "lat"), "--vae", "none", "--frames", "4",
                              "--size", "16x16", "--label-column", "label"])
    assert res.exit_code == 0, res.output
    data = LatentData(tmp_path / "lat")
    assert data.index["num_classes"] == 3 and sorted(data.batch(range(4))["labels"].tolist()) == [0, 1, 2, 2]
    assert data.latent_shapes == [(3, 4, 16, 16)]  # 'none': pixels are the latents
    _, log = _train(tmp_path, tmp_path / "lat", "cls", steps=2, model="VideoDiT-S/2", log_every=1,
                    model_args={"hidden_size": 32, "depth": 1, "num_heads": 2, "patch_size": [2, 4, 4]})
    ckpt = torch.load(tmp_path / "cls" / "checkpoints" / "step-0000002.pt", weights_only=True)
    assert ckpt["model_config"]["conditioning"] == "class" and ckpt["model_config"]["num_classes"] == 3
    assert ckpt["model_config"]["patch_size"] == [2, 4, 4]
    res = runner.invoke(app, ["sample", str(tmp_path / "cls" / "checkpoints" / "step-0000002.pt"), "-o",
                              str(tmp_path / "s"), "--class-label", "2", "--steps", "2", "--frames", "8"])
    assert res.exit_code == 0, res.output
    assert len(list(decode(tmp_path / "s" / "sample-000.mp4"))) == 8  # a video DiT samples other lengths
    res = runner.invoke(app, ["sample", str(tmp_path / "cls" / "checkpoints" / "step-0000002.pt"), "-o",
                              str(tmp_path / "s"), "--class-label", "7"])
    assert res.exit_code == 2 and "outside" in res.output
