"""A test-only model stage that declares half a GPU and records what Ray gave the actor running it.

Stages never import Ray; this one is test code (the brief allows it) so the test can assert what Ray
was asked for from inside the actor. It runs in the model-stage position (``phase = "score"``) and reads
the sampled frames like aesthetic/ocr do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from soraprep.stages import Resources, register


@register("gpu_probe")
@dataclass
class GpuProbeStage:
    name = "gpu_probe"
    phase = "score"
    samples_every_s = 1.0
    columns = ("probe_gpus", "probe_samples")
    resources = Resources(cpus=0.25, gpus=0.5, memory_gb=0.25)
    batch_size = 2

    def setup(self) -> None:
        pass

    def __call__(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        gpus = 0.0
        try:
            import ray

            if ray.is_initialized():
                gpus = float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))
        except ImportError:
            pass
        for row in batch:
            if not row.get("error"):
                row["probe_gpus"] = gpus
                row["probe_samples"] = len(row.get("_samples") or [])
        return batch


@register("actor_killer")
@dataclass
class ActorKillerStage:
    """A post stage (runs in the decision actor's supervised worker) that kills its own process on a video
    whose name contains ``poison`` (and, with ``kill_parent``, the actor too): the Ray runner must end the run
    with that unit as a ``worker_died`` row."""

    kill_parent: bool = True
    name = "actor_killer"
    columns = ()
    resources = Resources(cpus=0.25)
    batch_size = 64

    def setup(self) -> None:
        pass

    def __call__(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        import os
        import signal

        if any("poison" in str(r.get("source", "")) for r in batch):
            if self.kill_parent:  # the decision actor itself (this stage runs in its supervised worker)
                os.kill(os.getppid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)
        return batch


@register("flaky_scorer")
@dataclass
class FlakyScorerStage:
    """A model-position stage for the actor tests: writes the size of the batch it was called with, raises on
    a batch holding a clip whose id contains ``bad``, and fails to set up when ``fail_setup``."""

    fail_setup: bool = False
    name = "flaky_scorer"
    phase = "score"
    samples_every_s = 1.0
    columns = ("called_with",)
    resources = Resources(cpus=0.5)
    batch_size = 3

    def setup(self) -> None:
        if self.fail_setup:
            raise RuntimeError("weights not found")

    def __call__(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if any("bad" in str(r.get("clip_id")) for r in batch):
            raise RuntimeError("CUDA error: device-side assert")
        for row in batch:
            if not row.get("error"):
                row["called_with"] = len(batch)
        return batch
