"""Accelerator presets: peak dense throughput, memory and a default hourly price, each with its source.

Every number here is a default that the caller can override (``get_gpu(..., peak_tflops=,
memory_gib=, price_per_hour=)``; CLI ``--peak-tflops --gpu-memory-gib --price-per-hour``). Peaks are
*dense* tensor-core throughput (no 2:4 sparsity) from the vendors' datasheets; ``h100`` means H100 SXM
80 GB. Memory is what the device reports (``nvidia-smi`` total, GiB), slightly less than the marketed
"80 GB". Prices move every month: treat them as a starting point, not a quote.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

#: Compute precisions and the factor applied to the bf16 dense peak. fp32 training runs its matmuls as
#: TF32 on NVIDIA tensor cores (half the bf16 rate on A100/H100/L40S/4090, same ratio on MI300X).
PRECISION_PEAK_FACTOR = {"bf16": 1.0, "fp16": 1.0, "fp32": 0.5}

_RUNPOD_2026 = "RunPod spot price, March 2026 (deploybase.ai/articles/runpod-gpu-pricing)"
_NO_PRICE = "no public on-demand price found; assumed equal to {0}"


@dataclass(frozen=True)
class GPU:
    """One accelerator model. ``peak_bf16_tflops`` is dense BF16 tensor throughput in TFLOP/s."""

    name: str
    description: str
    peak_bf16_tflops: float
    memory_gib: float
    price_per_hour: float
    peak_source: str
    price_source: str

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * 2**30)

    def peak_flops(self, precision: str = "bf16") -> float:
        """Peak dense FLOP/s for ``precision`` (bf16, fp16, fp32 = TF32 tensor cores)."""
        try:
            factor = PRECISION_PEAK_FACTOR[precision]
        except KeyError:
            raise ValueError(
                f"unknown precision {precision!r}: use one of {', '.join(PRECISION_PEAK_FACTOR)}"
            ) from None
        return self.peak_bf16_tflops * 1e12 * factor

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "peak_bf16_tflops": self.peak_bf16_tflops,
            "memory_gib": self.memory_gib,
            "price_per_hour": self.price_per_hour,
            "peak_source": self.peak_source,
            "price_source": self.price_source,
        }


def _gpu(name, description, tflops, gib, price, peak_source, price_source) -> GPU:
    return GPU(name, description, float(tflops), float(gib), float(price), peak_source, price_source)


_A100_DS = "NVIDIA A100 datasheet: 312 TFLOPS BF16 dense (624 with sparsity)"
_H100_DS = "NVIDIA H100 datasheet: SXM 989 / PCIe 756 TFLOPS BF16 dense (half the sparse figure)"

#: name -> GPU. Keys are lower-case; see ALIASES for short names.
GPUS: dict[str, GPU] = {
    g.name: g
    for g in [
        _gpu("a100-40gb", "NVIDIA A100 SXM 40 GB", 312, 40.0, 1.25, _A100_DS,
             "RunPod community A100 40GB (theneuralbase.com RunPod pricing example, 2025)"),
        _gpu("a100-80gb", "NVIDIA A100 SXM 80 GB", 312, 80.0, 1.39, _A100_DS, _RUNPOD_2026),
        _gpu("a800", "NVIDIA A800 SXM 80 GB (China export variant of A100)", 312, 80.0, 1.39,
             "same SM/tensor configuration as A100 (only NVLink reduced)", _NO_PRICE.format("a100-80gb")),
        _gpu("h100-sxm", "NVIDIA H100 SXM5 80 GB", 989, 79.65, 2.69, _H100_DS, _RUNPOD_2026),
        _gpu("h100-pcie", "NVIDIA H100 PCIe 80 GB", 756, 79.65, 1.99, _H100_DS, _RUNPOD_2026),
        _gpu("h800", "NVIDIA H800 SXM5 80 GB (China export variant of H100)", 989, 79.65, 2.69,
             "same tensor throughput as H100 SXM (only NVLink reduced)", _NO_PRICE.format("h100-sxm")),
        _gpu("h200", "NVIDIA H200 SXM 141 GB", 989, 140.4, 3.59,
             "NVIDIA H200 datasheet: 989 TFLOPS BF16 dense (same GH100 die as H100 SXM)", _RUNPOD_2026),
        _gpu("l40s", "NVIDIA L40S 48 GB", 362, 44.99, 0.79,
             "NVIDIA L40S datasheet: 362 TFLOPS BF16 dense (733 with sparsity)", _RUNPOD_2026),
        _gpu("rtx-4090", "NVIDIA GeForce RTX 4090 24 GB", 165, 23.99, 0.34,
             "Ada whitepaper: 165 TFLOPS BF16 dense with FP32 accumulate", _RUNPOD_2026),
        _gpu("mi300x", "AMD Instinct MI300X 192 GB", 1307, 192.0, 2.69,
             "AMD MI300X datasheet: 1307 TFLOPS BF16 dense", _NO_PRICE.format("h100-sxm")),
        _gpu("ascend-910b", "Huawei Ascend 910B 64 GB (SKU-dependent: 910B4 has 32 GB)", 376, 64.0, 1.39,
             "reported 280-376 TFLOPS FP16 depending on SKU (910B4 ... 910B2); default = upper end, "
             "override with --peak-tflops", _NO_PRICE.format("a100-80gb")),
    ]
}

#: Short and alternative names -> key in GPUS.
ALIASES = {
    "a100": "a100-80gb",
    "a100-80": "a100-80gb",
    "a100-40": "a100-40gb",
    "h100": "h100-sxm",
    "h100-80gb": "h100-sxm",
    "4090": "rtx-4090",
    "rtx4090": "rtx-4090",
    "910b": "ascend-910b",
    "ascend910b": "ascend-910b",
}


def gpu_names() -> list[str]:
    return sorted(GPUS)


def get_gpu(
    name: str,
    *,
    peak_tflops: float | None = None,
    memory_gib: float | None = None,
    price_per_hour: float | None = None,
) -> GPU:
    """Look up a preset by name or alias and apply overrides; unknown names raise a ValueError."""
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    key = ALIASES.get(key, key)
    if key not in GPUS:
        raise ValueError(
            f"unknown GPU {name!r}: use one of {', '.join(gpu_names())} "
            f"(aliases: {', '.join(sorted(ALIASES))}), or pick the closest one and pass "
            "--peak-tflops / --gpu-memory-gib / --price-per-hour"
        )
    gpu = GPUS[key]
    changes = {}
    if peak_tflops is not None:
        if not peak_tflops > 0:
            raise ValueError(f"peak TFLOP/s must be > 0, got {peak_tflops}")
        changes.update(peak_bf16_tflops=float(peak_tflops), peak_source="user override")
    if memory_gib is not None:
        if not memory_gib > 0:
            raise ValueError(f"GPU memory must be > 0 GiB, got {memory_gib}")
        changes["memory_gib"] = float(memory_gib)
    if price_per_hour is not None:
        if price_per_hour < 0:
            raise ValueError(f"price per hour must be >= 0, got {price_per_hour}")
        changes.update(price_per_hour=float(price_per_hour), price_source="user override")
    return replace(gpu, **changes) if changes else gpu
