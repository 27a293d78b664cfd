"""InternVid (OpenGVLab, ICLR 2024): YouTube clips with generated captions and published scores.

Format (JSON Lines, one clip per line)::

    {"YoutubeID": "qJrOyggIB-w", "Start_timestamp": "00:07:33.689", "End_timestamp": "00:07:51.085",
     "Caption": "...", "Aesthetic_Score": 4.29, "UMT_Score": 0.45}

Timestamps are ``HH:MM:SS.mmm``. Scores keep their meaning under snake_case names
(``aesthetic_score``, ``umt_score``; any other ``*_Score`` likewise). Some re-hosts replace the
YouTube id by a local path (``videos/qJrOyggIB-w.mp4``): then the path is the source and its stem the
id. Clips of one video are numbered in order of appearance.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from soraprep.datasets.common import (
    ParseContext,
    RecordError,
    as_id,
    check_span,
    looks_like_path_or_url,
    parse_hms,
    require,
    snake,
    youtube_id,
    youtube_url,
)
from soraprep.datasets.records import read_records
from soraprep.datasets.registry import register

LICENSE = "InternVid: CC BY-NC-SA 4.0 (annotations); the videos remain the property of their YouTube owners"

_KNOWN = {"YoutubeID", "Start_timestamp", "End_timestamp", "Caption"}


def _identity(raw: str) -> tuple[str, str]:
    """(video_id, source) from a YoutubeID cell that may also be a URL or a local path."""
    if "://" in raw:
        yid = youtube_id(raw)
        return (yid or PurePosixPath(raw.split("?")[0]).stem), raw
    if looks_like_path_or_url(raw):
        return PurePosixPath(raw.replace("\\", "/")).stem, raw
    return raw, youtube_url(raw)


@register("internvid", license=LICENSE)
def parse(ctx: ParseContext) -> Iterator[dict[str, Any]]:
    counters: dict[str, int] = {}
    for rec in read_records(ctx.path):
        ctx.records_read += 1
        if rec.error:
            yield ctx.error_row(rec.line, rec.error.kind, str(rec.error))
            continue
        data = rec.data
        video_id = source = None
        try:
            (raw_id,) = require(data, "YoutubeID")
            video_id, source = _identity(as_id(raw_id))
            start, end = (parse_hms(v) for v in require(data, "Start_timestamp", "End_timestamp"))
            check_span(start, end)
            caption = data.get("Caption")
            if not isinstance(caption, str):
                raise RecordError("missing_field", "field 'Caption' is missing or not a string")
            extras = {}
            for key, value in data.items():
                if key in _KNOWN:
                    continue
                if key.lower().endswith("score"):
                    if isinstance(value, bool) or not isinstance(value, (int, float)):
                        raise RecordError("bad_value", f"{key} {value!r} is not a number")
                    value = float(value)
                extras[snake(key)] = value
        except RecordError as exc:
            yield ctx.error_row(rec.line, exc.kind, str(exc), video_id=video_id, source=source)
            continue
        index = counters.get(video_id, 0)
        counters[video_id] = index + 1
        row = ctx.base_row(rec.line, video_id=video_id, source=source, clip_index=index,
                           start_s=start, end_s=end, text=caption)
        row.update(extras)
        yield row
