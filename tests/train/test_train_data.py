"""Bucketed batches: one shape per batch, deterministic from the seed, every clip once per epoch, rank and
accumulation splits that partition the global batch; per-sample draws independent of the split."""

from __future__ import annotations

import numpy as np
import torch
from train_helpers import make_latents

from soraprep.models.layers import pool_text
from soraprep.train.data import BatchPlan, LatentData, micro_positions, model_inputs, step_draws


def test_plan_is_bucketed_deterministic_and_covers_each_epoch():
    buckets = ["a"] * 7 + ["b"] * 4 + ["c"] * 1
    plan = BatchPlan(buckets, global_batch=3, seed=1)
    assert plan.batches_per_epoch == 3 + 2 + 1  # ceil(7/3) + ceil(4/3) + ceil(1/3)
    epoch0 = [plan.global_batch_at(s) for s in range(6)]
    for b in epoch0:
        assert len(b) == 3 and len({buckets[i] for i in b}) == 1  # one bucket per batch
    seen = np.concatenate(epoch0)
    assert set(seen.tolist()) == set(range(12))  # every clip at least once; short buckets wrap around
    again = BatchPlan(buckets, global_batch=3, seed=1)
    assert all(np.array_equal(again.global_batch_at(s), epoch0[s]) for s in range(6))
    assert np.array_equal(again.global_batch_at(8), plan.global_batch_at(8))  # random access = resume
    other = BatchPlan(buckets, global_batch=3, seed=2)
    assert any(not np.array_equal(other.global_batch_at(s), epoch0[s]) for s in range(6))
    epoch1 = [plan.global_batch_at(s) for s in range(6, 12)]
    assert any(not np.array_equal(a, b) for a, b in zip(epoch0, epoch1))  # reshuffled each epoch


def test_rank_and_accumulation_slices_partition_the_global_batch():
    for world, accum in [(1, 1), (2, 1), (1, 2), (2, 2)]:
        micro = 8 // (world * accum)
        pos = [p for k in range(accum) for r in range(world)
               for p in micro_positions(k, rank=r, world_size=world, micro=micro)]
        assert sorted(pos) == list(range(8))


def test_step_draws_do_not_depend_on_the_split():
    whole = step_draws(4, 10, range(0, 4), latent_shape=(3, 2, 2), caption_dropout=0.5)
    parts = [step_draws(4, 10, range(a, a + 2), latent_shape=(3, 2, 2), caption_dropout=0.5) for a in (0, 2)]
    for key in ("drop", "u", "noise"):
        assert torch.equal(whole[key], torch.cat([p[key] for p in parts]))
    later = step_draws(4, 11, range(0, 4), latent_shape=(3, 2, 2), caption_dropout=0.5)
    assert not torch.equal(whole["noise"], later["noise"])
    many = step_draws(0, 0, range(2000), latent_shape=(1,), caption_dropout=0.25)
    assert abs(many["drop"].float().mean().item() - 0.25) < 0.04  # dropout rate as configured
    assert 0 <= many["u"].min() and many["u"].max() < 1


def test_latent_data_batches_and_model_inputs(tmp_path):
    from soraprep.models.config import DiTConfig, UViTConfig, VideoDiTConfig

    folder = make_latents(tmp_path / "lat", {(3, 2, 4, 4): 3, (3, 1, 4, 6): 2}, labels=5)
    data = LatentData(folder)
    assert len(data) == 5 and data.latent_shapes == [(3, 2, 4, 4), (3, 1, 4, 6)]
    assert data.buckets == ["3x2x4x4"] * 3 + ["3x1x4x6"] * 2
    b = data.batch([1, 0])
    raw = torch.load(folder / "shard-00000.pt", weights_only=True)
    assert torch.equal(b["latents"], raw["latents"][[1, 0]])  # latent_scale 1
    assert b["text"].shape == (2, 6, 8) and b["mask"].dtype == torch.bool and b["labels"].shape == (2,)
    drop = torch.tensor([True, False])
    x, kw = model_inputs(VideoDiTConfig(in_channels=3, text_dim=8, text_len=6), b, drop)
    assert x.shape == (2, 3, 2, 4, 4) and kw["force_drop_ids"].tolist() == [1, 0] and kw["y"].shape == (2, 6, 8)
    x, kw = model_inputs(VideoDiTConfig(conditioning="class", num_classes=5), b, None)
    assert torch.equal(kw["y"], b["labels"]) and "force_drop_ids" not in kw
    img = data.batch([3, 4])
    x, kw = model_inputs(DiTConfig(text_dim=8), img, drop)
    assert x.shape == (2, 3, 4, 6) and torch.allclose(kw["y"], pool_text(img["text"], img["mask"]))
    x, kw = model_inputs(UViTConfig(num_classes=6), img, drop)
    assert kw["y"].tolist() == [5, int(img["labels"][1])]  # dropped -> the null label (num_classes - 1)
    try:
        model_inputs(DiTConfig(), b, None)
        raise AssertionError("an image model must refuse multi-frame latents")
    except ValueError as exc:
        assert "--frames 1" in str(exc)
    # masked mean pooling
    t = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert pool_text(t, torch.tensor([[True, True, False]])).item() == 2.0
