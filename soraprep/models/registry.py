"""``MODELS``: preset name -> constructor, filled by a tiny decorator. Torch is imported lazily."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from soraprep.models.config import PRESETS, DiTConfig, UViTConfig, VideoDiTConfig, VQVAEConfig

MODELS: dict[str, Callable[..., Any]] = {}


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a constructor under ``name``; refuses duplicates."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = fn
        return fn

    return deco


def build_model(config: Any) -> Any:
    """Build the torch module a config describes (used to rebuild from a checkpoint's saved config)."""
    if isinstance(config, DiTConfig):
        from soraprep.models.dit import DiT

        return DiT(config)
    if isinstance(config, UViTConfig):
        from soraprep.models.uvit import UViT

        return UViT(config)
    if isinstance(config, VideoDiTConfig):
        from soraprep.models.video_dit import VideoDiT

        return VideoDiT(config)
    if isinstance(config, VQVAEConfig):
        from soraprep.models.vqvae import VQVAE

        return VQVAE(config)
    if getattr(config, "config_type", "") == "mmdit":
        from soraprep.models.mmdit import MMDiT

        return MMDiT(config)
    if getattr(config, "config_type", "") == "cogvideox":
        from soraprep.models.cogvideox import CogVideoX

        return CogVideoX(config)
    raise TypeError(f"no model for config of type {type(config).__name__}")


def _preset_constructor(name: str) -> Callable[..., Any]:
    def construct(**kwargs: Any) -> Any:
        # The official constructors' keyword arguments are the config's field names; unknown ones -> TypeError.
        return build_model(PRESETS[name].replace(**kwargs))

    construct.__name__ = construct.__qualname__ = name.replace("-", "_").replace("/", "_")
    construct.__doc__ = f"Build {name} ({PRESETS[name]!r}); keyword arguments override config fields."
    return construct


for _name in PRESETS:
    register(_name)(_preset_constructor(_name))
