"""``MODELS``: preset name -> constructor, a live view of :data:`~soraprep.models.config.PRESETS`.

There is no second table to keep in step: a preset added to ``PRESETS`` (``register_preset``) is at once
a constructor here, and ``build_model`` asks the config to build itself (``ModelConfig.build``), so this
module never names a model family. Torch is imported by the config's ``build()``, when a model is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from soraprep.models.config import PRESETS


def build_model(config: Any) -> Any:
    """Build the torch module a config describes (used to rebuild from a checkpoint's saved config)."""
    build = getattr(config, "build", None)
    if build is None:
        raise TypeError(f"no model for config of type {type(config).__name__}: configs derive from ModelConfig")
    return build()


def _preset_constructor(name: str) -> Callable[..., Any]:
    def construct(**kwargs: Any) -> Any:
        # The official constructors' keyword arguments are the config's field names; unknown ones -> TypeError.
        return build_model(PRESETS[name].replace(**kwargs))

    construct.__name__ = construct.__qualname__ = name.replace("-", "_").replace("/", "_")
    construct.__doc__ = f"Build {name} ({PRESETS[name]!r}); keyword arguments override config fields."
    return construct


class _Models(Mapping[str, Callable[..., Any]]):
    """Read-only mapping over ``PRESETS``: ``MODELS[name](**overrides)`` builds that preset."""

    def __getitem__(self, name: str) -> Callable[..., Any]:
        if name not in PRESETS:
            raise KeyError(name)
        return _preset_constructor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(PRESETS)

    def __len__(self) -> int:
        return len(PRESETS)

    def __repr__(self) -> str:
        return f"MODELS({len(self)} presets)"


MODELS: Mapping[str, Callable[..., Any]] = _Models()
