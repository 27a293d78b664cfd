"""WebVid-10M / WebVid-2M (Bain et al., ICCV 2021): Shutterstock preview videos with their alt text.

Format (CSV, one row per whole video): the 10M files use the header
``videoid,name,page_idx,page_dir,duration,contentUrl`` and the 2M files
``videoid,contentUrl,duration,page_dir,name``, so columns are looked up by name, never by position.
``duration`` is ISO-8601 (``PT00H00M17S``); ``videoid`` is kept as a string (``'1053841541'``);
``page_dir`` can be empty. The caption (``name``) is stored verbatim. Rows cover the whole video, so
``start_s``/``end_s`` stay null and the published duration goes to ``duration_s`` (and
``published_duration_s``, which curation does not overwrite).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from soraprep.datasets.common import (
    MetadataError,
    ParseContext,
    RecordError,
    as_id,
    parse_iso8601_duration,
    require,
)
from soraprep.datasets.records import read_records
from soraprep.datasets.registry import register

LICENSE = ("WebVid: non-commercial research use only; distribution was stopped by its authors in "
           "Feb 2024 at Shutterstock's request; the videos belong to Shutterstock")

_REQUIRED = ("videoid", "contenturl", "name")


@register("webvid", license=LICENSE)
def parse(ctx: ParseContext) -> Iterator[dict[str, Any]]:
    checked = False
    for rec in read_records(ctx.path):
        ctx.records_read += 1
        if rec.error:
            yield ctx.error_row(rec.line, rec.error.kind, str(rec.error))
            continue
        data = {k.strip().lower(): v for k, v in rec.data.items()}
        if not checked:
            missing = [c for c in _REQUIRED if c not in data]
            if missing:
                raise MetadataError(f"{ctx.path}: not a WebVid CSV, missing column(s) {missing}; expected "
                                    "videoid,name,page_idx,page_dir,duration,contentUrl")
            checked = True
        video_id = as_id(data["videoid"]) if str(data.get("videoid") or "").strip() else None
        source = (data.get("contenturl") or "").strip() or None
        try:
            require(data, "videoid", "contenturl")
            if data.get("name") is None:
                raise RecordError("missing_field", "field 'name' is missing")
            duration = None
            if str(data.get("duration") or "").strip():
                duration = parse_iso8601_duration(data["duration"])
            page_idx = None
            if str(data.get("page_idx") or "").strip():
                try:
                    page_idx = int(str(data["page_idx"]).strip())
                except ValueError:
                    raise RecordError("bad_value", f"page_idx {data['page_idx']!r} is not an integer") from None
        except RecordError as exc:
            yield ctx.error_row(rec.line, exc.kind, str(exc), video_id=video_id, source=source)
            continue
        row = ctx.base_row(rec.line, video_id=video_id, source=source, clip_index=0, text=data["name"])
        row["published_duration_s"] = row["duration_s"] = duration  # the whole video is the clip
        row["page_idx"] = page_idx
        row["page_dir"] = str(data.get("page_dir") or "").strip() or None
        yield row
