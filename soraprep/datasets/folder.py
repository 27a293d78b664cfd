"""A folder of your own videos -> one manifest row per video (the whole video is the clip).

Files are recognised by their content (magic bytes, see :mod:`soraprep.video.sniff`), then probed
(container metadata, no decoding): a video without an extension is found, and a ``.mp4`` that is really
a text or HTML file becomes an error row rather than a crash later. Other files (``.txt``, ``.json``,
images) are not videos and are not rows; an entry named like a video that is not a regular file (FIFO,
socket, broken link, symlink loop, folder) is an error row, found by ``stat`` and never opened. The walk is recursive, sorted (deterministic), and does not
follow symlinked folders (no loops). A caption next to a video (``clip.mp4`` + ``clip.txt``) becomes its
``text``, verbatim apart from the final line break.

``video_id`` is the path relative to the folder (``sub/clip.mp4``), so it is unique and stable.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from soraprep.datasets.common import MetadataError, ParseContext
from soraprep.datasets.registry import register
from soraprep.types import fps_columns
from soraprep.video.sniff import VIDEO_EXTENSIONS, sniff_file


def iter_files(root: Path) -> Iterator[Path]:
    """Every entry under ``root`` that may be a video, sorted by relative path, without following symlinked
    folders: regular files, and anything else named like a video (FIFO, socket, broken link, symlink loop,
    a folder called ``x.mp4``), which :func:`parse` turns into an error row without opening it."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames + [d for d in dirnames if Path(d).suffix.lower() in VIDEO_EXTENSIONS]:
            p = Path(dirpath) / name
            if p.is_file() or p.suffix.lower() in VIDEO_EXTENSIONS:
                found.append((p.relative_to(root).as_posix(), p))
    for _, p in sorted(found):
        yield p


def _sidecar_caption(path: Path) -> str | None:
    txt = path.with_suffix(".txt")
    if txt == path or not txt.is_file():
        return None
    try:
        text = txt.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return text[:-1] if text.endswith("\n") else text


@register("folder", license="your own videos: check that you hold the rights to train on them")
def parse(ctx: ParseContext) -> Iterator[dict[str, Any]]:
    from soraprep.video.io import VideoError, not_a_file, probe

    root = ctx.path
    if not root.is_dir():
        raise MetadataError(f"{root} is not a folder; --dataset folder scans a directory of videos")
    for path in iter_files(root):
        rel = path.relative_to(root).as_posix()
        problem = not_a_file(path)  # stat only: a FIFO is never opened (that would block forever)
        if problem:
            ctx.records_read += 1
            source = os.path.abspath(path)
            yield ctx.error_row(None, problem[0], problem[1], video_id=rel, source=source, clip_index=0,
                                location=source)
            continue
        container = sniff_file(path)
        has_ext = path.suffix.lower() in VIDEO_EXTENSIONS
        if container is None and not has_ext:
            continue  # not a video by name or by content
        ctx.records_read += 1
        source = str(path.resolve())
        if container is None:
            yield ctx.error_row(None, "not_video", "has a video extension but its content is not a video "
                                "container", video_id=rel, source=source, clip_index=0, location=source)
            continue
        try:
            info = probe(source)
        except VideoError as exc:
            yield ctx.error_row(None, getattr(exc, "kind", None) or "probe_failed", str(exc),
                                video_id=rel, source=source, clip_index=0, location=source)
            continue
        text = _sidecar_caption(path)
        row = ctx.base_row(None, video_id=rel, source=source, clip_index=0, text=text)
        row.update({
            "num_frames": info.num_frames, "height": info.height, "width": info.width,
            "aspect_ratio": info.height / info.width if info.width else None,
            "resolution": info.height * info.width, **fps_columns(info.fps),
            "duration_s": info.duration_s, "codec": info.codec, "container": container,
        })
        yield row
