"""Name -> parser registry for ``soraprep ingest --dataset NAME``, filled by a tiny decorator.

A parser is ``parse(ctx: ParseContext) -> Iterator[dict]``: it reads ``ctx.path`` and yields manifest
rows (good rows and error rows) in file order, counting source records in ``ctx.records_read``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from soraprep.datasets.common import ParseContext

Parser = Callable[[ParseContext], Iterator[dict[str, Any]]]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its parser, license note, and whether it needs ``--fps``."""

    name: str
    parse: Parser
    license: str
    needs_fps: bool = False


PARSERS: dict[str, DatasetSpec] = {}


def register(name: str, *, license: str, needs_fps: bool = False) -> Callable[[Parser], Parser]:
    """Register ``parse`` under ``name``; refuses duplicates so two parsers never shadow each other."""

    def deco(fn: Parser) -> Parser:
        if name in PARSERS:
            raise ValueError(f"dataset {name!r} is already registered by {PARSERS[name].parse.__module__}")
        PARSERS[name] = DatasetSpec(name, fn, license, needs_fps)
        return fn

    return deco


def get_spec(name: str) -> DatasetSpec:
    _load_all()
    if name not in PARSERS:
        raise KeyError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(PARSERS))}")
    return PARSERS[name]


def dataset_names() -> list[str]:
    _load_all()
    return list(PARSERS)


def _load_all() -> None:
    # importing the modules runs their @register decorators (no import magic beyond this list)
    from soraprep.datasets import (  # noqa: F401
        folder,
        internvid,
        msrvtt,
        panda70m,
        shot2story,
        videoinstruct,
        webvid,
        youku_mplug,
    )
