"""The training loop: one loop for every soraprep backbone x objective, on 1 process or under torchrun.

    torchrun --nproc_per_node 8 -m soraprep.train --config train.yaml     # DDP: NCCL on GPU, gloo on CPU
    soraprep train --config train.yaml                                     # one process

AdamW with linear warmup, global grad-norm clipping, gradient accumulation (``batch_size`` = ``micro_batch``
x ranks x accumulation), bf16 autocast where supported, an fp32 EMA, optional activation checkpointing.

Determinism: the data order, the caption dropout, the diffusion timesteps and the noise of every sample
derive from ``(seed, step, position in the step's global batch)`` (:mod:`soraprep.train.data`), so
N ranks with micro-batch B, or one rank accumulating N micro-batches of B, compute the same gradient as one
rank with N x B, and a resumed run's next step equals the uninterrupted run's. Checkpoints (``OUT/checkpoints/step-0000100.pt``, loadable with
``torch.load(weights_only=True)``) hold model, EMA, optimizer, step, RNG states and the full config as
plain dicts. Logs: ``OUT/log.jsonl`` (loss, lr, grad norm, samples/s, tokens/s, FLOP/s from the compute
estimator, MFU when the peak is known).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from soraprep.storage.files import atomic_write
from soraprep.train.config import ConfigError, TrainConfig
from soraprep.train.data import BatchPlan, LatentData, micro_positions, model_inputs, step_draws
from soraprep.train.setup import (
    enable_activation_checkpointing,
    flops_per_sample,
    has_null_condition,
    load_init,
    make_objective,
    model_config_for,
    peak_flops,
    timesteps_from_uniform,
)

CKPT_DIR = "checkpoints"


@dataclass
class TrainResult:
    out: Path
    step: int
    losses: dict[int, float] = field(default_factory=dict)  # step -> loss (global mean) of the steps run here
    checkpoint: Path | None = None
    resumed_from: int | None = None
    unloadable_checkpoints: list[tuple[Path, str]] = field(default_factory=list)  # skipped at resume


def _rng_state(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def checkpoints(out: str | Path) -> list[Path]:
    """Committed checkpoints of a run, oldest first."""
    return sorted((Path(out) / CKPT_DIR).glob("step-*.pt"))


CHECKPOINT_KEYS = ("model", "ema", "optimizer", "step", "model_config", "rng")


def _read_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """``torch.load`` plus a check that every part a resume needs is there (ValueError if not)."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(ckpt, dict):
        raise ValueError(f"not a soraprep checkpoint (a {type(ckpt).__name__})")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"not a soraprep training checkpoint: no {missing}")
    return ckpt


class Trainer:
    """Set up from a config (process group, data, model, EMA, optimizer, resume); ``run()`` trains.

    ``rank`` / ``world_size`` default to torchrun's environment (``RANK``, ``WORLD_SIZE``).
    """

    def __init__(self, config: TrainConfig, *, rank: int | None = None, world_size: int | None = None):
        self.cfg = cfg = config
        self.world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
        self.rank = int(os.environ.get("RANK", 0)) if rank is None else rank
        local_rank = int(os.environ.get("LOCAL_RANK", self.rank))
        use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device: cuda, but torch sees no GPU (use device: auto or cpu)")
        self.device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        self.distributed = self.world_size > 1
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo", rank=self.rank, world_size=self.world_size)
        self.micro, self.accum = cfg.accumulation(self.world_size)
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and use_cuda and torch.cuda.is_bf16_supported())

        torch.manual_seed(cfg.seed)  # model init: identical on every rank (DDP also broadcasts it)
        self.data = LatentData(cfg.data)
        self.plan = BatchPlan(self.data.buckets, global_batch=cfg.batch_size, seed=cfg.seed)
        self.model_config = model_config_for(cfg, self.data)
        from soraprep.models import build_model

        self.model = build_model(self.model_config).to(self.device)
        self.init_report = load_init(self.model, cfg.init_from) if cfg.init_from else None
        self.ema = copy.deepcopy(self.model).float().eval().requires_grad_(False)
        if cfg.activation_checkpointing:  # after the EMA copy: the EMA keeps plain forwards
            enable_activation_checkpointing(self.model)
        self.objective = make_objective(cfg.objective, cfg.transport_args if cfg.objective == "transport"
                                        else cfg.diffusion_args, self.model_config)
        self.cfg_dropout = has_null_condition(self.model_config) and cfg.caption_dropout > 0
        if not self.cfg_dropout:  # the null caption is never used: freeze it (DDP rejects unused parameters)
            for name, p in self.model.named_parameters():
                if name.endswith(("y_embedding", "null_embedding")):
                    p.requires_grad_(False)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.adam_betas),
                                           weight_decay=cfg.weight_decay)
        self.ddp = self.model
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(self.model, device_ids=[self.device.index] if use_cuda else None)
        self.step = 0
        self.resumed_from: int | None = None
        self.unloadable_checkpoints: list[tuple[Path, str]] = []  # skipped at resume: (file, why)
        if cfg.resume and checkpoints(cfg.out):
            self.resume()
        self.peak = peak_flops(cfg, self.device, self.bf16)
        self._flops: dict[tuple[int, ...], tuple[float, int]] = {}

    # ---- one optimizer step ---------------------------------------------------------------------

    def lr_at(self, step: int) -> float:
        if self.cfg.warmup_steps <= 0:
            return self.cfg.lr
        return self.cfg.lr * min(1.0, (step + 1) / self.cfg.warmup_steps)

    def _autocast(self):
        if not self.bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def forward_backward(self, step: int) -> dict[str, float]:
        """Gradients of optimizer step ``step`` (0-based) accumulated in ``.grad``; returns this rank's mean
        loss, samples and latent shapes seen."""
        self.ddp.train()
        total, samples, shapes = 0.0, 0, []
        global_batch = self.plan.global_batch_at(step)
        for k in range(self.accum):
            pos = micro_positions(k, rank=self.rank, world_size=self.world_size, micro=self.micro)
            batch = self.data.batch(global_batch[pos.start:pos.stop])
            shape = tuple(batch["latents"].shape[1:])
            draws = step_draws(self.cfg.seed, step, pos, latent_shape=shape, caption_dropout=self.cfg.caption_dropout)
            batch = {k2: v.to(self.device, non_blocking=True) for k2, v in batch.items()}
            x, kw = model_inputs(self.model_config, batch, draws["drop"].to(self.device) if self.cfg_dropout else None)
            noise = draws["noise"].to(self.device).reshape(x.shape)
            t = timesteps_from_uniform(self.objective, draws["u"]).to(self.device)
            sync = nullcontext() if (not self.distributed or k == self.accum - 1) else self.ddp.no_sync()
            with sync:
                with self._autocast():
                    terms = self.objective.training_losses(self.ddp, x, kw, t=t, noise=noise)
                loss = terms["loss"].float().mean()
                (loss / self.accum).backward()
            total += float(loss.detach())
            samples += x.shape[0]
            shapes.append(shape)
        return {"loss": total / self.accum, "samples": samples, "shapes": shapes}

    def optimizer_step(self, step: int) -> float:
        """Clip, AdamW step with the warmup lr of ``step``, zero grads, EMA update; returns the grad norm."""
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr_at(step)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.cfg.grad_clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        else:
            norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._update_ema()
        return norm

    @torch.no_grad()
    def _update_ema(self) -> None:
        d = self.cfg.ema_decay
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.mul_(d).add_(p.detach().float(), alpha=1 - d)
        for e, b in zip(self.ema.buffers(), self.model.buffers()):
            e.copy_(b)

    # ---- checkpoints ----------------------------------------------------------------------------

    def checkpoint_dict(self) -> dict[str, Any]:
        idx = self.data.index
        return {
            "model": self.model.state_dict(), "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(), "step": self.step,
            "config": self.cfg.to_dict(), "model_config": self.model_config.to_dict(),
            "data": {"folder": str(Path(self.cfg.data).resolve()), "latent_scale": self.data.scale,
                     "latent_shapes": [list(s) for s in self.data.latent_shapes],
                     "autoencoder": idx["autoencoder"], "text_encoder": idx["text_encoder"],
                     "num_classes": idx.get("num_classes", 0)},
            "rng": _rng_state(self.device), "world_size": self.world_size,
        }

    def save_checkpoint(self) -> Path | None:
        """Rank 0 writes ``OUT/checkpoints/step-XXXXXXX.pt`` atomically; every rank waits for it."""
        path = Path(self.cfg.out) / CKPT_DIR / f"step-{self.step:07d}.pt"
        if self.rank == 0:
            ckpt = self.checkpoint_dict()
            atomic_write(path, lambda tmp: torch.save(ckpt, tmp))
            if self.cfg.keep_checkpoints:
                for old in checkpoints(self.cfg.out)[: -self.cfg.keep_checkpoints]:
                    old.unlink(missing_ok=True)
        if self.distributed:
            dist.barrier()
        return path

    def resume(self) -> None:
        """Load the newest checkpoint that loads; a truncated or empty newer one (a run killed while the
        disk filled, a copy cut short) is skipped with a message, never a crash. A checkpoint of another
        model still fails loud (ConfigError): that is a wrong ``out`` folder, not a damaged file."""
        found = checkpoints(self.cfg.out)
        for path in reversed(found):
            try:
                ckpt = _read_checkpoint(path, self.device)
            except Exception as exc:  # noqa: BLE001 - whatever torch.load raises on a damaged file
                why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"[:200]
                self.unloadable_checkpoints.append((path, why))
                self._say(f"warning: checkpoint {path} cannot be loaded ({why}); trying an older one")
                continue
            self._apply_checkpoint(path, ckpt)
            if self.unloadable_checkpoints:
                self._say(f"resuming from {path.name} (step {self.step}), the newest loadable checkpoint")
            return
        self._say(f"warning: none of the {len(found)} checkpoints in {Path(self.cfg.out) / CKPT_DIR} can be "
                  "loaded; starting from step 0")

    def _say(self, message: str) -> None:
        if self.rank == 0:
            print(message, file=sys.stderr, flush=True)

    def load_checkpoint(self, path: str | Path) -> None:
        self._apply_checkpoint(Path(path), _read_checkpoint(Path(path), self.device))

    def _apply_checkpoint(self, path: Path, ckpt: dict[str, Any]) -> None:
        if ckpt["model_config"] != self.model_config.to_dict():
            raise ConfigError(f"{path} holds a different model ({ckpt['model_config']}); "
                              "use another `out` folder or `resume: false`")
        self.model.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step = self.resumed_from = int(ckpt["step"])
        _set_rng_state(ckpt["rng"], self.device)

    # ---- the loop -------------------------------------------------------------------------------

    def flops(self, shape: tuple[int, ...]) -> tuple[float, int]:
        if shape not in self._flops:
            self._flops[shape] = flops_per_sample(self.model_config, shape)
        return self._flops[shape]

    def run(self) -> TrainResult:
        cfg = self.cfg
        out = Path(cfg.out)
        result = TrainResult(out, self.step, resumed_from=self.resumed_from,
                             unloadable_checkpoints=list(self.unloadable_checkpoints))
        if self.rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(json.dumps({"train": cfg.to_dict(),
                                                         "model": self.model_config.to_dict()}, indent=1))
        log = open(out / "log.jsonl", "a") if self.rank == 0 else None  # noqa: SIM115 - closed below
        bar = _progress(cfg.progress and self.rank == 0, cfg.steps, self.step)
        window = {"loss": 0.0, "n": 0, "samples": 0, "flops": 0.0, "tokens": 0.0, "t0": time.perf_counter()}
        try:
            while self.step < cfg.steps:
                fb = self.forward_backward(self.step)
                norm = self.optimizer_step(self.step)
                loss = fb["loss"]
                if self.distributed:
                    t = torch.tensor([loss], dtype=torch.float64, device=self.device)
                    dist.all_reduce(t)
                    loss = float(t) / self.world_size
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss} at step {self.step + 1}: lower lr or enable grad_clip")
                self.step += 1
                result.losses[self.step] = loss
                per = [self.flops(s) for s in fb["shapes"]]
                window["loss"] += loss
                window["n"] += 1
                window["samples"] += fb["samples"] * self.world_size
                window["flops"] += sum(f for f, _ in per) * self.micro * self.world_size
                window["tokens"] += sum(t for _, t in per) * self.micro * self.world_size
                if bar is not None:
                    bar[0].update(bar[1], completed=self.step, loss=f"{loss:.4f}")
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    dt = max(time.perf_counter() - window["t0"], 1e-9)
                    rec = {"step": self.step, "loss": window["loss"] / window["n"], "last_loss": loss,
                           "lr": self.lr_at(self.step - 1), "grad_norm": norm,
                           "epoch": self.step / self.plan.batches_per_epoch,
                           "samples_per_s": window["samples"] / dt, "tokens_per_s": window["tokens"] / dt,
                           "flops_per_s": window["flops"] / dt,
                           "mfu": window["flops"] / dt / (self.peak * self.world_size) if self.peak else None,
                           "step_time_s": dt / window["n"]}
                    if log is not None:
                        log.write(json.dumps(rec) + "\n")
                        log.flush()
                    if bar is not None:  # one plain line per log interval (kept in non-interactive logs)
                        from soraprep.estimate.plan import fmt_si

                        mfu = f" mfu {100 * rec['mfu']:.1f}%" if rec["mfu"] else ""
                        bar[0].console.print(
                            f"step {self.step} loss {rec['loss']:.4f} lr {rec['lr']:.3g} grad {norm:.3g} "
                            f"{rec['samples_per_s']:.1f} samples/s {rec['tokens_per_s']:.0f} tokens/s "
                            f"{fmt_si(rec['flops_per_s'], 'FLOP/s')}{mfu}", highlight=False, soft_wrap=True)
                    window = {"loss": 0.0, "n": 0, "samples": 0, "flops": 0.0, "tokens": 0.0,
                              "t0": time.perf_counter()}
                if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                    result.checkpoint = self.save_checkpoint()
        finally:
            if bar is not None:
                bar[0].stop()
            if log is not None:
                log.close()
        result.step = self.step
        if result.checkpoint is None and checkpoints(out):
            result.checkpoint = checkpoints(out)[-1]
        return result

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _progress(enabled: bool, total: int, done: int):
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                   TimeRemainingColumn(), console=Console(stderr=True))
    task = bar.add_task("train", total=total, completed=done, loss="-")
    bar.start()
    return bar, task


def train(config: TrainConfig) -> TrainResult:
    """Train (or resume) the run ``config`` describes; under torchrun every rank calls this."""
    trainer = Trainer(config)
    try:
        return trainer.run()
    finally:
        trainer.close()
