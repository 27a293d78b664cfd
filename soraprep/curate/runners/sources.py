"""Remote sources for a unit's stages: each store object staged to local scratch once, on first need.

The stages (probe, analyze, cut) open ``row["source"]`` with PyAV as a local file, several times per
video (a demux for the packet index, the decode pass, one open per cut clip). A unit whose source is a
store URL (``s3://bucket/videos/a.mp4``) therefore gets one local copy, made when a stage that reads
footage first runs, and removed when the unit is done:

    sources = StagedSources(storage_options, scratch)
    sources.localize(batch, "probe")   # rows now name the local copy (made now if not yet)
    stage(batch)
    sources.restore(rows)              # rows name the URL again (source, uncut clip paths, messages)
    sources.close()                    # the local copies are deleted

A decision-only rerun (stored analysis reused) stages nothing unless it cuts a newly kept clip. An object
that cannot be fetched is an error row of the stage that needed it (``not_found``, ``unreadable``), as a
missing local file is. Why a local copy rather than range reads through the store's file object:
BENCHMARKS.md, "Remote sources: per-unit staging vs range reads".
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from soraprep.stages import error_dict
from soraprep.storage import is_remote, local_copy

_PATH_COLUMNS = ("source", "path")


class StagedSources:
    """The local copies of one unit's remote sources (none is made for a local source)."""

    def __init__(self, storage_options: dict[str, Any] | None = None, scratch: str | Path | None = None):
        self._options = dict(storage_options or {})
        self._scratch = None if scratch is None else Path(scratch)
        self._local: dict[str, str] = {}  # URL -> local copy
        self._failed: dict[str, tuple[str, str]] = {}  # URL -> (kind, message)
        self._stack = contextlib.ExitStack()

    def _stage(self, url: str) -> None:
        if url in self._local or url in self._failed:
            return
        if self._scratch is not None:
            self._scratch.mkdir(parents=True, exist_ok=True)
        try:
            self._local[url] = str(self._stack.enter_context(local_copy(url, self._options, self._scratch)))
        except FileNotFoundError:
            self._failed[url] = ("not_found", f"no such object: {url}")
        except Exception as exc:  # noqa: BLE001 - access denied, network: the row says so, the run goes on
            self._failed[url] = ("unreadable", f"{url}: cannot fetch it: {type(exc).__name__}: {exc}")

    def localize(self, rows: list[dict[str, Any]], stage: str) -> None:
        """Point each healthy row with a remote source at its local copy, staging it now if needed."""
        for r in rows:
            src = r.get("source")
            if r.get("error") or not isinstance(src, str) or not is_remote(src):
                continue
            self._stage(src)
            if src in self._failed:
                r["error"] = error_dict(stage, *self._failed[src])
                continue
            for col in _PATH_COLUMNS:
                if r.get(col) == src:
                    r[col] = self._local[src]

    def restore(self, rows: list[dict[str, Any]]) -> None:
        """Rows name the URLs again wherever a stage copied a local copy's name (source, path, messages)."""
        if not self._local:
            return
        back = {local: url for url, local in self._local.items()}
        for r in rows:
            for col in _PATH_COLUMNS:
                if isinstance(r.get(col), str) and r[col] in back:
                    r[col] = back[r[col]]
            err = r.get("error")
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                for local, url in back.items():
                    if local in err["message"]:
                        err["message"] = err["message"].replace(local, url)

    def close(self) -> None:
        """Delete the local copies."""
        self._stack.close()
        self._local.clear()
