"""The ``cut`` stage: write a file for every kept clip (see :mod:`soraprep.video.cut` for the modes).

Clip files go to ``OUT/clips/<video_id>/<clip_id>.<ext>`` under names derived only from the ids (no
timestamps, no worker ids), sanitised so that no id — ``../x``, an absolute path, odd characters — can
place a file outside ``OUT``. The row's span is updated to the frames the file really holds.
With ``copy``/``keyframe``, a clip whose inward snap to keyframes would lose more than ``max_snap_s`` at
either end (or leave nothing) is re-encoded exactly instead, when ``fallback_exact`` is on (default): the
:class:`~soraprep.video.cut.CutPolicy` that ``download`` cuts with too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from soraprep.stages import Resources, Row, error_dict, failed, register
from soraprep.storage.files import confined, safe_name
from soraprep.video.cut import CutPolicy
from soraprep.video.io import VideoError


def clip_path(out: Path, video_id: str, clip_id: str) -> Path:
    """Where a kept clip's file lives: ``OUT/clips/<video_id>/<clip_id>.mp4``, names through :func:`safe_name`."""
    return confined(out, "clips", safe_name(video_id), f"{safe_name(clip_id)}.mp4")


def thumb_path(out: Path, clip_id: str) -> Path:
    """Where a clip's report thumbnail lives (written by the runner, read by the report)."""
    return confined(out, "thumbs", f"{safe_name(clip_id)}.jpg")


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
    run_args = ("out_dir",)             # the run's OUT, given by the runner (never a recipe key)
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
        dst = clip_path(root, row["video_id"], row["clip_id"])
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
