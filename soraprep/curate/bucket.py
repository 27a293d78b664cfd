"""The ``bucket`` stage: resolution x frames x aspect-ratio buckets for batched training.

Each kept clip goes to the largest resolution class whose pixel count it reaches, the aspect ratio
(height / width, Open-Sora's convention) nearest its own, and the largest frame count it can fill.
The bucket's target size is the class's pixel area at that aspect ratio, rounded to a multiple of 16,
so a loader can resize-and-crop every clip of a bucket to one shape. Clips too small or too short for
any bucket get ``bucket = None`` (and stay kept: filters, not buckets, decide what to keep).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from soraprep.stages import Resources, Row, failed, register

#: resolution class -> its area in pixels (short side x long side at 16:9); the area defines the class
RESOLUTIONS = {"144p": 144 * 256, "240p": 240 * 426, "360p": 360 * 640, "480p": 480 * 854,
               "720p": 720 * 1280, "1080p": 1080 * 1920}
ASPECTS = [9 / 21, 9 / 16, 2 / 3, 3 / 4, 1.0, 4 / 3, 3 / 2, 16 / 9]
FRAMES = [1, 17, 33, 49, 65, 97, 129]


def _round16(x: float) -> int:
    return max(16, int(round(x / 16)) * 16)


@register("bucket")
@dataclass
class BucketStage:
    resolutions: list[str] = field(default_factory=lambda: list(RESOLUTIONS))
    aspect_ratios: list[float] = field(default_factory=lambda: list(ASPECTS))
    frames: list[int] = field(default_factory=lambda: list(FRAMES))
    name = "bucket"
    resources = Resources(cpus=0.1)
    batch_size = 1024

    def __post_init__(self) -> None:
        unknown = [r for r in self.resolutions if r not in RESOLUTIONS]
        if unknown:
            raise ValueError(f"bucket.resolutions: unknown {unknown}; choose from {list(RESOLUTIONS)}")
        if not self.frames or any(int(f) < 1 for f in self.frames):
            raise ValueError("bucket.frames must be a non-empty list of positive frame counts")
        if not self.aspect_ratios or any(a <= 0 for a in self.aspect_ratios):
            raise ValueError("bucket.aspect_ratios must be positive height/width ratios")

    def setup(self) -> None:
        pass

    def assign(self, height: int, width: int, num_frames: int) -> tuple[str, int, int, int] | None:
        area = height * width
        classes = [r for r in sorted(self.resolutions, key=RESOLUTIONS.get) if RESOLUTIONS[r] <= area]
        frames = [f for f in sorted(self.frames) if f <= num_frames]
        if not classes or not frames:
            return None
        res, nf = classes[-1], frames[-1]
        ar = min(self.aspect_ratios, key=lambda a: abs(math.log(a) - math.log(height / width)))
        bw = _round16(math.sqrt(RESOLUTIONS[res] / ar))
        bh = _round16(RESOLUTIONS[res] / bw)
        return f"{res}_{nf}f_{ar:.2f}", bh, bw, nf

    def __call__(self, batch: list[Row]) -> list[Row]:
        for row in batch:
            if failed(row) or not row.get("keep") or not row.get("height") or not row.get("width"):
                continue
            b = self.assign(row["height"], row["width"], row["num_frames"])
            if b is not None:
                row["bucket"], row["bucket_height"], row["bucket_width"], row["bucket_frames"] = b
        return batch
