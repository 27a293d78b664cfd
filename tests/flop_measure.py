"""Measured forward FLOPs of a built model: torch's FlopCounterMode plus fused attention counted explicitly."""

from __future__ import annotations


def measured_flops(model, *args, **kwargs) -> int:
    """FlopCounterMode FLOPs plus fused-attention FLOPs, which the counter does not see on CPU."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    extra = [0]
    orig = F.scaled_dot_product_attention

    def sdpa(q, k, v, *a, **kw):
        batch = q.numel() // (q.shape[-1] * q.shape[-2])
        extra[0] += 2 * batch * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])  # QK^T + PV
        return orig(q, k, v, *a, **kw)

    F.scaled_dot_product_attention = sdpa
    try:
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model(*args, **kwargs)
    finally:
        F.scaled_dot_product_attention = orig
    seen = {str(op) for op in fc.get_flop_counts()["Global"]}
    return fc.get_total_flops() + (0 if any("scaled_dot_product" in op for op in seen) else extra[0])
