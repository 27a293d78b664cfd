"""Curation on a cluster, on paper: video-hours per node-hour, the bottleneck side, nodes for a deadline.

The inputs are per-stage costs measured on one machine (``benchmarks/scale_model.py`` measures them and
BENCHMARKS.md, "Cluster scale model", records them) and a node description. Every factor is spelled out:

- CPU work per second of input video (vCPU-seconds):
    analysis (probe + the one decode pass + split + score + filter)           per video-second
  + cut (the default stream copy, or exact re-encode)                         per second of clip written
    x ``kept_fraction`` (the share of input seconds that end up in written clips)
  + ocr (PP-OCR detector on CPU)                x sampled frames per video-second
  + CLIP image tower, only where it runs on CPU x sampled frames per video-second
- GPU work per second of input video (GPU-seconds), where the model stages run on GPUs:
    (image FLOPs x sampled frames + text FLOPs x clips, per video-second) / (dense peak x ``mfu``)
- sampled frames per video-second = min(``frames_per_clip``, samples in a clip at one per second) / clip length:
  the model scorers run on every split clip (they score before the filter decides), at most ``frames``
  (4 by default) sampled frames each.
- a node's rate = min(CPU side, GPU side); the side with the lower rate is the bottleneck and the other one
  waits (its utilisation is reported). The CPU side counts ``cpu_efficiency`` of the node's vCPUs as doing
  stage work: Ray's raylet and object store, the OS, network and object-store I/O take the rest.

Nothing here is measured: it is arithmetic over what the caller passes (tests check the arithmetic).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from soraprep.estimate import hardware

HOURS_PER_WEEK = 7 * 24

#: Panda-70M (Chen et al., CVPR 2024): the full training split as published in the repository's
#: dataset_dataloading/README.md: 3,779,763 source videos, 70,723,513 clips, 167 k hours (166.8 k in the
#: paper's Table 1) -> 8.5 s per clip on average.
PANDA70M = {"clips": 70_723_513, "video_hours": 166_800.0, "source_videos": 3_779_763, "mean_clip_s": 8.5,
            "source": "Panda-70M (arXiv 2402.19479, Table 1; github.com/snap-research/Panda-70M "
                      "dataset_dataloading/README.md): 70.7 M clips, 166.8 k hours, 8.5 s mean"}


@dataclass(frozen=True)
class StageCosts:
    """Per-unit stage costs. CPU costs are vCPU-seconds of one process on one core."""

    analysis_cpu_s: float          # per video-second: probe + decode-once analyze + split + score + filter
    cut_cpu_s: float               # per second of clip written (default: stream copy with exact fallback)
    ocr_cpu_s: float = 0.0         # per sampled frame (PP-OCR detector, onnxruntime, one thread)
    clip_cpu_s: float = 0.0        # per sampled frame: CLIP image tower on CPU
    clip_image_flops: float = 0.0  # per sampled frame: CLIP image tower
    clip_text_flops: float = 0.0   # per clip: CLIP text tower (text_match only)
    source: str = ""


@dataclass(frozen=True)
class Workload:
    """What a recipe asks per second of input video."""

    name: str
    ocr: bool = False
    clip: bool = False             # aesthetic and/or text_match (they share the image embeddings)
    text_match: bool = False
    frames_per_clip: int = 4       # the stages' ``frames``
    sample_every_s: float = 1.0    # the stages' ``samples_every_s``
    mean_clip_s: float = PANDA70M["mean_clip_s"]
    kept_fraction: float = 1.0     # share of input seconds that end up in written clips

    def __post_init__(self) -> None:
        if self.mean_clip_s <= 0 or self.sample_every_s <= 0 or self.frames_per_clip < 1:
            raise ValueError("mean_clip_s and sample_every_s must be > 0 and frames_per_clip >= 1")
        if not 0 <= self.kept_fraction <= 1:
            raise ValueError(f"kept_fraction must be in [0, 1], got {self.kept_fraction}")

    @property
    def clips_per_video_s(self) -> float:
        return 1.0 / self.mean_clip_s

    @property
    def frames_per_video_s(self) -> float:
        """Sampled frames the model stages look at per second of input (0 without model stages)."""
        if not (self.ocr or self.clip):
            return 0.0
        per_clip = min(self.frames_per_clip, max(1, math.floor(self.mean_clip_s / self.sample_every_s)))
        return per_clip / self.mean_clip_s


@dataclass(frozen=True)
class Node:
    name: str
    vcpus: int
    price_per_hour: float
    price_source: str
    gpus: int = 0
    gpu: str | None = None         # a key of soraprep.estimate.hardware.GPUS
    cpu_efficiency: float = 0.8    # share of vCPUs doing stage work

    def __post_init__(self) -> None:
        if self.vcpus < 1 or self.gpus < 0 or not 0 < self.cpu_efficiency <= 1:
            raise ValueError("a node needs vcpus >= 1, gpus >= 0 and cpu_efficiency in (0, 1]")
        if self.gpus and self.gpu is None:
            raise ValueError(f"node {self.name}: name its GPU model (a soraprep.estimate.hardware key)")


#: Example nodes (on-demand list prices move: pass your own). CPU: AWS c7i.16xlarge, 64 vCPU, $2.856/h
#: on-demand us-east-1 (= the $0.0446 per vCPU-hour `soraprep estimate` uses for curation). GPU nodes: the
#: vCPU counts of AWS p5.48xlarge (8x H100, 192 vCPU) and p4de.24xlarge (8x A100 80 GB, 96 vCPU), priced
#: at 8x the per-GPU price of soraprep/estimate/hardware.py (RunPod, March 2026; hyperscaler on-demand
#: list prices are several times higher: pass --gpu-node-price).
NODES = {
    "cpu-64": Node("cpu-64", 64, 64 * 0.0446, "AWS c7i.16xlarge on-demand (64 x $0.0446 per vCPU-hour)"),
    "8xh100": Node("8xh100", 192, 8 * hardware.GPUS["h100-sxm"].price_per_hour,
                   f"8 x h100-sxm at ${hardware.GPUS['h100-sxm'].price_per_hour}/h "
                   f"({hardware.GPUS['h100-sxm'].price_source}); p5.48xlarge's 192 vCPU",
                   gpus=8, gpu="h100-sxm"),
    "8xa100": Node("8xa100", 96, 8 * hardware.GPUS["a100-80gb"].price_per_hour,
                   f"8 x a100-80gb at ${hardware.GPUS['a100-80gb'].price_per_hour}/h "
                   f"({hardware.GPUS['a100-80gb'].price_source}); p4de.24xlarge's 96 vCPU",
                   gpus=8, gpu="a100-80gb"),
}


@dataclass(frozen=True)
class Throughput:
    node: str
    workload: str
    cpu_s_per_video_s: float       # vCPU-seconds per input video-second, as run on this node
    gpu_s_per_video_s: float       # GPU-seconds per input video-second (0: no GPU work on this node)
    cpu_side: float                # video-hours per hour the node's CPUs sustain
    gpu_side: float | None         # ... its GPUs (None: no GPU work)
    video_hours_per_hour: float    # min of the two
    bottleneck: str                # "cpu" or "gpu"
    cpu_busy: float                # utilisation of each side at that rate
    gpu_busy: float | None
    price_per_hour: float
    usd_per_video_hour: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_seconds_per_video_second(costs: StageCosts, w: Workload, *, clip_on_gpu: bool) -> float:
    """vCPU-seconds of stage work per second of input video."""
    s = costs.analysis_cpu_s + w.kept_fraction * costs.cut_cpu_s
    if w.ocr:
        s += w.frames_per_video_s * costs.ocr_cpu_s
    if w.clip and not clip_on_gpu:
        s += w.frames_per_video_s * costs.clip_cpu_s
    return s


def gpu_seconds_per_video_second(costs: StageCosts, w: Workload, *, peak_flops: float, mfu: float) -> float:
    """GPU-seconds of the CLIP stages per second of input video (FLOPs over a utilised dense peak)."""
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu}")
    if not w.clip:
        return 0.0
    flops = w.frames_per_video_s * costs.clip_image_flops
    if w.text_match:
        flops += w.clips_per_video_s * costs.clip_text_flops
    return flops / (peak_flops * mfu)


def node_throughput(node: Node, costs: StageCosts, w: Workload, *, mfu: float = 0.3,
                    precision: str = "bf16") -> Throughput:
    """Video-hours per hour of one node, which side limits it, and the $ per video-hour."""
    on_gpu = bool(node.gpus) and w.clip
    cpu_s = cpu_seconds_per_video_second(costs, w, clip_on_gpu=on_gpu)
    cpu_side = node.vcpus * node.cpu_efficiency / cpu_s  # video-seconds per second = video-hours per hour
    gpu_s, gpu_side = 0.0, None
    if on_gpu:
        peak = hardware.get_gpu(node.gpu).peak_flops(precision)
        gpu_s = gpu_seconds_per_video_second(costs, w, peak_flops=peak, mfu=mfu)
        gpu_side = node.gpus / gpu_s if gpu_s else math.inf
    rate = cpu_side if gpu_side is None else min(cpu_side, gpu_side)
    return Throughput(
        node=node.name, workload=w.name, cpu_s_per_video_s=cpu_s, gpu_s_per_video_s=gpu_s,
        cpu_side=cpu_side, gpu_side=gpu_side, video_hours_per_hour=rate,
        bottleneck="gpu" if gpu_side is not None and gpu_side < cpu_side else "cpu",
        cpu_busy=rate / cpu_side, gpu_busy=None if gpu_side is None else rate / gpu_side,
        price_per_hour=node.price_per_hour, usd_per_video_hour=node.price_per_hour / rate,
    )


def nodes_for(video_hours: float, per_node_rate: float, *, wall_hours: float = HOURS_PER_WEEK) -> int:
    """Whole nodes needed to curate ``video_hours`` within ``wall_hours`` at ``per_node_rate`` video-h/h."""
    if per_node_rate <= 0 or wall_hours <= 0:
        raise ValueError("per-node rate and wall hours must be > 0")
    return max(1, math.ceil(video_hours / (per_node_rate * wall_hours) - 1e-9))


@dataclass(frozen=True)
class Fleet:
    node: str
    workload: str
    nodes: int
    node_hours: float              # busy node-hours (what the work costs; a whole fleet rented for the
    cost: float                    # week costs nodes x wall_hours x price)
    wall_hours: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fleet(video_hours: float, t: Throughput, *, wall_hours: float = HOURS_PER_WEEK) -> Fleet:
    node_hours = video_hours / t.video_hours_per_hour
    return Fleet(t.node, t.workload, nodes_for(video_hours, t.video_hours_per_hour, wall_hours=wall_hours),
                 node_hours, node_hours * t.price_per_hour, wall_hours)


def balanced_mix(video_hours: float, costs: StageCosts, w: Workload, gpu_node: Node, cpu_node: Node, *,
                 mfu: float = 0.3, wall_hours: float = HOURS_PER_WEEK) -> Fleet:
    """GPU nodes for the model stages plus CPU nodes for the decode work the GPU nodes' CPUs cannot keep
    up with (Ray schedules the CPU stages on any node): the cheapest way to keep every GPU busy."""
    t = node_throughput(gpu_node, costs, w, mfu=mfu)
    if t.gpu_side is None:
        raise ValueError(f"workload {w.name!r} has no GPU stage: use CPU nodes only")
    per_video_s_cpu = cpu_seconds_per_video_second(costs, w, clip_on_gpu=True)
    rate = video_hours / wall_hours                               # video-hours per hour needed
    gpus_nodes = nodes_for(video_hours, t.gpu_side, wall_hours=wall_hours)
    cpu_needed = rate * per_video_s_cpu                           # busy vCPUs
    cpu_have = gpus_nodes * gpu_node.vcpus * gpu_node.cpu_efficiency
    cpu_nodes = max(0, math.ceil((cpu_needed - cpu_have) / (cpu_node.vcpus * cpu_node.cpu_efficiency) - 1e-9))
    price = gpus_nodes * gpu_node.price_per_hour + cpu_nodes * cpu_node.price_per_hour
    return Fleet(f"{gpus_nodes} x {gpu_node.name} + {cpu_nodes} x {cpu_node.name}", w.name,
                 gpus_nodes + cpu_nodes, (gpus_nodes + cpu_nodes) * wall_hours, price * wall_hours, wall_hours,
                 extra={"gpu_nodes": gpus_nodes, "cpu_nodes": cpu_nodes, "gpu_busy": rate / (gpus_nodes * t.gpu_side)})
