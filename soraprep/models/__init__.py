"""Reference models: DiT, SiT, U-ViT, spacetime video DiT, MM-DiT, CogVideoX, VideoGPT VQ-VAE.

``MODELS`` maps preset names to constructors; importing this package does not import torch (the model
modules are imported when a constructor is called), so :mod:`soraprep.models.config` stays torch-free.
Each config owns its behaviour (``ModelConfig`` hooks); a new family registers its config class with
``register_config`` and its presets with ``register_preset``.
"""

from soraprep.models.config import (
    PRESETS,
    ModelConfig,
    config_from_dict,
    get_config,
    register_config,
    register_preset,
)
from soraprep.models.registry import MODELS, build_model

__all__ = ["MODELS", "PRESETS", "ModelConfig", "build_model", "config_from_dict", "get_config", "register_config",
           "register_preset"]
