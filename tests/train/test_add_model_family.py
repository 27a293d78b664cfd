"""Adding a model preset family is one model + one config + a test: this file is all three.

It defines a tiny new backbone (a per-patch MLP, class-conditional, image latents) and its config, and
registers them. Nothing else in soraprep is edited, yet the registry builds it, the compute estimator
counts its parameters and FLOPs (checked against the real module), the trainer trains it and the sampler
samples it, through the same public API every other family uses (docs/architecture.md, "How to add a
model preset family").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from torch import nn
from train_helpers import make_latents

from soraprep.estimate.flops import Activations, ModelCount, Tally, register_counter
from soraprep.models import MODELS, PRESETS, ModelConfig, build_model, register_config, register_preset
from soraprep.models.config import CONFIG_TYPES, square_image_latent

# ---------------------------------------------------------------------------------------------------------
# 1. the model file (would be soraprep/models/patch_mlp.py)
# ---------------------------------------------------------------------------------------------------------


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of the timestep: (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (N, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class PatchMLP(nn.Module):
    """Each p x p latent patch is a token; tokens never mix. ``forward(x, t, y)``: (N, C, H, W) -> same."""

    def __init__(self, config: PatchMLPConfig):
        super().__init__()
        self.config = c = config
        patch = c.patch_size**2 * c.in_channels
        self.x_embedder = nn.Linear(patch, c.hidden_size)
        self.t_embedder = nn.Linear(c.freq_dim, c.hidden_size)
        self.y_embedder = nn.Embedding(c.num_classes + 1, c.hidden_size)  # + the null label (row num_classes)
        self.fc1 = nn.Linear(c.hidden_size, c.mlp_hidden)
        self.fc2 = nn.Linear(c.mlp_hidden, patch)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n, ch, h, w = x.shape
        p = self.config.patch_size
        tokens = x.reshape(n, ch, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(n, -1, p * p * ch)
        cond = self.t_embedder(timestep_features(t, self.config.freq_dim)) + self.y_embedder(y)  # (N, D)
        z = self.x_embedder(tokens) + cond[:, None]  # (N, L, D)
        out = self.fc2(torch.nn.functional.gelu(self.fc1(z)))  # (N, L, p*p*C)
        return out.reshape(n, h // p, w // p, p, p, ch).permute(0, 5, 1, 3, 2, 4).reshape(n, ch, h, w)


# ---------------------------------------------------------------------------------------------------------
# 2. its config (would be a class in soraprep/models/config.py, or its own file imported from there)
# ---------------------------------------------------------------------------------------------------------


@register_config
@dataclass(frozen=True)
class PatchMLPConfig(ModelConfig):
    """A per-patch MLP denoiser. Field names are the ones every soraprep config uses."""

    config_type: ClassVar[str] = "test_patch_mlp"
    latent_layout: ClassVar[str] = "image"  # (N, C, H, W) square latents

    input_size: int = 8  # latent side
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 32
    mlp_hidden: int = 64
    freq_dim: int = 16  # sinusoidal timestep features
    num_classes: int = 10  # labels 0..9; row 10 is the null label
    class_dropout_prob: float = 0.1

    @property
    def num_tokens(self) -> int:
        return (self.input_size // self.patch_size) ** 2

    def build(self) -> Any:
        return PatchMLP(self)

    @property
    def conditioning(self) -> str:
        return "class"

    @property
    def label_classes(self) -> int:
        return self.num_classes

    @property
    def null_condition(self) -> bool:
        return self.class_dropout_prob > 0

    def fit_data(self, args, data, caption_dropout, fixed):
        c, side = square_image_latent(data)
        fixed("in_channels", c)
        fixed("input_size", side)
        args.setdefault("num_classes", max(1, int(data.index.get("num_classes") or 0)))
        args["class_dropout_prob"] = caption_dropout
        return self.replace(**args)

    def condition_inputs(self, batch, drop):
        y = batch["labels"]
        return {"y": y if drop is None else y.masked_fill(drop, self.num_classes)}




# ---------------------------------------------------------------------------------------------------------
# 3. its FLOP counter, registered in the estimator (would be soraprep/estimate/flops_patch_mlp.py)
# ---------------------------------------------------------------------------------------------------------


@register_counter("test_patch_mlp")
def count_patch_mlp(cfg: PatchMLPConfig, name: str | None = None) -> ModelCount:
    n, d, h = cfg.num_tokens, cfg.hidden_size, cfg.mlp_hidden
    patch = cfg.patch_size**2 * cfg.in_channels
    t = Tally()
    t.linear("x_embedder", n, patch, d)
    t.linear("t_embedder", 1, cfg.freq_dim, d, kind="per_sample", component="conditioning")
    t.param("y_embedder", (cfg.num_classes + 1) * d, "lookup")
    t.linear("fc1", n, d, h)
    t.linear("fc2", n, h, patch)
    io = cfg.in_channels * cfg.input_size**2
    act = Activations(none=io + n * (d + 2 * h), selective=io + n * (d + h), full_stored=io, full_working=n * 2 * h)
    return ModelCount(name or "PatchMLP", cfg, (cfg.in_channels, 1, cfg.input_size, cfg.input_size), n, 0,
                      tuple(t.params), tuple(t.terms), act)


# ---------------------------------------------------------------------------------------------------------
# 4. its presets, and the test
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def presets():
    register_preset("PatchMLP-S/2", PatchMLPConfig())
    register_preset("PatchMLP-B/2", PatchMLPConfig(hidden_size=64, mlp_hidden=256))
    yield
    for name in ("PatchMLP-S/2", "PatchMLP-B/2"):
        del PRESETS[name]
    del CONFIG_TYPES[PatchMLPConfig.config_type]


def test_registered_family_builds_through_the_registry():
    assert {"PatchMLP-S/2", "PatchMLP-B/2"} <= set(MODELS)
    model = MODELS["PatchMLP-S/2"](hidden_size=16).eval()
    assert isinstance(model, PatchMLP) and model.config.hidden_size == 16
    x = torch.randn(2, 4, 8, 8)
    assert model(x, torch.tensor([1, 500]), torch.tensor([0, 10])).shape == x.shape
    with pytest.raises(TypeError, match="unexpected keyword"):
        MODELS["PatchMLP-S/2"](embed_dim=3)


def _linear_macs(model: nn.Module, *inputs) -> int:
    """Ground truth: multiply-accumulates of every nn.Linear, measured by hooks during one forward."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        total += inp[0].numel() // inp[0].shape[-1] * mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        model(*inputs)
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("name", ["PatchMLP-S/2", "PatchMLP-B/2"])
def test_estimator_counts_the_new_family_exactly(name):
    from soraprep.estimate.flops import count_model
    from soraprep.estimate.plan import shaped_config

    cfg = PRESETS[name]
    count = count_model(cfg)
    model = build_model(cfg)
    assert count.params_total == sum(p.numel() for p in model.parameters())
    x = torch.randn(1, 4, cfg.input_size, cfg.input_size)
    assert count.forward_macs == _linear_macs(model, x, torch.tensor([3]), torch.tensor([1]))
    # the estimator sizes it for a clip like any image model (SD VAE: 8x spatial compression)
    big = shaped_config(cfg, frames=1, height=256, width=256, compression=(1, 8, 8))
    assert big.input_size == 32 and count_model(big).tokens == 16 * 16
    with pytest.raises(ValueError, match="image model"):
        shaped_config(cfg, frames=16, height=256, width=256, compression=(1, 8, 8))
    # and the whole plan (compute, memory, time, cost) runs on it by preset name
    from soraprep.estimate.plan import estimate

    plan = estimate(model=name, frames=1, height=256, width=256, clips=1000, steps=100, batch=8).to_dict()
    assert plan["params"] == count.params_total and plan["tokens"] == 256 and plan["gpu_hours"] > 0


def test_new_family_trains_one_step_and_samples(tmp_path):
    from soraprep.models import config_from_dict
    from soraprep.train.config import TrainConfig
    from soraprep.train.loop import checkpoints, train
    from soraprep.train.sample import sample

    data = make_latents(tmp_path / "lat", {(3, 1, 4, 4): 4}, text=None, labels=3)
    res = train(TrainConfig(data=str(data), out=str(tmp_path / "run"), model="PatchMLP-S/2", steps=1, batch_size=2,
                            ckpt_every=1, caption_dropout=0.5, progress=False))
    assert list(res.losses) == [1] and math.isfinite(res.losses[1])
    ckpt = torch.load(checkpoints(tmp_path / "run")[-1], map_location="cpu", weights_only=True)
    mc = config_from_dict(ckpt["model_config"])  # the saved config names the new family
    assert isinstance(mc, PatchMLPConfig) and (mc.in_channels, mc.input_size, mc.num_classes) == (3, 4, 3)
    out = sample(checkpoints(tmp_path / "run")[-1], tmp_path / "samples", class_labels=[0, 2], steps=2,
                 sampler="ddim", cfg_scale=2.0, device="cpu")
    assert out.frames.shape == (2, 1, 4, 4, 3) and len(out.videos) == 2 and out.grid.is_file()
    with pytest.raises(ValueError, match="outside 0..2"):
        sample(checkpoints(tmp_path / "run")[-1], tmp_path / "s2", class_labels=[3], steps=1, device="cpu")
