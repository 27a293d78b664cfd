"""Reference models: DiT, SiT, U-ViT, spacetime video DiT, VideoGPT VQ-VAE.

``MODELS`` maps preset names to constructors; importing this package does not import torch (the model
modules are imported when a constructor is called), so :mod:`soraprep.models.config` stays torch-free.
"""

from soraprep.models.config import PRESETS, config_from_dict, get_config
from soraprep.models.registry import MODELS, build_model, register

__all__ = ["MODELS", "PRESETS", "build_model", "config_from_dict", "get_config", "register"]
