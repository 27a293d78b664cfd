"""Name -> stage class registry, filled by a tiny decorator (no metaclasses, no import magic).

Registering happens when a stage's module is imported: the built-in ones are listed in
:mod:`soraprep.curate.catalogue`; a stage defined elsewhere registers when its module is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

STAGES: dict[str, type] = {}


def register(name: str) -> Callable[[T], T]:
    """Register a stage class under ``name``; refuses duplicates so two stages never shadow each other."""

    def deco(cls: T) -> T:
        if name in STAGES:
            raise ValueError(f"stage {name!r} is already registered by {STAGES[name].__qualname__}")
        STAGES[name] = cls  # type: ignore[assignment]
        return cls

    return deco
