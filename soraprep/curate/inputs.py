"""Inputs to curation: video files, folders (recursive), or manifests whose rows name sources and spans.

Each input becomes one *work unit* (one source video, or one span of it), with a deterministic key so a
rerun finds what an interrupted run already committed. Rows of an input manifest keep their extra
columns (dataset, captions, published scores...) on every clip cut from them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from soraprep.manifest import TMP_PREFIX, read_manifest, resolve_path
from soraprep.video.io import video_id_for

VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts",
                    ".flv", ".wmv", ".3gp", ".ogv", ".vob", ".mxf", ".y4m", ".gif"}
MANIFEST_EXTENSIONS = {".parquet", ".jsonl"}
# columns an input manifest row may carry that curation recomputes for each clip
_RECOMPUTED = {"path", "num_frames", "height", "width", "aspect_ratio", "resolution", "fps", "fps_rational",
               "start_frame", "end_frame", "duration_s", "clip_index", "codec", "cut_mode", "keep",
               "filter_reason", "bucket", "bucket_height", "bucket_width", "bucket_frames", "provenance"}


class InputError(ValueError):
    """An input argument that cannot be used (a usage error: exit code 2)."""


def unit_key(source: str, start_s: float | None, end_s: float | None, base_id: str) -> str:
    raw = f"{source}\x00{start_s}\x00{end_s}\x00{base_id}"
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def _file_unit(path: Path) -> dict[str, Any]:
    src = os.path.abspath(path)  # not resolve(): a symlink stays the name the user gave
    vid = video_id_for(path)
    return {"source": src, "video_id": vid, "_base_id": vid, "_key": unit_key(src, None, None, vid)}


def _manifest_units(path: Path) -> list[dict[str, Any]]:
    rows = read_manifest(path)
    if rows and not any(("source" in r or "path" in r) for r in rows):
        raise InputError(f"{path}: no 'source' (or 'path') column naming the videos; is this a soraprep manifest?")
    units = []
    for i, row in enumerate(rows):
        src = row.get("source") or row.get("path")
        if src and "://" not in src:
            src = resolve_path(path, src)
        vid = str(row.get("video_id") or (video_id_for(src) if src else f"row{i}"))
        base = str(row.get("clip_id") or vid)
        start, end = row.get("start_s"), row.get("end_s")
        unit = {k: v for k, v in row.items() if k not in _RECOMPUTED and v is not None}
        unit.update(source=src, video_id=vid, _base_id=base,
                    _key=unit_key(src or f"{path}#{i}", start, end, base),
                    _span_s=(start, end) if start is not None or end is not None else None)
        if not src and not unit.get("error"):
            unit["error"] = {"stage": "input", "kind": "no_source",
                             "message": f"{path}: row {i} names no source video"}
        if unit.get("error"):  # rows that failed upstream (e.g. at ingest) pass through, accounted for
            unit["clip_id"] = base
        units.append(unit)
    return units


def skipped_folder(folder: Path, skip: set[str]) -> bool:
    """A folder a folder scan does not enter: this run's OUT (in ``skip``, resolved paths), or any folder
    holding a soraprep run (a ``.soraprep/`` marker: its clips are outputs, not inputs). So an OUT inside
    the input folder is never re-ingested."""
    return (folder.name == ".soraprep" or (folder / ".soraprep").is_dir()
            or folder.resolve().as_posix() in skip)


def check_input_folder(folder: Path, skip: set[str]) -> None:
    """A folder named as an input must not be OUT or another run's OUT (a usage error)."""
    if folder.resolve().as_posix() in skip:
        raise InputError(f"{folder} is the output folder itself; give the folder of the source videos")
    if (folder / ".soraprep").is_dir():
        raise InputError(f"{folder} holds a soraprep run ({folder / '.soraprep'}); to curate its clips again "
                         f"give its manifest.parquet (or its clips/ folder) instead")


def _folder_files(folder: Path, skip: set[str]) -> list[Path]:
    """Video files under ``folder`` (recursive; folder symlinks are not followed), minus skipped folders."""
    check_input_folder(folder, skip)
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not skipped_folder(Path(root, d), skip)]
        files += [Path(root, n) for n in names]
    return sorted(f for f in files if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS
                  and not f.name.startswith((".partial-", TMP_PREFIX)))  # half-written files


def collect_units(inputs: list[str], *, skip_dirs: tuple[str | os.PathLike, ...] = ()) -> list[dict[str, Any]]:
    """Work units for the given inputs, in a stable order; raises InputError for unusable arguments.

    Folders are searched recursively, except ``skip_dirs`` (the run's OUT) and any folder holding a
    soraprep run."""
    if not inputs:
        raise InputError("give at least one video file, folder or manifest (.parquet/.jsonl)")
    skip = {Path(d).resolve().as_posix() for d in skip_dirs}
    units: list[dict[str, Any]] = []
    for arg in inputs:
        p = Path(arg)
        if p.is_dir():
            units += [_file_unit(f) for f in _folder_files(p, skip)]
        elif p.suffix.lower() in MANIFEST_EXTENSIONS and p.is_file():
            units += _manifest_units(p)
        elif p.exists() or p.is_symlink():
            units.append(_file_unit(p))  # any file named explicitly is tried: bad ones become error rows
        elif "://" in arg:
            vid = video_id_for(arg)
            units.append({"source": arg, "video_id": vid, "_base_id": vid, "_key": unit_key(arg, None, None, vid)})
        else:
            # a missing path named explicitly: record it (a row with an error), do not abort the run
            vid = video_id_for(arg)
            units.append({"source": os.path.abspath(arg), "video_id": vid, "_base_id": vid,
                          "_key": unit_key(os.path.abspath(arg), None, None, vid)})
    seen: set[str] = set()
    unique = []
    for u in units:  # the same video named twice is curated once
        if u["_key"] not in seen:
            seen.add(u["_key"])
            unique.append(u)
    return unique
