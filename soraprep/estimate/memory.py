"""Training memory per GPU: weights, gradients, AdamW states, EMA, activations, ZeRO/FSDP sharding.

Model states follow the ZeRO paper (Rajbhandari et al., 2020), bytes per parameter::

    precision   weights   gradients   optimizer (AdamW)                   EMA
    bf16/fp16   2         2           12 = fp32 master 4 + m 4 + v 4      4 (fp32 copy)
    fp32        4         4            8 = m 4 + v 4                      4

ZeRO stage 1 shards the optimizer states over the data-parallel GPUs, stage 2 also the gradients,
stage 3 (= FSDP full shard) also the weights (and, here, the EMA copy; stages 0-2 keep the EMA whole on
every GPU). Frozen parameters (DiT's sin-cos ``pos_embed``) have weights but no gradients or optimizer
states. Activations come from :class:`soraprep.estimate.flops.Activations` (elements per sample,
flash attention assumed) times 2 bytes (bf16/fp16) or 4 (fp32) times the micro-batch. A fixed
``overhead`` (CUDA context, cuBLAS/NCCL workspaces, allocator fragmentation; 2 GiB by default) is added.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

GIB = 2**30
PRECISIONS = ("bf16", "fp16", "fp32")
ZERO_STAGES = (0, 1, 2, 3)

#: bytes per parameter: weights, gradients, optimizer states, EMA
STATE_BYTES = {"bf16": (2, 2, 12, 4), "fp16": (2, 2, 12, 4), "fp32": (4, 4, 8, 4)}
ACT_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU for one configuration, and the largest micro-batch that still fits."""

    weights: int
    gradients: int
    optimizer: int
    ema: int
    activations: int
    overhead: int
    capacity: int
    micro_batch: int
    activation_per_sample: int
    max_micro_batch: int  # 0: even the model states do not fit
    #: FSDP/ZeRO-3 gathered layer buffers (full weights of the layers in flight + one layer's unsharded
    #: gradients); set by :mod:`soraprep.estimate.parallel`, 0 from :func:`estimate_memory`.
    gathered: int = 0

    @property
    def total(self) -> int:
        return (self.weights + self.gradients + self.optimizer + self.ema + self.activations + self.overhead
                + self.gathered)

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total"] = self.total
        d["fits"] = self.fits
        return d


def check_training_options(*, precision: str, zero: int, num_gpus: int, micro_batch: int) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if zero not in ZERO_STAGES:
        raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, got {zero}")
    if num_gpus < 1:
        raise ValueError(f"--num-gpus must be >= 1, got {num_gpus}")
    if micro_batch < 1:
        raise ValueError(f"--micro-batch must be >= 1, got {micro_batch}")


def estimate_memory(
    *,
    params: int,
    trainable_params: int,
    activation_elements: int,
    capacity_bytes: int,
    micro_batch: int = 1,
    precision: str = "bf16",
    zero: int = 0,
    num_gpus: int = 1,
    ema: bool = True,
    overhead_bytes: int = 2 * GIB,
) -> MemoryEstimate:
    """Per-GPU memory of data-parallel training with AdamW (see the module docstring for the model).

    ``activation_elements`` is per sample for the chosen recompute policy
    (``ModelCount.activations.elements(recompute)``).
    """
    check_training_options(precision=precision, zero=zero, num_gpus=num_gpus, micro_batch=micro_batch)
    w_b, g_b, o_b, e_b = STATE_BYTES[precision]
    g = num_gpus
    weights = params * w_b / (g if zero >= 3 else 1)
    grads = trainable_params * g_b / (g if zero >= 2 else 1)
    optim = trainable_params * o_b / (g if zero >= 1 else 1)
    ema_bytes = (params * e_b / (g if zero >= 3 else 1)) if ema else 0
    per_sample = activation_elements * ACT_BYTES[precision]
    static = int(weights) + int(grads) + int(optim) + int(ema_bytes) + overhead_bytes
    max_mb = max(0, (capacity_bytes - static) // per_sample) if per_sample else 0
    return MemoryEstimate(
        weights=int(weights),
        gradients=int(grads),
        optimizer=int(optim),
        ema=int(ema_bytes),
        activations=per_sample * micro_batch,
        overhead=overhead_bytes,
        capacity=capacity_bytes,
        micro_batch=micro_batch,
        activation_per_sample=per_sample,
        max_micro_batch=int(max_mb),
    )
