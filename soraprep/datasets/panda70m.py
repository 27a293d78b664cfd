"""Panda-70M (Snap Research, CVPR 2024): YouTube videos split into captioned clips.

Format (CSV, one row per YouTube video, several clips per row)::

    videoID,url,timestamp,caption,matching_score[,desirable_filtering,shot_boundary_detection]

``timestamp``, ``caption``, ``matching_score`` (and the Oct-2024 columns) are *Python literals*, one
entry per clip: ``"[['0:00:19.227', '0:00:28.278'], ...]"``. Captions may contain ``"`` (CSV doubles
it) and ``'`` (the literal then switches to double quotes), so the cells are read with the csv module and
``ast.literal_eval``, never split by hand and never ``eval``-ed. ``shot_boundary_detection`` lists
each clip's shots relative to the *clip* start; rows carry them both as published (``shots_rel_s``)
and in source-video time (``shots_s``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from soraprep.datasets.common import (
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

LICENSE = ("Panda-70M: research use only, non-commercial (Snap Inc. license); the videos remain "
           "the property of their YouTube owners")


def _span(pair: Any) -> tuple[float, float]:
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise RecordError("bad_timestamp", f"timestamp {pair!r} is not a [start, end] pair")
    start, end = parse_hms(pair[0]), parse_hms(pair[1])
    check_span(start, end)
    return start, end


def _optional_list(data: dict[str, Any], name: str, n: int) -> list[Any] | None:
    cell = data.get(name)
    if cell is None or (isinstance(cell, str) and not cell.strip()):
        return None
    values = literal(cell, name)
    if len(values) != n:
        raise RecordError("length_mismatch", f"{name!r} has {len(values)} entries, 'timestamp' has {n}")
    return values


@register("panda70m", license=LICENSE)
def parse(ctx: ParseContext) -> Iterator[dict[str, Any]]:
    for rec in read_records(ctx.path):
        ctx.records_read += 1
        if rec.error:
            yield ctx.error_row(rec.line, rec.error.kind, str(rec.error))
            continue
        data = {k.strip(): v for k, v in rec.data.items()}
        video_id = as_id(data["videoID"]) if data.get("videoID") else None
        source = (data.get("url") or "").strip() or (youtube_url(video_id) if video_id else None)
        try:
            require(data, "videoID", "timestamp", "caption")
            stamps = literal(data["timestamp"], "timestamp")
            captions = literal(data["caption"], "caption")
            if len(captions) != len(stamps):
                raise RecordError("length_mismatch",
                                  f"'caption' has {len(captions)} entries, 'timestamp' has {len(stamps)}")
            scores = _optional_list(data, "matching_score", len(stamps))
            filtering = _optional_list(data, "desirable_filtering", len(stamps))
            shots = _optional_list(data, "shot_boundary_detection", len(stamps))
        except RecordError as exc:
            yield ctx.error_row(rec.line, exc.kind, str(exc), video_id=video_id, source=source)
            continue
        for i, (pair, caption) in enumerate(zip(stamps, captions, strict=True)):
            try:
                start, end = _span(pair)
                if not isinstance(caption, str):
                    raise RecordError("bad_literal", f"caption {i} is {type(caption).__name__}, not a string")
                row = ctx.base_row(rec.line, video_id=video_id, source=source, clip_index=i,
                                   start_s=start, end_s=end, text=caption)
                if scores is not None:
                    row["matching_score"] = float(scores[i])
                if filtering is not None:
                    row["desirable_filtering"] = str(filtering[i])
                if shots is not None:
                    rel = [list(_span(s)) for s in shots[i]]
                    row["shots_rel_s"] = rel
                    row["shots_s"] = [[round(start + a, 6), round(start + b, 6)] for a, b in rel]
            except RecordError as exc:
                yield ctx.error_row(rec.line, exc.kind, f"clip {i}: {exc}", video_id=video_id,
                                    source=source, clip_index=i)
                continue
            except (TypeError, ValueError) as exc:
                yield ctx.error_row(rec.line, "bad_value", f"clip {i}: {exc}", video_id=video_id,
                                    source=source, clip_index=i)
                continue
            yield row
