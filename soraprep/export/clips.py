"""What every export shares: which rows go out, the files they name, sizes, and bounded prefetching.

Clip files are read wherever the manifest says they are (relative to its folder on the same store,
absolute local paths, or URLs), one object per request, never a whole run in memory: the exporters ask
for sizes and bytes through :func:`ordered_map`, which keeps at most ``window`` requests in flight and
hands results back in manifest order (so output is deterministic however fast each request returns).
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from soraprep.manifest_store import resolve
from soraprep.storage.store import Store, is_remote, split_url

T = TypeVar("T")
R = TypeVar("R")

INCLUDE = ("kept", "all")

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-z]*)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}


def parse_bytes(text: str | int) -> int:
    """``"1GiB"`` -> 1073741824, ``"500MB"`` -> 500000000 (SI for kB/MB/GB, binary for KiB/MiB/GiB), ``4096``."""
    if isinstance(text, int):
        value = text
    else:
        m = _SIZE.match(str(text))
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"cannot read {text!r} as a size: write e.g. 1GiB, 500MB or a number of bytes")
        value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise ValueError(f"a size must be positive, got {text!r}")
    return value


def selected(row: dict[str, Any], include: str) -> bool:
    """``kept``: rows with keep true and no error; ``all``: every row without an error (kept or dropped)."""
    if row.get("error"):
        return False
    return include == "all" or bool(row.get("keep"))


class ClipReader:
    """Sizes and bytes of the files rows name, relative to ``base`` (a folder or URL) on one set of options."""

    def __init__(self, base: str, storage_options: dict[str, Any] | None = None):
        self.base = base
        self.storage_options = dict(storage_options or {})
        self._stores: dict[str, Store] = {}

    def url(self, path: str) -> str:
        return resolve(self.base, path)

    def _locate(self, url: str) -> tuple[Store | None, str]:
        if not is_remote(url):
            return None, url
        parent, name = url.rsplit("/", 1)
        store = self._stores.get(parent)
        if store is None:
            store, name = split_url(url, self.storage_options)
            self._stores[parent] = store
        return store, name

    def size(self, path: str) -> int:
        store, name = self._locate(self.url(path))
        return store.size(name) if store is not None else os.stat(name).st_size

    def read(self, path: str) -> bytes:
        store, name = self._locate(self.url(path))
        return store.read_bytes(name) if store is not None else Path(name).read_bytes()


def ordered_map(fn: Callable[[T], R], items: Iterable[T], pool: ThreadPoolExecutor,
                window: int) -> Iterator[tuple[T, R | BaseException]]:
    """``(item, fn(item))`` in input order, at most ``window`` calls in flight; an exception is returned,
    not raised, so one bad file becomes one bad row."""

    def call(item: T) -> R | BaseException:
        try:
            return fn(item)
        except Exception as exc:  # noqa: BLE001 - handed back to the caller as the row's failure
            return exc

    pending: deque[tuple[T, Future]] = deque()
    for item in items:
        pending.append((item, pool.submit(call, item)))
        if len(pending) >= window:
            first, fut = pending.popleft()
            yield first, fut.result()
    while pending:
        first, fut = pending.popleft()
        yield first, fut.result()


def describe(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {exc.filename or exc}"
    return f"{type(exc).__name__}: {exc}"


def _same_place(a: str, b: str) -> bool:
    if is_remote(a) or is_remote(b):
        return a.rstrip("/") == b.rstrip("/")
    return Path(a).resolve() == Path(b).resolve()


def check_output(manifest: str, out: str, storage_options: dict[str, Any] | None = None) -> None:
    """Refuse (ManifestError) an export folder that is the manifest's own folder, run folder or dataset."""
    from soraprep.manifest import ManifestError
    from soraprep.manifest_store import locate

    ref = locate(manifest, storage_options)
    for taken in (ref.base, ref.url):
        if _same_place(out, taken):
            raise ManifestError(f"-o {out} is where the manifest lives ({taken}): export into a folder of its own, "
                                f"e.g. {out.rstrip('/')}-export")
