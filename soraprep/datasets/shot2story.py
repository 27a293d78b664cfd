"""Shot2Story (Han et al., 2023): multi-shot clips from HD-VILA-100M with per-shot captions.

Two inputs, told apart by their content:

* **annotations** (``20k_train.json``, ``134k_full_train.json``, ...): a JSON list of
  ``{video, image_id, nvid, id, whole_caption, whole_ASR, video_names[], audio_captions[], captions[],
  ASR[]}`` whose per-shot arrays are aligned. Shot files are named ``{clip}_{startFrame}_{endFrame}.mp4``
  — *frame indices* into the clip ``video`` — so ``--fps`` (the clip's frame rate) is required to turn
  them into seconds. One row per shot: source = the clip file (relative), span = the shot, ``text`` =
  the shot caption; ``whole_caption`` (the video summary), ``audio_caption`` and ``asr`` ride along.
  The authors cut shots at ``startFrame / fps`` for ``(endFrame - startFrame) / fps`` seconds, so
  ``[startFrame, endFrame)`` is half-open here as well.
* **meta CSV** (``20k_meta.csv``: ``clip_id,categories,duration,youtube_id``): where each clip lies in
  its YouTube video; ``duration`` is a literal ``['00:12:10.470', '00:12:23.490']``. One row per clip,
  source = the YouTube URL, ``clip_id`` = the published clip id. No captions (they are in the JSON).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from soraprep.datasets.common import (
    MetadataError,
    ParseContext,
    RecordError,
    as_id,
    check_span,
    literal,
    parse_hms,
    require,
    youtube_url,
)
from soraprep.datasets.records import read_records
from soraprep.datasets.registry import register

LICENSE = ("Shot2Story: annotations CC BY-NC-SA 4.0 (ByteDance); the videos (from HD-VILA-100M) remain "
           "the property of their YouTube owners")

SHOT_NAME = re.compile(r"^(?P<clip>.+)_(?P<start>\d+)_(?P<end>\d+)\.[A-Za-z0-9]+$")

_ALIGNED = (("captions", "text"), ("audio_captions", "audio_caption"), ("ASR", "asr"))


def parse_shot_name(name: str) -> tuple[str, int, int]:
    """``'LEwayCpIk20.78_0_120.mp4'`` -> ``('LEwayCpIk20.78', 0, 120)``."""
    m = SHOT_NAME.match(PurePosixPath(str(name)).name)
    if not m:
        raise RecordError("bad_shot_name", f"shot name {name!r} is not '{{clip}}_{{startFrame}}_{{endFrame}}.mp4'")
    start, end = int(m.group("start")), int(m.group("end"))
    if end <= start:
        raise RecordError("bad_span", f"shot {name!r} ends at frame {end}, not after its start {start}")
    return m.group("clip"), start, end


def _annotation_rows(ctx: ParseContext, line: int, data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    video = data.get("video") or data.get("nvid") or data.get("image_id")
    if not isinstance(video, str) or not video.strip():
        raise RecordError("missing_field", "field 'video' is missing or empty")
    video_id = PurePosixPath(video.replace("\\", "/")).stem
    names = data.get("video_names")
    if not isinstance(names, list) or not names:
        raise RecordError("missing_field", "field 'video_names' is missing or empty")
    for key, _ in _ALIGNED:
        if key in data and data[key] is not None:
            if not isinstance(data[key], list) or len(data[key]) != len(names):
                n = len(data[key]) if isinstance(data[key], list) else type(data[key]).__name__
                raise RecordError("length_mismatch", f"{key!r} has {n} entries, 'video_names' has {len(names)}")
    if not isinstance(data.get("captions"), list):
        raise RecordError("missing_field", "field 'captions' is missing")
    fps = ctx.fps
    for i, name in enumerate(names):
        try:
            _, start, end = parse_shot_name(name)
            caption = data["captions"][i]
            if not isinstance(caption, str):
                raise RecordError("bad_value", f"caption {i} is not text")
        except RecordError as exc:
            yield ctx.error_row(line, exc.kind, f"shot {i}: {exc}", video_id=video_id, source=video, clip_index=i)
            continue
        row = ctx.base_row(line, video_id=video_id, source=video, clip_index=i,
                           start_s=float(start / fps), end_s=float(end / fps), text=caption)
        row["start_frame"], row["end_frame"] = start, end
        row["fps_rational"] = str(fps)
        row["shot_file"] = name
        for key, col in _ALIGNED[1:]:
            if data.get(key) is not None:
                row[col] = data[key][i]
        row["whole_caption"] = data.get("whole_caption")
        row["youtube_id"] = video_id.rsplit(".", 1)[0]
        if data.get("id") is not None:
            row["shot2story_id"] = as_id(data["id"])
        yield row


def _meta_row(ctx: ParseContext, line: int, data: dict[str, Any]) -> dict[str, Any]:
    clip_id, cell, yid = require(data, "clip_id", "duration", "youtube_id")
    span = literal(cell, "duration", (list, tuple))
    if len(span) != 2:
        raise RecordError("bad_timestamp", f"duration {cell!r} is not a [start, end] pair")
    start, end = parse_hms(span[0]), parse_hms(span[1])
    check_span(start, end)
    clip_id, yid = as_id(clip_id), as_id(yid)
    tail = clip_id.rsplit(".", 1)[-1]
    row = ctx.base_row(line, video_id=yid, source=youtube_url(yid), clip_index=int(tail) if tail.isdigit() else 0,
                       start_s=start, end_s=end, text=None, captions=[])
    row["clip_id"] = clip_id
    if str(data.get("categories") or "").strip():
        row["categories"] = [str(c) for c in literal(data["categories"], "categories")]
    return row


@register("shot2story", license=LICENSE, needs_fps=True)
def parse(ctx: ParseContext) -> Iterator[dict[str, Any]]:
    for rec in read_records(ctx.path):
        ctx.records_read += 1
        if rec.error:
            yield ctx.error_row(rec.line, rec.error.kind, str(rec.error))
            continue
        data = rec.data
        if "video_names" in data or "captions" in data:
            if ctx.fps is None:
                raise MetadataError("Shot2Story shot names count frames ('{clip}_{startFrame}_{endFrame}.mp4'); "
                                    "pass the clips' frame rate with --fps (e.g. --fps 30 or --fps 30000/1001)")
            try:
                yield from _annotation_rows(ctx, rec.line, data)
            except RecordError as exc:
                video = data.get("video")
                vid = PurePosixPath(str(video)).stem if isinstance(video, str) and video else None
                yield ctx.error_row(rec.line, exc.kind, str(exc), video_id=vid,
                                    source=video if isinstance(video, str) else None)
        elif "youtube_id" in data or "clip_id" in data:
            try:
                yield _meta_row(ctx, rec.line, data)
            except RecordError as exc:
                yield ctx.error_row(rec.line, exc.kind, str(exc),
                                    video_id=str(data.get("youtube_id") or "") or None)
        else:
            raise MetadataError(f"{ctx.path}:{rec.line}: not Shot2Story: expected annotation records with "
                                "'video_names'/'captions' or the meta CSV 'clip_id,categories,duration,youtube_id'")
