"""The ``cut`` stage: write a file for every kept clip (see :mod:`soraprep.video.cut` for the modes).

Clip files go to ``OUT/clips/<video_id>/<clip_id>.<ext>`` under names derived only from the ids (no
timestamps, no worker ids), sanitised so that no id — ``../x``, an absolute path, odd characters — can
place a file outside ``OUT``. The row's span is updated to the frames the file really holds.
With ``copy``/``keyframe``, a clip whose inward snap to keyframes would lose more than ``max_snap_s`` at
either end (or leave nothing) is re-encoded exactly instead, when ``fallback_exact`` is on (default).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from soraprep.stages import Resources, Row, error_dict, failed, register
from soraprep.storage.files import confined, safe_name
from soraprep.video.cut import CUT_MODES, cut_clip
from soraprep.video.io import VideoError

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")


def clip_path(out: Path, video_id: str, clip_id: str) -> Path:
    """Where a kept clip's file lives: ``OUT/clips/<video_id>/<clip_id>.mp4``, names through :func:`safe_name`."""
    return confined(out, "clips", safe_name(video_id), f"{safe_name(clip_id)}.mp4")


def thumb_path(out: Path, clip_id: str) -> Path:
    """Where a clip's report thumbnail lives (written by the runner, read by the report)."""
    return confined(out, "thumbs", f"{safe_name(clip_id)}.jpg")


@register("cut")
@dataclass
class CutStage:
    out_dir: str = "."
    mode: str = "copy"
    max_snap_s: float = 1.0
    fallback_exact: bool = True
    crf: int = 18
    preset: str = "veryfast"            # x264 preset of `mode: exact`
    fallback_preset: str = "ultrafast"  # x264 preset when a copy/keyframe clip falls back to re-encoding:
                                        # 1.6x faster than veryfast at the same crf, larger files (a minority of clips)
    name = "cut"
    run_args = ("out_dir",)             # the run's OUT, given by the runner (never a recipe key)
    resources = Resources(cpus=1)
    batch_size = 16

    def __post_init__(self) -> None:
        if self.mode not in CUT_MODES:
            raise ValueError(f"cut.mode must be one of {', '.join(CUT_MODES)}, got {self.mode!r}")
        if self.max_snap_s < 0:
            raise ValueError("cut.max_snap_s must be >= 0")
        if isinstance(self.crf, bool) or not isinstance(self.crf, int) or not 0 <= self.crf <= 51:
            raise ValueError(f"cut.crf must be an integer 0-51 (x264; 18 is visually lossless), got {self.crf!r}")
        for key in ("preset", "fallback_preset"):
            if getattr(self, key) not in X264_PRESETS:
                raise ValueError(f"cut.{key} must be an x264 preset: {', '.join(X264_PRESETS)}; "
                                 f"got {getattr(self, key)!r}")

    def setup(self) -> None:
        pass

    def __call__(self, batch: list[Row]) -> list[Row]:
        for row in batch:
            if failed(row) or not row.get("keep") or self.mode == "none":
                continue
            try:
                self._cut(row)
            except (VideoError, ValueError, OSError) as exc:
                row["error"] = error_dict("cut", getattr(exc, "kind", type(exc).__name__), str(exc))
                row["keep"], row["filter_reason"] = False, "error"
        return batch

    def _cut(self, row: Row) -> None:
        root = Path(self.out_dir)
        dst = clip_path(root, row["video_id"], row["clip_id"])
        a, b = row["start_frame"], row["end_frame"]
        index = row.get("_index")
        fps = row.get("fps") or 25.0
        res = None
        preset = self.preset
        if self.mode in ("copy", "keyframe"):
            preset = self.fallback_preset
            try:
                res = cut_clip(row["source"], dst, start_frame=a, end_frame=b, mode=self.mode, index=index)
                lost = max(res.start_frame - a, b - res.end_frame) / fps
                if self.fallback_exact and lost > self.max_snap_s:
                    res = None
            except VideoError as exc:
                if not self.fallback_exact or exc.kind not in ("empty_after_snap", "cut_failed"):
                    raise
        if res is None:
            res = cut_clip(row["source"], dst, start_frame=a, end_frame=b, mode="exact", index=index,
                           crf=self.crf, preset=preset)
        for stale in dst.parent.glob(f"{dst.stem}.*"):  # a fallback may have changed the extension
            if stale.name != Path(res.path).name:
                stale.unlink(missing_ok=True)
        row["path"] = str(Path(res.path).resolve().relative_to(root.resolve()))
        row["cut_mode"] = res.mode
        row["start_frame"], row["end_frame"], row["num_frames"] = res.start_frame, res.end_frame, res.num_frames
        if index is not None:
            row["start_s"], row["end_s"] = index.time_of(res.start_frame), index.time_of(res.end_frame)
            row["duration_s"] = row["end_s"] - row["start_s"]
        if res.width and res.height and (res.width, res.height) != (row.get("width"), row.get("height")):
            row["width"], row["height"] = res.width, res.height  # exact re-encode evens odd sizes
            row["aspect_ratio"], row["resolution"] = res.height / res.width, res.height * res.width
