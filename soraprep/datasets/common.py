"""Shared pieces of the dataset parsers: the parse context and the rows it builds (good rows and error
rows that say ``file:line: what is wrong``), time formats, Python literals, splits and YouTube ids.

Reading files record by record, with line numbers, is :mod:`soraprep.datasets.records`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from soraprep.stages import error_dict

#: Largest cell a parser will hand to ``ast.literal_eval`` (a guard against pathological input).
MAX_LITERAL_CHARS = 5_000_000

class MetadataError(ValueError):
    """A metadata file that cannot be used at all (wrong format, missing columns): a config error."""


class RecordError(ValueError):
    """One record is malformed; ``kind`` is a short machine-readable label for the summary."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class ParseContext:
    """What a parser needs to know and where it counts: file, dataset, frame rate, rows read."""

    path: Path
    dataset: str
    fps: Fraction | None = None
    license: str | None = None
    records_read: int = 0

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"

    def error_row(self, line: int | None, kind: str, message: str, *, video_id: str | None = None,
                  source: str | None = None, clip_index: int | None = None, location: str | None = None,
                  **extra: Any) -> dict[str, Any]:
        """An error row that keeps whatever identity the record had, with file and line in the message."""
        if video_id is not None and clip_index is not None:
            clip_id = make_clip_id(video_id, clip_index)
        else:
            clip_id = f"{video_id if video_id is not None else self.dataset}-L{line}"
        where = location or self.where(line)
        row: dict[str, Any] = {
            "clip_id": clip_id, "video_id": video_id, "source": source, "text": None,
            "start_s": None, "end_s": None, "dataset": self.dataset, "license": self.license,
            "meta_line": line,
            "error": error_dict("ingest", kind, f"{where}: {message}"),
        }
        if clip_index is not None:
            row["clip_index"] = clip_index
        row.update(extra)
        return row

    def base_row(self, line: int | None, *, video_id: str, source: str, clip_index: int,
                 start_s: float | None = None, end_s: float | None = None, text: str | None = None,
                 captions: list[str] | None = None) -> dict[str, Any]:
        """The columns every good row has; parsers add their dataset's extras."""
        return {
            "clip_id": make_clip_id(video_id, clip_index), "video_id": video_id, "source": source,
            "clip_index": clip_index, "start_s": start_s, "end_s": end_s,
            "duration_s": round(end_s - start_s, 6) if start_s is not None and end_s is not None else None,
            "text": text,
            "captions": captions if captions is not None else ([text] if text is not None else None),
            "dataset": self.dataset, "license": self.license, "meta_line": line, "error": None,
        }


def make_clip_id(video_id: str, clip_index: int) -> str:
    """Deterministic clip id, the manifest convention: ``{video_id}-{clip_index:04d}``."""
    return f"{video_id}-{clip_index:04d}"


# --- values ---------------------------------------------------------------------------------------

_HMS = re.compile(r"^\s*(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)\s*$")


def parse_hms(value: Any) -> float:
    """``'0:01:20.880'``, ``'00:07:33.689'`` or ``'01:20.5'`` -> seconds (exact decimal arithmetic)."""
    if not isinstance(value, str):
        raise RecordError("bad_timestamp", f"timestamp {value!r} is not a string like '0:01:20.880'")
    m = _HMS.match(value)
    if not m:
        raise RecordError("bad_timestamp", f"timestamp {value!r} is not H:MM:SS[.mmm]")
    h, mnt, sec = int(m.group(1) or 0), int(m.group(2)), Decimal(m.group(3))
    if mnt >= 60 or sec >= 60:
        raise RecordError("bad_timestamp", f"timestamp {value!r} has minutes or seconds >= 60")
    return float(h * 3600 + mnt * 60 + sec)


_ISO_DURATION = re.compile(
    r"^P(?:(\d+)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def parse_iso8601_duration(value: Any) -> float:
    """``'PT00H00M17S'`` -> 17.0 (days, hours, minutes, fractional seconds)."""
    m = _ISO_DURATION.match(value.strip()) if isinstance(value, str) else None
    if not m or value.strip() in ("P", "PT"):
        raise RecordError("bad_duration", f"duration {value!r} is not ISO-8601 like 'PT00H00M17S'")
    d, h, mnt, s = (Decimal(g) if g else Decimal(0) for g in m.groups())
    return float(d * 86400 + h * 3600 + mnt * 60 + s)


def parse_seconds(value: Any, name: str) -> float:
    """A time in seconds given as a number or a numeric string (``'211.93'``)."""
    if isinstance(value, bool):
        raise RecordError("bad_timestamp", f"{name} {value!r} is not a number of seconds")
    if isinstance(value, (int, float)):
        out = float(value)
    else:
        try:
            out = float(Decimal(str(value).strip()))
        except (InvalidOperation, ValueError):
            raise RecordError("bad_timestamp", f"{name} {value!r} is not a number of seconds") from None
    if out != out or out < 0 or out == float("inf"):
        raise RecordError("bad_timestamp", f"{name} {value!r} is not a finite, non-negative time")
    return out


def check_span(start_s: float, end_s: float) -> None:
    if end_s <= start_s:
        raise RecordError("bad_span", f"span ends at {end_s} s, not after its start {start_s} s")


def literal(cell: Any, name: str, expect: type | tuple[type, ...] = list) -> Any:
    """Parse a Python-literal cell (``"['a', 'b']"``) safely with ``ast.literal_eval`` (never ``eval``)."""
    if not isinstance(cell, str):
        if isinstance(cell, expect):
            return cell
        raise RecordError("bad_literal", f"column {name!r} is {type(cell).__name__}, expected a literal")
    if len(cell) > MAX_LITERAL_CHARS:
        raise RecordError("bad_literal", f"column {name!r} is {len(cell)} characters long")
    try:
        value = ast.literal_eval(cell.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        snippet = cell if len(cell) <= 80 else cell[:77] + "..."
        raise RecordError("bad_literal", f"column {name!r} is not a Python literal ({type(exc).__name__}): "
                                         f"{snippet!r}") from None
    if not isinstance(value, expect):
        raise RecordError("bad_literal", f"column {name!r} holds a {type(value).__name__}, expected "
                                         f"{getattr(expect, '__name__', expect)}")
    return value


def require(data: dict[str, Any], *names: str) -> list[Any]:
    """Values of required fields; a missing or empty one is a ``missing_field`` record error."""
    out = []
    for n in names:
        v = data.get(n)
        if v is None or (isinstance(v, str) and not v.strip()):
            raise RecordError("missing_field", f"field {n!r} is missing or empty")
        out.append(v)
    return out


def as_id(value: Any) -> str:
    """Dataset ids are strings: ``1053841541`` stays ``'1053841541'``, never ``1.05e9``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def snake(name: str) -> str:
    """``'Aesthetic_Score'`` -> ``'aesthetic_score'``; ``'start time'`` -> ``'start_time'``."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
                  "validation": "val", "test": "test", "testing": "test"}


def norm_split(value: Any) -> str | None:
    """``'validate'`` / ``'validation'`` -> ``'val'``; unknown -> the value lower-cased."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    v = str(value).strip().lower()
    return _SPLIT_ALIASES.get(v, v)


def split_from_filename(path: Path) -> str | None:
    """``panda70m_validation.csv`` -> ``'val'``; ``results_10M_train.csv`` -> ``'train'``; else None."""
    tokens = re.split(r"[^a-z]+", path.name.lower())
    found = {_SPLIT_ALIASES[t] for t in tokens if t in _SPLIT_ALIASES}
    return found.pop() if len(found) == 1 else None


# --- YouTube --------------------------------------------------------------------------------------

_YT_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")


def youtube_url(video_id: str) -> str:
    return f"https://www.youtube.com/watch?v={video_id}"


def youtube_id(url: str) -> str | None:
    """The 11-character id of a YouTube URL (watch, youtu.be, shorts, embed), else None."""
    try:
        u = urlparse(url)
    except ValueError:
        return None
    host = (u.hostname or "").lower()
    if host.endswith("youtu.be"):
        cand = u.path.strip("/").split("/")[0]
    elif host.endswith("youtube.com") or host.endswith("youtube-nocookie.com"):
        if u.path == "/watch":
            cand = parse_qs(u.query).get("v", [""])[0]
        else:
            parts = u.path.strip("/").split("/")
            cand = parts[1] if len(parts) >= 2 and parts[0] in ("shorts", "embed", "v", "live") else ""
    else:
        return None
    return cand if _YT_ID.match(cand) else None


def looks_like_path_or_url(value: str) -> bool:
    return "://" in value or "/" in value or "\\" in value or bool(re.search(r"\.[A-Za-z0-9]{2,4}$", value))
