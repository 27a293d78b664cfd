"""Compute estimation: FLOPs, memory, GPU-hours and cost of training a video diffusion transformer.

Front door: :func:`estimate` (``soraprep estimate`` on the command line). Parts: :mod:`.hardware`
(GPU table), :mod:`.flops` (analytic counts from the model config dataclasses), :mod:`.vae`
(autoencoder costs), :mod:`.memory` (per-GPU memory), :mod:`.plan` (end-to-end budget),
:mod:`.sweep` (grids and plots). Torch-free.
"""

from soraprep.estimate.flops import ModelCount, count_model
from soraprep.estimate.hardware import GPUS, get_gpu
from soraprep.estimate.memory import estimate_memory
from soraprep.estimate.plan import Estimate, estimate

__all__ = ["GPUS", "Estimate", "ModelCount", "count_model", "estimate", "estimate_memory", "get_gpu"]
