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


# ------------------------------------------------------------------------------------------------
# Interconnects (for the communication-time term of soraprep.estimate.parallel)
# ------------------------------------------------------------------------------------------------

#: Achieved fraction of the per-direction line rate for large NCCL collectives. Source: NCCL maintainer
#: S. Jeaugey, github.com/NVIDIA/nccl-tests/issues/212 (2024-05-06): "450GB/s is the line rate. With the
#: protocol overhead (~20%) NCCL can get an effective NVLink bandwidth of 370GB/s" (370 / 450 = 0.82).
#: Applied to every link here (A100 nodes report ~200-230 GB/s busbw of 300, nccl-tests issue 149: a bit
#: lower); NVLink SHARP all-reduce (H100, up to ~480 GB/s busbw) is not modelled.
LINK_EFFICIENCY = 0.8


@dataclass(frozen=True)
class Interconnect:
    """A link between GPUs. ``gbytes_per_s`` is the per-GPU, per-direction line rate in GB/s (1e9 B/s):
    half of NVIDIA's bidirectional NVLink figure; a NIC's line rate / 8 for a network (one NIC per GPU)."""

    name: str
    scope: str  # "intra": inside a node (NVLink, PCIe, ...) | "inter": between nodes (InfiniBand, RoCE)
    description: str
    gbytes_per_s: float
    source: str

    def bandwidth(self, efficiency: float = LINK_EFFICIENCY) -> float:
        """Achieved bytes/s per GPU per direction (the 'bus bandwidth' of nccl-tests)."""
        return self.gbytes_per_s * 1e9 * efficiency

    def to_dict(self) -> dict:
        return {"name": self.name, "scope": self.scope, "description": self.description,
                "gbytes_per_s": self.gbytes_per_s, "bus_gbytes_per_s": self.gbytes_per_s * LINK_EFFICIENCY,
                "source": self.source}


#: name -> Interconnect
INTERCONNECTS: dict[str, Interconnect] = {
    i.name: i
    for i in [
        Interconnect("nvlink3", "intra", "NVLink 3 (A100 SXM, NVSwitch)", 300.0,
                     "NVIDIA A100 datasheet: NVLink 600 GB/s (bidirectional) -> 300 GB/s per direction"),
        Interconnect("nvlink3-a800", "intra", "NVLink 3 at 8 links (A800 SXM)", 200.0,
                     "NVIDIA A800 datasheet: NVLink 400 GB/s (bidirectional) -> 200 GB/s per direction"),
        Interconnect("nvlink4", "intra", "NVLink 4 (H100/H200 SXM, NVSwitch)", 450.0,
                     "NVIDIA H100 and H200 datasheets: NVLink 900 GB/s (bidirectional) -> 450 GB/s per direction"),
        Interconnect("nvlink4-h800", "intra", "NVLink 4 at 8 links (H800 SXM)", 200.0,
                     "NVIDIA H800 SXM5 datasheet: NVLink 400 GB/s (bidirectional) -> 200 GB/s per direction"),
        Interconnect("infinity-fabric", "intra", "AMD Infinity Fabric (MI300X platform, 7 links per GPU)", 448.0,
                     "AMD MI300X datasheet: 896 GB/s peak aggregate Infinity Fabric bandwidth (7 x 128 GB/s, "
                     "bidirectional) -> 448 GB/s per direction"),
        Interconnect("pcie4", "intra", "PCIe 4.0 x16 (no NVLink)", 32.0,
                     "PCI-SIG PCIe 4.0: 16 GT/s x 16 lanes ~ 32 GB/s per direction (128b/130b encoding)"),
        Interconnect("pcie5", "intra", "PCIe 5.0 x16 (no NVLink)", 64.0,
                     "PCI-SIG PCIe 5.0: 32 GT/s x 16 lanes ~ 64 GB/s per direction"),
        Interconnect("ib-ndr", "inter", "InfiniBand NDR, 400 Gb/s per GPU (one ConnectX-7 per GPU)", 50.0,
                     "NVIDIA ConnectX-7 / DGX H100: 8 x 400 Gb/s NDR, one per GPU -> 50 GB/s per direction"),
        Interconnect("ib-hdr", "inter", "InfiniBand HDR, 200 Gb/s per GPU (one ConnectX-6 per GPU)", 25.0,
                     "NVIDIA DGX A100: 8 x 200 Gb/s HDR ConnectX-6 for compute, one per GPU -> 25 GB/s"),
        Interconnect("roce-400", "inter", "RoCE v2 over 400 GbE, one NIC per GPU", 50.0,
                     "400 Gb/s Ethernet line rate / 8 -> 50 GB/s per direction"),
        Interconnect("roce-200", "inter", "RoCE v2 over 200 GbE, one NIC per GPU", 25.0,
                     "200 Gb/s Ethernet line rate / 8 -> 25 GB/s per direction"),
        Interconnect("eth-100", "inter", "100 GbE shared by the node (8 GPUs)", 100 / 8 / 8,
                     "100 Gb/s Ethernet line rate / 8 bits / 8 GPUs -> 1.56 GB/s per GPU"),
    ]
}

#: GPU preset -> (default intra-node link, default inter-node network).
DEFAULT_LINKS = {
    "a100-40gb": ("nvlink3", "ib-hdr"),
    "a100-80gb": ("nvlink3", "ib-hdr"),
    "a800": ("nvlink3-a800", "ib-hdr"),
    "h100-sxm": ("nvlink4", "ib-ndr"),
    "h100-pcie": ("pcie5", "ib-ndr"),
    "h800": ("nvlink4-h800", "ib-ndr"),
    "h200": ("nvlink4", "ib-ndr"),
    "l40s": ("pcie4", "roce-200"),
    "rtx-4090": ("pcie4", "eth-100"),
    "mi300x": ("infinity-fabric", "roce-400"),
    # Ascend HCCS: no datasheet figure found; PCIe 4.0 is a conservative stand-in (pass --interconnect).
    "ascend-910b": ("pcie4", "roce-200"),
}


def get_links(gpu: str, interconnect: str | None = None) -> tuple[Interconnect, Interconnect]:
    """(intra-node, inter-node) links for a GPU preset, overridden by ``interconnect``: one name (replaces
    the link of its scope) or ``INTRA,INTER``. Unknown names raise a ValueError naming the choices."""
    key = get_gpu(gpu).name if gpu not in DEFAULT_LINKS else gpu
    intra_name, inter_name = DEFAULT_LINKS.get(key, ("pcie4", "ib-hdr"))
    intra, inter = INTERCONNECTS[intra_name], INTERCONNECTS[inter_name]
    if interconnect:
        for raw in interconnect.split(","):
            name = raw.strip().lower()
            if name not in INTERCONNECTS:
                raise ValueError(f"unknown interconnect {raw.strip()!r}: use one of {', '.join(INTERCONNECTS)} "
                                 "(one name, or INTRA,INTER such as nvlink4,ib-ndr)")
            link = INTERCONNECTS[name]
            if link.scope == "intra":
                intra = link
            else:
                inter = link
    return intra, inter
