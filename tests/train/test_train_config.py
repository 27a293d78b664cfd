"""Config: YAML keys are the dataclass fields, unknown keys fail with the valid list (CLI exit 2); every
model family x objective trains through the same loop; released-checkpoint init; options."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from train_helpers import make_latents
from typer.testing import CliRunner

from soraprep.cli import app
from soraprep.train.config import ConfigError, TrainConfig, load_train_config
from soraprep.train.loop import Trainer, train

runner = CliRunner()


def test_unknown_and_bad_keys_fail_with_a_fix(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"data": "x", "out": "y", "learning_rate": 1e-4}))
    with pytest.raises(ConfigError, match=r"learning_rate.*valid keys.*'lr'"):
        load_train_config(path)
    res = runner.invoke(app, ["train", "--config", str(path)])
    assert res.exit_code == 2 and "learning_rate" in " ".join(res.output.split())
    with pytest.raises(ConfigError, match="needs"):
        TrainConfig.from_dict({"out": "y"})
    with pytest.raises(ConfigError, match="model_args.*hidden.*valid"):
        TrainConfig(data="x", out="y", model="DiT-S/2", model_args={"hidden": 3})
    with pytest.raises(ConfigError, match="unknown model"):
        TrainConfig(data="x", out="y", model="DiT-Q/2")
    with pytest.raises(ConfigError, match="objective"):
        TrainConfig(data="x", out="y", objective="flow")
    with pytest.raises(ConfigError, match="multiple of micro_batch"):
        TrainConfig(data="x", out="y", batch_size=6, micro_batch=4).accumulation(1)
    assert TrainConfig(data="x", out="y", batch_size=8, micro_batch=2).accumulation(2) == (2, 2)
    cfg = TrainConfig(data="x", out="y", model_args={"depth": 2}, adam_betas=(0.9, 0.95))
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # round-trips as plain JSON


def test_data_mismatch_fails_loud(tmp_path):
    video = make_latents(tmp_path / "v", {(3, 2, 4, 4): 4})
    with pytest.raises(ConfigError, match="image model.*--frames 1"):
        Trainer(TrainConfig(data=str(video), out=str(tmp_path / "o"), model="DiT-S/2"))
    with pytest.raises(ConfigError, match="in_channels.*does not match"):
        Trainer(TrainConfig(data=str(video), out=str(tmp_path / "o"), model="STDiT-S/2",
                            model_args={"in_channels": 4, "hidden_size": 32, "depth": 1, "num_heads": 2}))
    with pytest.raises(ConfigError, match="diffusion_args"):
        Trainer(TrainConfig(data=str(video), out=str(tmp_path / "o"), model="STDiT-S/2", diffusion_args={"steps": 3},
                            model_args={"hidden_size": 32, "depth": 1, "num_heads": 2}))


TINY_IMG = {"hidden_size": 32, "depth": 2, "num_heads": 2, "patch_size": 2}


@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory):
    from train_helpers import make_text_encoder

    return make_text_encoder(tmp_path_factory.mktemp("t5"))


@pytest.mark.parametrize("model,objective,text,extra", [
    ("DiT-S/2", "ddpm", False, {}),                                    # class-conditional DiT, learned sigma
    ("DiT-S/2", "ddpm", True, {"activation_checkpointing": True}),     # pooled-text DiT
    ("SiT-S/2", "transport", False, {"precision": "bf16"}),           # SiT (bf16 autocast on CPU)
    ("U-ViT-L/2", "ddpm", False, {}),                                  # U-ViT with long skips
    ("VideoDiT-S/2", "transport", True, {}),                           # full spacetime attention
])
def test_every_family_trains_and_samples(tmp_path, text_encoder, model, objective, text, extra):
    from soraprep.train.sample import sample

    frames = 2 if "VideoDiT" in model else 1
    data = make_latents(tmp_path / "lat", {(3, frames, 4, 4): 6}, text=(5, 16) if text else None,
                        labels=0 if text else 3)
    args = dict(TINY_IMG) if "U-ViT" not in model else {"hidden_size": 32, "depth": 2, "num_heads": 2}
    if "VideoDiT" in model:
        args.pop("patch_size")
    res = train(TrainConfig(data=str(data), out=str(tmp_path / "run"), model=model, model_args=args,
                            objective=objective, steps=4, batch_size=2, ckpt_every=4, progress=False, **extra))
    assert sorted(res.losses) == [1, 2, 3, 4] and all(torch.isfinite(torch.tensor(v)) for v in res.losses.values())
    # text models take the text encoder path (the synthetic data names none); class models take labels
    kw = {"prompts": ["a red car", "dog runs"], "text_encoder": str(text_encoder)} if text else \
        {"class_labels": [0, 2]}
    out = sample(res.checkpoint, tmp_path / "s", steps=3, sampler="ddim" if objective == "ddpm" else "ode",
                 cfg_scale=2.0, **kw)
    assert out.frames.shape == (2, frames, 4, 4, 3)  # autoencoder 'none': latents are pixels
    assert out.videos[0].is_file() and out.grid.is_file()


def test_activation_checkpointing_gives_the_same_gradient(tmp_path):
    data = make_latents(tmp_path / "lat", {(3, 2, 4, 4): 4})
    grads = []
    for ckpt in (False, True):
        tr = Trainer(TrainConfig(data=str(data), out=str(tmp_path / f"o{ckpt}"), model="STDiT-S/2", batch_size=4,
                                 model_args={"hidden_size": 32, "depth": 2, "num_heads": 2}, progress=False,
                                 activation_checkpointing=ckpt, init_from=None))
        assert ("forward" in vars(tr.model.blocks[0])) == ckpt  # blocks wrapped only when asked
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            for p in tr.model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
        tr.forward_backward(0)
        grads.append({n: p.grad.clone() for n, p in tr.model.named_parameters() if p.grad is not None})
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6), n


def test_init_from_a_released_style_dit_state_dict(tmp_path):
    """A bare state dict (as DiT-XL-2-256x256.pt) initialises the model; a label table of another size and
    positions of another resolution keep their fresh init and are reported."""
    from soraprep.models import MODELS

    data = make_latents(tmp_path / "lat", {(4, 1, 8, 8): 4}, text=None, labels=3)
    released = MODELS["DiT-S/2"](hidden_size=32, depth=2, num_heads=2, input_size=16, num_classes=10)
    with torch.no_grad():
        for p in released.parameters():
            p.add_(0.1)
    torch.save(released.state_dict(), tmp_path / "DiT-tiny.pt")
    tr = Trainer(TrainConfig(data=str(data), out=str(tmp_path / "o"), model="DiT-S/2", progress=False, batch_size=2,
                             model_args={"hidden_size": 32, "depth": 2, "num_heads": 2},
                             init_from=str(tmp_path / "DiT-tiny.pt")))
    rep = tr.init_report
    assert set(rep["shape_mismatch"]) == {"pos_embed", "y_embedder.embedding_table.weight"}
    own, ref = tr.model.state_dict(), released.state_dict()
    for k in rep["loaded"]:
        assert torch.equal(own[k], ref[k]), k
    assert torch.equal(tr.ema.state_dict()["blocks.0.attn.qkv.weight"], ref["blocks.0.attn.qkv.weight"])
    with pytest.raises(ConfigError, match="no tensor matches"):
        torch.save({"unrelated": torch.zeros(3)}, tmp_path / "bad.pt")
        Trainer(TrainConfig(data=str(data), out=str(tmp_path / "o2"), model="DiT-S/2", init_from=str(tmp_path / "bad.pt"),
                            model_args={"hidden_size": 32, "depth": 2, "num_heads": 2}))
