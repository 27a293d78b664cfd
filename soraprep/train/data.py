"""Cached latents -> bucketed, rank-sharded, seed-deterministic batches with CFG caption dropout.

* :class:`LatentData` reads what ``soraprep encode`` wrote (shards are memory-mapped, not copied).
* :class:`BatchPlan` fixes the order: every epoch, each bucket (frames x height x width of the clip, so
  resolution, length and aspect ratio) is shuffled with ``numpy.random.default_rng([seed, epoch])`` and
  cut into *global* batches of ``batch_size`` samples, one per optimizer step (a short bucket wraps
  around, so no clip is dropped); then the batches are shuffled. Micro-batch ``k`` of rank ``r`` takes
  positions ``(k * ranks + r) * micro ... + micro`` of the step's global batch (:func:`micro_positions`), so
  every rank sees the same shape at the same step, and 1 rank x 4, 2 ranks x 2 and 1 rank x 2 x 2
  accumulation all train on the same samples. Step ``s`` depends only on ``(seed, s)``: resuming needs no
  sampler state.
* :func:`step_draws` gives the per-sample randomness (caption dropout, diffusion timestep, noise) of
  positions of a step's global batch from ``(seed, step, position)``, whatever the number of ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from soraprep.train.config import ConfigError
from soraprep.train.latents import read_index


class LatentData:
    """All samples of a latents folder; ``batch(indices)`` -> dict of stacked tensors."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.index = read_index(folder)
        if not self.index["shards"]:
            raise ConfigError(f"{folder} holds no encoded clips (see its index.json 'skipped' and 'errors')")
        self.scale = float(self.index["latent_scale"])
        self.shards: list[dict[str, Any]] = []
        self.items: list[tuple[int, int]] = []
        self.buckets: list[str] = []
        for s in self.index["shards"]:
            try:
                shard = torch.load(self.folder / s["file"], map_location="cpu", weights_only=True, mmap=True)
            except FileNotFoundError:
                raise
            except Exception as exc:  # noqa: BLE001 - truncated or not a torch file: say which one
                raise ConfigError(f"{self.folder / s['file']} cannot be loaded ({type(exc).__name__}); re-run "
                                  f"`soraprep encode` into {self.folder} (finished shards are reused)") from exc
            key = "x".join(str(v) for v in shard["latents"].shape[1:])  # (C, T', H', W') = the bucket
            for j in range(shard["latents"].shape[0]):
                self.items.append((len(self.shards), j))
                self.buckets.append(key)
            self.shards.append(shard)
        self.has_text = "text" in self.shards[0]
        self.has_labels = "labels" in self.shards[0]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def latent_shapes(self) -> list[tuple[int, ...]]:
        """Distinct (C, T', H', W') shapes, largest first."""
        shapes = {tuple(int(v) for v in k.split("x")) for k in self.buckets}
        return sorted(shapes, key=lambda s: (-int(np.prod(s)), s))

    @property
    def text_shape(self) -> tuple[int, int] | None:
        return tuple(self.shards[0]["text"].shape[1:]) if self.has_text else None  # type: ignore[return-value]

    def batch(self, indices: list[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """Latents (N, C, T', H', W') float32 times ``latent_scale``; ``text`` (N, S, D), ``mask`` (N, S),
        ``labels`` (N,) when the folder has them."""
        picks = [self.items[int(i)] for i in indices]
        out = {"latents": torch.stack([self.shards[s]["latents"][j] for s, j in picks]).float() * self.scale}
        if self.has_text:
            out["text"] = torch.stack([self.shards[s]["text"][j] for s, j in picks]).float()
            out["mask"] = torch.stack([self.shards[s]["mask"][j] for s, j in picks]).bool()
        if self.has_labels:
            out["labels"] = torch.stack([self.shards[s]["labels"][j] for s, j in picks]).long()
        return out


class BatchPlan:
    """Deterministic global micro-batches over buckets (see the module docstring)."""

    def __init__(self, buckets: list[str], *, global_batch: int, seed: int):
        if global_batch < 1:
            raise ValueError("global_batch must be >= 1")
        self.buckets, self.global_batch, self.seed = list(buckets), global_batch, seed
        self._groups: dict[str, np.ndarray] = {}
        for i, b in enumerate(self.buckets):
            self._groups.setdefault(b, []).append(i)  # type: ignore[attr-defined]
        self._groups = {k: np.asarray(v) for k, v in sorted(self._groups.items())}
        self.batches_per_epoch = sum(-(-len(v) // global_batch) for v in self._groups.values())
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def epoch(self, epoch: int) -> list[np.ndarray]:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for idx in self._groups.values():
            n = -(-len(idx) // self.global_batch) * self.global_batch
            perm = np.resize(rng.permutation(idx), n)  # a short bucket wraps around
            batches += [perm[k:k + self.global_batch] for k in range(0, n, self.global_batch)]
        order = rng.permutation(len(batches))
        self._cache = (epoch, [batches[o] for o in order])
        return self._cache[1]

    def global_batch_at(self, step: int) -> np.ndarray:
        """Sample indices of the global batch of optimizer step ``step`` (counted over the whole run)."""
        return self.epoch(step // self.batches_per_epoch)[step % self.batches_per_epoch]


def micro_positions(k: int, *, rank: int, world_size: int, micro: int) -> range:
    """Positions in a step's global batch of micro-batch ``k`` (of the accumulation) on ``rank``."""
    start = (k * world_size + rank) * micro
    return range(start, start + micro)


def step_draws(seed: int, step: int, positions: range, *, latent_shape: tuple[int, ...],
               caption_dropout: float) -> dict[str, torch.Tensor]:
    """Randomness of ``positions`` of step ``step``'s global batch: ``drop`` (n,) bool, ``u`` (n,) uniform in
    [0, 1) for the timestep, ``noise`` (n, *latent_shape). One generator per sample, so ranks draw only
    their own and the values do not depend on how the batch is split."""
    drop, u, noise = [], [], []
    for j in positions:
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, j]).generate_state(1)[0]))
        drop.append(torch.rand((), generator=g) < caption_dropout)
        u.append(torch.rand((), generator=g, dtype=torch.float64))
        noise.append(torch.randn(tuple(latent_shape), generator=g))
    return {"drop": torch.stack(drop), "u": torch.stack(u), "noise": torch.stack(noise)}


def model_inputs(model_config: Any, batch: dict[str, torch.Tensor], drop: torch.Tensor | None
                 ) -> tuple[torch.Tensor, dict[str, Any]]:
    """(x, model_kwargs) for any soraprep backbone. ``drop`` (N,) marks samples trained with the null
    caption / label (classifier-free guidance); None when the model has no null condition. The config
    says what its forward takes (``latent_layout``, ``ModelConfig.condition_inputs``)."""
    x = batch["latents"]  # (N, C, T', H', W')
    if model_config.latent_layout == "image":
        if x.shape[2] != 1:
            raise ValueError(f"{type(model_config).__name__} is an image model but the latents have {x.shape[2]} "
                             "frames: encode with --frames 1, or train a VideoDiT-* / STDiT-* preset")
        x = x[:, :, 0]  # (N, C, H, W)
    return x, model_config.condition_inputs(batch, drop)
