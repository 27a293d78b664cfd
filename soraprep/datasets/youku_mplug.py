"""Youku-mPLUG (Xu et al., 2023): Chinese video-text data from Youku, released on ModelScope as CSVs.

ModelScope marks a path column by appending ``:FILE`` to its name. Four subsets, told apart by their
columns:

=============== ========================================= ===================================
subset          columns                                   text
=============== ========================================= ===================================
pretrain        ``video_id:FILE, title``                  ``title``
classification  ``video_id:FILE, title, label``           ``title`` (``label`` kept)
retrieval       ``clip_name:FILE, caption``               ``caption``
captioning      ``video_id:FILE, golden_caption``         ``golden_caption`` (a string or a
                                                          list literal of several captions)
=============== ========================================= ===================================

The path is the source (relative to where the videos were unpacked) and its stem the video id.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from soraprep.datasets.common import MetadataError, ParseContext, RecordError, literal
from soraprep.datasets.records import read_records
from soraprep.datasets.registry import register

LICENSE = ("Youku-mPLUG: research use only, non-commercial (Alibaba / Youku license terms on ModelScope); "
           "the videos belong to Youku")

_PATH_COLUMNS = ("video_id", "clip_name")
_TEXT_COLUMNS = ("golden_caption", "caption", "title")


def subset_of(columns: set[str]) -> str:
    if "golden_caption" in columns:
        return "captioning"
    if "clip_name" in columns:
        return "retrieval"
    if "label" in columns:
        return "classification"
    return "pretrain"


def captions_of(cell: Any) -> list[str]:
    """A caption cell: a plain string, or a list literal of strings (``"['...', '...']"``).

    A bracketed cell that is not a Python literal (``"[广告] ..."``) is a plain caption.
    """
    if isinstance(cell, list):
        caps = cell
    elif isinstance(cell, str) and cell.strip().startswith("[") and cell.strip().endswith("]"):
        try:
            caps = literal(cell, "golden_caption")
        except RecordError:
            return [cell]
    else:
        return [cell]
    if not caps or not all(isinstance(c, str) for c in caps):
        raise RecordError("bad_literal", "caption list is empty or holds non-text entries")
    return caps


@register("youku-mplug", license=LICENSE)
def parse(ctx: ParseContext) -> Iterator[dict[str, Any]]:
    for rec in read_records(ctx.path):
        ctx.records_read += 1
        if rec.error:
            yield ctx.error_row(rec.line, rec.error.kind, str(rec.error))
            continue
        data = {k.strip().removesuffix(":FILE"): v for k, v in rec.data.items()}
        path_col = next((c for c in _PATH_COLUMNS if c in data), None)
        text_col = next((c for c in _TEXT_COLUMNS if c in data), None)
        if path_col is None or text_col is None:
            raise MetadataError(f"{ctx.path}: not a Youku-mPLUG CSV; expected a 'video_id:FILE' or "
                                f"'clip_name:FILE' column and one of {list(_TEXT_COLUMNS)}, got {list(rec.data)}")
        raw = str(data.get(path_col) or "").strip()
        vid = PurePosixPath(raw.replace("\\", "/")).stem if raw else None
        try:
            if not raw:
                raise RecordError("missing_field", f"field {path_col!r} is missing or empty")
            cell = data.get(text_col)
            if cell is None or (isinstance(cell, str) and not cell.strip()):
                raise RecordError("missing_field", f"field {text_col!r} is missing or empty")
            caps = captions_of(cell)
        except RecordError as exc:
            yield ctx.error_row(rec.line, exc.kind, str(exc), video_id=vid, source=raw or None)
            continue
        row = ctx.base_row(rec.line, video_id=vid, source=raw, clip_index=0, text=caps[0], captions=caps)
        row["subset"] = subset_of(set(data))
        if "label" in data:
            row["label"] = data["label"]
        yield row
