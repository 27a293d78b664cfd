"""Checkpoints: exact resume (the next steps equal the uninterrupted run's), weights_only loading, contents."""

from __future__ import annotations

import torch
from train_helpers import make_latents

from soraprep.train.config import TrainConfig
from soraprep.train.loop import checkpoints, train

TINY = {"hidden_size": 32, "depth": 2, "num_heads": 2}


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), model="STDiT-S/2", model_args=TINY, batch_size=4, micro_batch=2,
                lr=3e-3, warmup_steps=3, ema_decay=0.9, caption_dropout=0.25, log_every=1, ckpt_every=3,
                progress=False, seed=5)
    return TrainConfig(**{**base, **kw})


def test_resume_reproduces_the_next_steps_exactly(tmp_path):
    data = make_latents(tmp_path / "lat", {(3, 2, 4, 4): 5, (3, 1, 4, 6): 3})  # two buckets
    full = train(_cfg(data, tmp_path / "full", steps=6))
    first = train(_cfg(data, tmp_path / "split", steps=3))
    assert [p.name for p in checkpoints(tmp_path / "split")] == ["step-0000003.pt"]
    resumed = train(_cfg(data, tmp_path / "split", steps=6))
    assert resumed.resumed_from == 3
    assert first.losses == {k: full.losses[k] for k in (1, 2, 3)}
    assert resumed.losses == {k: full.losses[k] for k in (4, 5, 6)}  # bit-exact, not approximately
    a = torch.load(full.checkpoint, weights_only=True)
    b = torch.load(resumed.checkpoint, weights_only=True)
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    # the losses moved (the test would be void if nothing trained)
    assert len(set(full.losses.values())) == 6


def test_checkpoint_holds_everything_as_plain_data(tmp_path):
    data = make_latents(tmp_path / "lat", {(3, 2, 4, 4): 4}, labels=0)
    res = train(_cfg(data, tmp_path / "run", steps=2, ckpt_every=2))
    ckpt = torch.load(res.checkpoint, weights_only=True)  # no pickled classes anywhere
    assert ckpt["step"] == 2 and ckpt["world_size"] == 1
    assert set(ckpt) >= {"model", "ema", "optimizer", "step", "config", "model_config", "rng", "data"}
    cfg = TrainConfig.from_dict(ckpt["config"])
    assert cfg == _cfg(data, tmp_path / "run", steps=2, ckpt_every=2)
    mc = ckpt["model_config"]
    assert mc["config_type"] == "video_dit" and mc["in_channels"] == 3 and mc["text_dim"] == 8 and mc["text_len"] == 6
    assert mc["caption_dropout_prob"] == 0.25 and mc["hidden_size"] == 32
    assert ckpt["data"]["latent_shapes"] == [[3, 2, 4, 4]]
    assert set(ckpt["rng"]) >= {"torch", "python", "numpy"}
    # EMA differs from the model after training (decay 0.9), both finite
    assert any(not torch.equal(ckpt["ema"][k], ckpt["model"][k].float()) for k in ckpt["model"])


def test_warmup_and_grad_accumulation_equivalence(tmp_path):
    """batch 4 as 2 micro-batches of 2 gives the same step as one micro-batch of 4."""
    from soraprep.train.loop import Trainer

    data = make_latents(tmp_path / "lat", {(3, 2, 4, 4): 8})
    one = Trainer(_cfg(data, tmp_path / "a", steps=1, micro_batch=4, resume=False))
    two = Trainer(_cfg(data, tmp_path / "b", steps=1, micro_batch=2, resume=False))
    assert (one.accum, two.accum) == (1, 2)
    la, lb = one.forward_backward(0)["loss"], two.forward_backward(0)["loss"]
    assert abs(la - lb) < 1e-6
    for (n, p), (_, q) in zip(one.model.named_parameters(), two.model.named_parameters()):
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-4), n
    assert [one.lr_at(s) for s in range(4)] == [1e-3, 2e-3, 3e-3, 3e-3]


def test_keep_checkpoints_prunes_old_ones(tmp_path):
    data = make_latents(tmp_path / "lat", {(3, 2, 4, 4): 4})
    train(_cfg(data, tmp_path / "run", steps=4, ckpt_every=1, keep_checkpoints=2))
    assert [p.name for p in checkpoints(tmp_path / "run")] == ["step-0000003.pt", "step-0000004.pt"]
