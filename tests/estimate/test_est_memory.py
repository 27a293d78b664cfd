"""Memory model (ZeRO stages, frozen params, recompute) and the GPU table."""

from __future__ import annotations

import pytest

from soraprep.estimate.flops import count_model
from soraprep.estimate.hardware import GPUS, get_gpu
from soraprep.estimate.memory import GIB, estimate_memory
from soraprep.models.config import PRESETS

P = 1_000_000_000  # one billion parameters, all trainable, 8 GPUs


@pytest.mark.parametrize("zero,expected", [
    # weights 2 B, gradients 2 B, AdamW (fp32 master + m + v) 12 B, fp32 EMA 4 B per parameter
    (0, (2 * P, 2 * P, 12 * P, 4 * P)),
    (1, (2 * P, 2 * P, 12 * P // 8, 4 * P)),
    (2, (2 * P, 2 * P // 8, 12 * P // 8, 4 * P)),
    (3, (2 * P // 8, 2 * P // 8, 12 * P // 8, 4 * P // 8)),
])
def test_zero_stages_shard_model_states(zero, expected):
    m = estimate_memory(params=P, trainable_params=P, activation_elements=0, capacity_bytes=80 * GIB,
                        zero=zero, num_gpus=8, overhead_bytes=0)
    assert (m.weights, m.gradients, m.optimizer, m.ema) == expected
    assert m.total == sum(expected)


def test_fp32_and_frozen_and_no_ema():
    m = estimate_memory(params=P, trainable_params=P // 2, activation_elements=10, capacity_bytes=80 * GIB,
                        precision="fp32", ema=False, overhead_bytes=0, micro_batch=3)
    assert (m.weights, m.gradients, m.optimizer, m.ema) == (4 * P, 4 * P // 2, 8 * P // 2, 0)
    assert m.activations == 3 * 10 * 4  # fp32 activations: 4 bytes per element


def test_largest_micro_batch_is_the_boundary():
    kw = dict(params=P, trainable_params=P, activation_elements=50_000_000, capacity_bytes=80 * GIB)
    m = estimate_memory(**kw)
    assert m.max_micro_batch > 0
    assert estimate_memory(**kw, micro_batch=m.max_micro_batch).fits
    assert not estimate_memory(**kw, micro_batch=m.max_micro_batch + 1).fits
    # model states alone exceed a 24 GB card: nothing fits
    small = estimate_memory(**{**kw, "capacity_bytes": 16 * GIB})
    assert small.max_micro_batch == 0 and not small.fits


def test_recompute_orders_activation_memory():
    a = count_model(PRESETS["STDiT-XL/2"]).activations
    assert a.elements("full") < a.elements("selective") < a.elements("none")
    # full recompute keeps one D-vector per token per block (plus one block's working set)
    n, d, depth = 16 * 16 * 16, 1152, 28
    assert a.full_stored >= depth * n * d
    with pytest.raises(ValueError, match="recompute"):
        a.elements("some")


def test_bad_memory_options():
    kw = dict(params=P, trainable_params=P, activation_elements=1, capacity_bytes=GIB)
    with pytest.raises(ValueError, match="ZeRO stage"):
        estimate_memory(**kw, zero=4)
    with pytest.raises(ValueError, match="precision"):
        estimate_memory(**kw, precision="int4")


def test_gpu_table_and_overrides():
    h100 = get_gpu("h100")
    assert h100.name == "h100-sxm" and h100.peak_bf16_tflops == 989 and h100.memory_gib > 79
    assert get_gpu("H100 SXM").name == "h100-sxm"
    assert {"a100-40gb", "a100-80gb", "a800", "h100-sxm", "h100-pcie", "h800", "h200", "l40s", "rtx-4090",
            "mi300x", "ascend-910b"} <= set(GPUS)
    peaks = {"a100-80gb": 312, "a800": 312, "h100-pcie": 756, "h800": 989, "h200": 989, "l40s": 362,
             "rtx-4090": 165, "mi300x": 1307}
    assert {k: GPUS[k].peak_bf16_tflops for k in peaks} == peaks
    assert all(g.price_source and g.peak_source for g in GPUS.values())
    g = get_gpu("910b", peak_tflops=280, memory_gib=32, price_per_hour=1.0)
    assert (g.peak_bf16_tflops, g.memory_gib, g.price_per_hour) == (280, 32, 1.0)
    assert g.peak_flops("fp32") == 140e12
    with pytest.raises(ValueError, match="unknown GPU 'tpu-v5'.*h100-sxm"):
        get_gpu("tpu-v5")
