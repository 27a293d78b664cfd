"""The base of every model config (:class:`ModelConfig`) and the ``config_type`` registry.

A config is a frozen dataclass that round-trips through ``to_dict`` / ``from_dict`` (every checkpoint stores
it) and *owns what varies between model families* through the hooks below, so the registry, the compute
estimator, the trainer and the sampler never ask which family a config is. Torch-free: hooks import torch
(and the model file) inside the method that needs it. The concrete configs live in ``config.py`` (DiT, U-ViT,
VideoDiT, VQ-VAE) and ``config_joint.py`` (MM-DiT, CogVideoX); docs/architecture.md, "How to add a model
preset family", shows a new family end to end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

LAYOUTS = ("image", "video", "pixels")
CONDITIONINGS = ("class", "text", "none")


class ModelConfig:
    """Base of every model config: ``to_dict`` / ``from_dict`` / ``replace``, and the hooks through which a
    config owns what varies between model families, so that the registry, the compute estimator, the
    trainer and the sampler never ask *which* family a config is.

    A new family is one model file, one config subclass decorated with :func:`register_config` that
    overrides the hooks below, presets added to :data:`PRESETS`, its FLOP counter registered for its
    ``config_type`` in the estimator (``soraprep.estimate.flops.register_counter``: the estimator reads the
    models, never the reverse), and a test (docs/architecture.md,
    "How to add a model preset family").

    Hooks (defaults suit a model that can be built and counted but not trained as a diffusion model):

    - ``build()``: the torch module (import torch and the model file lazily, inside the method).
    - ``latent_layout``: ``"image"`` (N, C, H, W) square latents | ``"video"`` (N, C, T, H, W), any size |
      ``"pixels"`` (an autoencoder on (N, 3, T, H, W) clips).
    - ``conditioning`` (``"class"`` | ``"text"`` | ``"none"``) and ``text_input`` (``"tokens"``: caption tokens
      (N, S, D) + mask | ``"pooled"``: one (N, D) vector); ``label_classes`` (labels 0..K-1, the null label
      is K); ``null_condition`` (can be trained with dropped conditions, i.e. sampled with CFG).
    - ``learns_sigma``: forward returns 2C channels (noise + variance interpolation).
    - ``with_latent(t, h, w, channels)``: the config sized for one latent shape (FLOP counts per bucket).
    - ``fit_data(args, data, caption_dropout, fixed)``: training fields set from the encoded data.
    - ``condition_inputs(batch, drop)``: the forward's conditioning keyword arguments from a training batch.
    """

    config_type: ClassVar[str] = ""
    aliases: ClassVar[dict[str, str]] = {}  # old field name -> field name, accepted by from_dict / replace
    latent_layout: ClassVar[str] = "image"
    text_input: ClassVar[str] = "tokens"

    # ---- serialisation ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"config_type": self.config_type}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    @classmethod
    def _renamed(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Old field names (checkpoints and YAML written before a rename) -> current ones."""
        out = dict(d)
        for old, new in cls.aliases.items():
            if old in out:
                if new in out and out[new] != out[old]:
                    raise TypeError(f"{cls.__name__}: {old!r} is the old name of {new!r}; give only {new!r}")
                out[new] = out.pop(old)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        d = cls._renamed(d)
        kind = d.pop("config_type", cls.config_type)
        if kind != cls.config_type:
            raise ValueError(f"config_type {kind!r} cannot be read by {cls.__name__} (expects {cls.config_type!r})")
        names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise TypeError(f"{cls.__name__} has no field(s) {unknown}; valid fields: {sorted(names)}")
        for k, v in d.items():
            if isinstance(v, list):
                d[k] = tuple(v)
        return cls(**d)

    def replace(self, **changes: Any):
        """Copy with some fields changed; unknown names raise TypeError listing the valid ones."""
        changes = self._renamed(changes)
        names = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword argument(s) {unknown}; valid: {sorted(names)}"
            )
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    # ---- hooks ------------------------------------------------------------------------------------------

    def build(self) -> Any:
        raise TypeError(f"{type(self).__name__} does not say how to build its model: override build()")


    @property
    def sequential_blocks(self) -> int | None:
        """Transformer blocks a sample passes through one after another (what pipeline stages split), when the
        config's depth fields do not say it directly; None: the estimator sums the depth fields."""
        return None

    @property
    def conditioning(self) -> str:
        return "none"

    @property
    def label_classes(self) -> int:
        return 0

    @property
    def null_condition(self) -> bool:
        return False

    @property
    def learns_sigma(self) -> bool:
        return False

    def with_latent(self, t: int, h: int, w: int, channels: int | None = None):
        """This config sized for latents of (C, t, h, w); image models take h (square, t = 1)."""
        changes: dict[str, Any] = {"input_size": h if self.latent_layout == "image" else (t, h, w)}
        if channels:
            changes["in_channels"] = channels
        return self.replace(**changes)

    def fit_data(self, args: dict[str, Any], data: Any, caption_dropout: float, fixed: Callable[[str, Any], None]):
        """The training config: ``args`` (model_args, mutable) completed from ``data`` (a
        :class:`~soraprep.train.data.LatentData`); ``fixed(name, value)`` sets a field the data dictates
        (and rejects a model_args value that disagrees). Raise ValueError with a fix when it cannot work."""
        raise ValueError(f"{type(self).__name__} cannot be trained as a diffusion model")

    def condition_inputs(self, batch: dict[str, Any], drop: Any) -> dict[str, Any]:
        """Conditioning keyword arguments of ``forward`` for a training batch (``drop``: (N,) bool, the
        samples trained with the null condition, or None)."""
        return {}


_ConfigMixin = ModelConfig  # the old name


def register_config(cls: type[ModelConfig]) -> type[ModelConfig]:
    """Class decorator: make ``config_from_dict`` (checkpoints) read ``cls``; refuses duplicates."""
    kind = cls.config_type
    if not kind:
        raise ValueError(f"{cls.__name__} needs a config_type class attribute")
    if kind in CONFIG_TYPES and CONFIG_TYPES[kind] is not cls:
        raise ValueError(f"config_type {kind!r} is already registered by {CONFIG_TYPES[kind].__name__}")
    if cls.latent_layout not in LAYOUTS:
        raise ValueError(f"{cls.__name__}.latent_layout must be one of {LAYOUTS}, got {cls.latent_layout!r}")
    CONFIG_TYPES[kind] = cls
    return cls


CONFIG_TYPES: dict[str, type[ModelConfig]] = {}


def square_image_latent(data: Any) -> tuple[int, int]:
    """(channels, side) of the data's latents for a square image model; ValueError with the fix if not."""
    shapes = data.latent_shapes  # [(C, T', H', W')], largest first
    c, t, h, _ = shapes[0]
    if any(s[1] != 1 for s in shapes):
        raise ValueError(f"an image model, but the latents have {t} frames: encode with --frames 1, "
                         "or train a VideoDiT-* / STDiT-* preset")
    if any(s[2:] != (h, h) for s in shapes):
        raise ValueError("an image model that takes one square latent size, but the data has "
                         f"{sorted(set(s[2:] for s in shapes))}: encode with --size HxH, or train a VideoDiT-* "
                         "preset (any size)")
    return c, h


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _labels(batch: dict[str, Any]) -> Any:
    """The batch's labels, or zeros (N,) when the data has none."""
    x = batch["latents"]
    return batch["labels"] if "labels" in batch else x.new_zeros(x.shape[0], dtype=_long())


def _long() -> Any:
    import torch

    return torch.long
