"""The ``cut`` stage: write a file for every kept clip (see :mod:`soraprep.video.cut` for the modes).

Clip files go to ``OUT/clips/<video_id>/<clip_id>.<ext>`` under names derived only from the ids (no
timestamps, no worker ids), sanitised so that no id — ``../x``, an absolute path, odd characters — can
place a file outside ``OUT``. The row's span is updated to the frames the file really holds.
With ``copy``/``keyframe``, a clip whose inward snap to keyframes would lose more than ``max_snap_s`` at
either end (or leave nothing) is re-encoded exactly instead, when ``fallback_exact`` is on (default): the
:class:`~soraprep.video.cut.CutPolicy` that ``download`` cuts with too.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from soraprep.curate.registry import register
from soraprep.curate.stage import Resources, Row, error_dict, failed
from soraprep.video.cut import CutPolicy
from soraprep.video.io import VideoError

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, max_len: int = 96) -> str:
    """A file-name-safe, deterministic version of ``name`` (a short hash keeps distinct ids distinct)."""
    clean = _SAFE.sub("_", str(name)).lstrip(".") or "x"
    if clean != name or len(clean) > max_len:
        clean = f"{clean[: max_len - 9]}-{hashlib.sha1(str(name).encode()).hexdigest()[:8]}"
    return clean


def confined(root: Path, *parts: str) -> Path:
    """``root / parts`` with each part sanitised; raises if the result would escape ``root``."""
    root = root.resolve()
    path = root.joinpath(*[safe_name(p) for p in parts])
    if root not in path.resolve().parents:
        raise ValueError(f"refusing to write outside {root}: {path}")
    return path


def thumb_path(out: Path, clip_id: str) -> Path:
    """Where a clip's report thumbnail lives (written by the runner, read by the report)."""
    return confined(Path(out), "thumbs", f"{clip_id}.jpg")


@register("cut")
@dataclass
class CutStage:
    """Cut each kept clip under one :class:`~soraprep.video.cut.CutPolicy` (the fields below are its
    arguments, plus ``out_dir``); ``download`` cuts with the same policy."""

    out_dir: str = "."
    mode: str = "copy"
    max_snap_s: float = 1.0
    fallback_exact: bool = True
    crf: int = 18
    preset: str = "veryfast"            # x264 preset of `mode: exact`
    fallback_preset: str = "ultrafast"  # x264 preset when a copy/keyframe clip falls back to re-encoding
    name = "cut"
    resources = Resources(cpus=1)
    batch_size = 16

    def __post_init__(self) -> None:
        self.policy()  # validate now: configs fail loud

    def policy(self) -> CutPolicy:
        return CutPolicy(mode=self.mode, max_snap_s=self.max_snap_s, fallback_exact=self.fallback_exact,
                         crf=self.crf, preset=self.preset, fallback_preset=self.fallback_preset)

    def setup(self) -> None:
        pass

    def __call__(self, batch: list[Row]) -> list[Row]:
        policy = self.policy()
        for row in batch:
            if failed(row) or not row.get("keep") or self.mode == "none":
                continue
            try:
                self._cut(row, policy)
            except (VideoError, ValueError, OSError) as exc:
                row["error"] = error_dict("cut", getattr(exc, "kind", type(exc).__name__), str(exc))
                row["keep"], row["filter_reason"] = False, "error"
        return batch

    def _cut(self, row: Row, policy: CutPolicy) -> None:
        root = Path(self.out_dir)
        dst = confined(root, "clips", row["video_id"], f"{row['clip_id']}.mp4")
        res = policy.cut(row["source"], dst, start_frame=row["start_frame"], end_frame=row["end_frame"],
                         index=row.get("_index"))
        row["path"] = str(Path(res.path).resolve().relative_to(root.resolve()))
        row["cut_mode"] = res.mode
        row["start_frame"], row["end_frame"], row["num_frames"] = res.start_frame, res.end_frame, res.num_frames
        if res.start_s is not None:   # the span the file holds, in seconds from the timestamps (video.span)
            row["start_s"], row["end_s"] = res.start_s, res.end_s
            row["duration_s"] = res.end_s - res.start_s
        if res.width and res.height and (res.width, res.height) != (row.get("width"), row.get("height")):
            row["width"], row["height"] = res.width, res.height  # exact re-encode evens odd sizes
            row["aspect_ratio"], row["resolution"] = res.height / res.width, res.height * res.width
