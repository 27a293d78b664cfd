"""VideoInstruct-100K (Video-ChatGPT, Maaz et al., ACL 2024): question-answer pairs on ActivityNet videos.

Format: one JSON list of ``{"q": question, "a": answer, "video_id": "v_<YouTubeID>"}``; several
pairs per video. Some answers end with a provenance tag ``\\nQA_GT_caption_based_noisy``, which is
not part of the answer and is removed (``qa_noisy`` records where it was). Rows are one per *video*
(the clip is the whole video): ``captions`` holds every answer in file order, ``questions`` the
aligned questions, and ``text`` the first answer, otherwise verbatim.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from soraprep.datasets.common import ParseContext, RecordError, as_id, youtube_url
from soraprep.datasets.records import read_records
from soraprep.datasets.registry import register

LICENSE = ("VideoInstruct-100K: CC BY 4.0 annotations (Video-ChatGPT); the ActivityNet videos remain "
           "the property of their YouTube owners")

NOISY_SUFFIX = re.compile(r"\n?QA_GT_caption_based_noisy\Z")


def strip_noisy(answer: str) -> tuple[str, bool]:
    """Remove the ``\\nQA_GT_caption_based_noisy`` tag; return (answer, whether it was there)."""
    out, n = NOISY_SUFFIX.subn("", answer)
    return out, bool(n)


def source_for(video_id: str) -> str:
    """``v_GqWH2IYPw6U`` -> the YouTube URL of ``GqWH2IYPw6U`` (ActivityNet's ``v_`` prefix removed)."""
    yid = video_id[2:] if video_id.startswith("v_") else video_id
    return youtube_url(yid)


@register("videoinstruct", license=LICENSE)
def parse(ctx: ParseContext) -> Iterator[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    errors: list[dict[str, Any]] = []
    for rec in read_records(ctx.path):
        ctx.records_read += 1
        if rec.error:
            errors.append(ctx.error_row(rec.line, rec.error.kind, str(rec.error)))
            continue
        data, vid = rec.data, None
        try:
            if data.get("video_id") in (None, ""):
                raise RecordError("missing_field", "field 'video_id' is missing or empty")
            vid = as_id(data["video_id"])
            q, a = data.get("q"), data.get("a")
            if not isinstance(a, str):
                raise RecordError("missing_field", "field 'a' (the answer) is missing or not text")
            if q is not None and not isinstance(q, str):
                raise RecordError("bad_value", "field 'q' is not text")
        except RecordError as exc:
            errors.append(ctx.error_row(rec.line, exc.kind, str(exc), video_id=vid,
                                        source=source_for(vid) if vid else None))
            continue
        answer, noisy = strip_noisy(a)
        g = groups.setdefault(vid, {"line": rec.line, "answers": [], "questions": [], "noisy": []})
        g["answers"].append(answer)
        g["questions"].append(q)
        g["noisy"].append(noisy)
    for vid, g in groups.items():
        row = ctx.base_row(g["line"], video_id=vid, source=source_for(vid), clip_index=0,
                           text=g["answers"][0], captions=g["answers"])
        row["questions"] = g["questions"]
        row["qa_noisy"] = g["noisy"]
        yield row
    yield from errors
