"""DDP on CPU (gloo): 2 processes average to the same gradient as 1 process over the same global batch;
the torchrun entry point trains and checkpoints like a single process does."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import torch
import torch.multiprocessing as mp
import yaml
from train_helpers import make_latents

from soraprep.train.config import TrainConfig
from soraprep.train.loop import Trainer, train

TINY = {"hidden_size": 32, "depth": 2, "num_heads": 2}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cfg(data, out, **kw) -> dict:
    return {"data": str(data), "out": str(out), "model": "STDiT-S/2", "model_args": TINY, "batch_size": 4,
            "lr": 1e-3, "caption_dropout": 0.3, "progress": False, "log_every": 1, "ckpt_every": 100, "seed": 3,
            "device": "cpu", **kw}


def _worker(rank: int, cfg: dict, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    trainer = Trainer(TrainConfig.from_dict(cfg), rank=rank, world_size=2)
    try:
        fb = trainer.forward_backward(0)
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        torch.save({"grads": grads, "loss": fb["loss"], "shapes": fb["shapes"]}, f"{out}/rank{rank}.pt")
    finally:
        trainer.close()


def test_two_gloo_ranks_average_to_the_single_process_gradient(tmp_path):
    data = make_latents(tmp_path / "lat", {(3, 2, 4, 4): 6, (3, 1, 4, 6): 4})
    cfg = _cfg(data, tmp_path / "run", resume=False)
    # adaLN-Zero starts with zero gradients almost everywhere: start from perturbed weights (a "released"
    # bare state dict, which also exercises init_from)
    model = Trainer(TrainConfig.from_dict({**cfg, "out": str(tmp_path / "init")}), world_size=1).model
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    torch.save(model.state_dict(), tmp_path / "init.pt")
    cfg["init_from"] = str(tmp_path / "init.pt")
    mp.spawn(_worker, args=(cfg, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    single = Trainer(TrainConfig.from_dict({**cfg, "out": str(tmp_path / "one")}), rank=0, world_size=1)
    fb = single.forward_backward(0)
    assert single.micro == 4 and r0["shapes"] == r1["shapes"] == fb["shapes"]  # both ranks: same bucket
    assert abs((r0["loss"] + r1["loss"]) / 2 - fb["loss"]) < 1e-6
    grads = {n: p.grad for n, p in single.model.named_parameters() if p.grad is not None}
    assert grads.keys() == r0["grads"].keys() == r1["grads"].keys()
    nonzero = 0
    for n, g in grads.items():
        assert torch.equal(r0["grads"][n], r1["grads"][n]), n  # DDP leaves every rank with the same average
        assert torch.allclose(r0["grads"][n], g, atol=1e-6, rtol=1e-4), n
        nonzero += int(g.abs().sum() > 0)
    assert nonzero > len(grads) // 2  # a real gradient, not zeros everywhere
    # the two ranks saw different halves: their own losses differ
    assert r0["loss"] != r1["loss"]


def test_torchrun_entry_point_matches_one_process(tmp_path):
    data = make_latents(tmp_path / "lat", {(3, 2, 4, 4): 6, (3, 1, 4, 6): 4})
    cfg = _cfg(data, tmp_path / "ddp", steps=3, ckpt_every=3)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "soraprep.train", "--config", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    one = train(TrainConfig.from_dict({**cfg, "out": str(tmp_path / "one")}))
    assert [r["step"] for r in log] == [1, 2, 3]
    for r in log:
        assert abs(r["loss"] - one.losses[r["step"]]) < 1e-5 * max(1.0, one.losses[r["step"]])
    a = torch.load(tmp_path / "ddp" / "checkpoints" / "step-0000003.pt", weights_only=True)
    b = torch.load(one.checkpoint, weights_only=True)
    assert a["world_size"] == 2 and a["step"] == 3
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-5), k
