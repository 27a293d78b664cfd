"""MSR-VTT (Xu et al., CVPR 2016): 10,000 YouTube clips, 20 English captions each.

Three layouts are in circulation, all read by this parser into one row per clip with *all* captions
(``captions``, duplicates kept: they are in the data) and the first one as ``text``:

* **original** ``train_val_videodatainfo.json`` / ``test_videodatainfo.json``: an object with
  ``videos[]`` (``category, url, video_id, "start time", "end time", split, id`` — keys with spaces,
  times in float seconds within the YouTube video) and ``sentences[]`` (``caption, video_id, sen_id``).
* **grouped** (LAVIS / Panda-70M eval style): a JSON list of ``{"video": "video7010.mp4",
  "caption": [20 strings]}`` (or one ``caption`` string per record: the flattened LAVIS train file).
* **flattened re-host** (HF ``AlexZigma/msr-vtt``): one record per sentence with the video's fields
  repeated (``video_id, caption, sen_id, category, url, start time, end time, split, id``), as
  Parquet, CSV/TSV or JSON Lines; values may arrive as strings (``'211.93'``). The JSFusion/CLIP4Clip
  split CSVs (``key,vid_key,video_id,sentence`` or just ``video_id``) read the same way.

With a URL and a span the source is the YouTube video and the span is the clip; in the grouped layout
the source is the published clip file name (relative: resolve it against your video folder).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from soraprep.datasets.common import ParseContext, RecordError, as_id, check_span, norm_split, parse_seconds
from soraprep.datasets.records import Record, json_object_arrays, read_records
from soraprep.datasets.registry import register

LICENSE = ("MSR-VTT: research use (Microsoft Research; annotations released for research); the videos "
           "remain the property of their YouTube owners")


def _starts_with_object(path: Path) -> bool:
    if path.suffix.lower() == ".parquet":
        return False
    with open(path, "rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1] == b"{"


def _original_records(path: Path) -> tuple[list[Record], list[Record]] | None:
    arrays = json_object_arrays(path, ("videos", "sentences"))
    if not arrays["videos"] and not arrays["sentences"]:
        return None

    def wrap(items: list[tuple[int, Any]]) -> list[Record]:
        out = []
        for line, v in items:
            if isinstance(v, RecordError):
                out.append(Record(line, None, v))
            elif not isinstance(v, dict):
                out.append(Record(line, None, RecordError("bad_json", f"expected an object, got {type(v).__name__}")))
            else:
                out.append(Record(line, v))
        return out

    return wrap(arrays["videos"]), wrap(arrays["sentences"])


def _video_key(data: dict[str, Any]) -> tuple[str, str | None]:
    """(video_id, published file name or None) of a record in any layout."""
    if data.get("video_id") not in (None, ""):
        return as_id(data["video_id"]), None
    if data.get("video") not in (None, ""):
        name = str(data["video"])
        return PurePosixPath(name.replace("\\", "/")).stem, name
    raise RecordError("missing_field", "record has neither 'video_id' nor 'video'")


def _captions(data: dict[str, Any]) -> list[str]:
    cap = data.get("caption", data.get("sentence"))  # JSFusion / CLIP4Clip CSVs call it 'sentence'
    caps = cap if isinstance(cap, list) else [cap]
    if cap is None or not all(isinstance(c, str) for c in caps):
        raise RecordError("missing_field", "field 'caption' is missing or not text")
    return caps


class _Group:
    def __init__(self, line: int, video_id: str, file_name: str | None) -> None:
        self.line, self.video_id, self.file_name = line, video_id, file_name
        self.meta: dict[str, Any] | None = None
        self.captions: list[str] = []
        self.sen_ids: list[int] = []
        self.meta_failed = False  # its video fields were malformed: the error rows stand for it


def _set_meta(group: _Group, data: dict[str, Any]) -> None:
    if group.meta is not None or "url" not in data and "start time" not in data:
        return
    meta: dict[str, Any] = {"url": (str(data.get("url") or "").strip() or None)}
    if data.get("start time") not in (None, "") or data.get("end time") not in (None, ""):
        start = parse_seconds(data.get("start time"), "'start time'")
        end = parse_seconds(data.get("end time"), "'end time'")
        check_span(start, end)
        meta["start_s"], meta["end_s"] = start, end
    meta["split"] = norm_split(data.get("split"))
    for key, name in (("category", "category"), ("id", "msrvtt_id")):
        if data.get(key) not in (None, ""):
            try:
                meta[name] = int(float(data[key]))
            except (TypeError, ValueError):
                raise RecordError("bad_value", f"{key!r} {data[key]!r} is not an integer") from None
    group.meta = meta


@register("msrvtt", license=LICENSE)
def parse(ctx: ParseContext) -> Iterator[dict[str, Any]]:
    original = _original_records(ctx.path) if _starts_with_object(ctx.path) else None
    groups: dict[str, _Group] = {}
    pending_errors: list[dict[str, Any]] = []

    def take(rec: Record, *, video_record: bool, sentence_record: bool, original_layout: bool) -> None:
        ctx.records_read += 1
        if rec.error:
            pending_errors.append(ctx.error_row(rec.line, rec.error.kind, str(rec.error)))
            return
        data, vid = rec.data, None
        try:
            vid, file_name = _video_key(data)
            group = groups.get(vid)
            if group is None:
                if original_layout and sentence_record:
                    raise RecordError("unknown_video", f"sentence refers to {vid!r}, which is not in videos[]")
                group = groups[vid] = _Group(rec.line, vid, file_name)
            if video_record:
                try:
                    _set_meta(group, data)
                except (RecordError, TypeError, ValueError):
                    group.meta_failed = True
                    raise
            if sentence_record:
                caps = _captions(data)
                group.captions.extend(caps)
                if data.get("sen_id") not in (None, ""):
                    group.sen_ids.append(int(float(data["sen_id"])))
        except RecordError as exc:
            pending_errors.append(ctx.error_row(rec.line, exc.kind, str(exc), video_id=vid))
        except (TypeError, ValueError) as exc:
            pending_errors.append(ctx.error_row(rec.line, "bad_value", str(exc), video_id=vid))

    if original is not None:
        videos, sentences = original
        for rec in videos:
            take(rec, video_record=True, sentence_record=False, original_layout=True)
        for rec in sentences:
            take(rec, video_record=False, sentence_record=True, original_layout=True)
    else:
        for rec in read_records(ctx.path):
            # a record without 'caption' describes the video only (a videos[] record on its own)
            has_caption = rec.data is not None and ("caption" in rec.data or "sentence" in rec.data)
            take(rec, video_record=True, sentence_record=has_caption, original_layout=False)

    for g in groups.values():
        if g.meta is None and g.meta_failed:
            continue
        meta = g.meta or {}
        file_name = g.file_name or f"{g.video_id}.mp4"
        source = meta.get("url") or file_name
        row = ctx.base_row(g.line, video_id=g.video_id, source=source, clip_index=0,
                           start_s=meta.get("start_s"), end_s=meta.get("end_s"),
                           text=g.captions[0] if g.captions else None, captions=list(g.captions))
        row["file_name"] = file_name
        if g.sen_ids and len(g.sen_ids) == len(g.captions):
            row["sen_ids"] = g.sen_ids
        for key in ("split", "category", "msrvtt_id"):
            if meta.get(key) is not None:
                row[key] = meta[key]
        yield row
    yield from pending_errors
