"""The ``ocr`` stage: how much of each clip is covered by text (subtitles, watermarks, slides, credits).

A model-based scorer stage (``phase = "score"``): it never decodes. ``analyze`` keeps an RGB JPEG every
``samples_every_s`` seconds of the one decode pass and ``split`` hands each clip its share as
``row["_samples"]``. This stage runs the text *detector* of PP-OCR (through ``rapidocr``, which ships its
ONNX weights, so it works offline) on up to ``frames`` of them and writes, per clip:

    ocr_area_ratio       max over the sampled frames of (area covered by text boxes) / (frame area)
    ocr_area_ratio_mean  mean of the same over the sampled frames
    ocr_boxes            max number of text boxes in one sampled frame
    ocr_boxes_mean       mean number of text boxes per sampled frame

The area is the union of the detected quadrilaterals (a mask, so overlapping boxes count once). Only
detection runs (no recognition): what matters for curation is *that* there is text and how much, and
detection is most of the cost anyway. Thresholds live in the ``filter`` section, e.g.
``filter: {ocr_area_ratio: {max: 0.02}}`` (see docs/curation.md, "Model-based scorers").

Install: ``pip install 'soraprep[ocr]'`` (rapidocr + onnxruntime; no torch).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from soraprep.stages import Resources, Row, error_dict, failed, register

VERSION = "1"


def pick_samples(samples: list, k: int) -> list:
    """Up to ``k`` samples spread evenly over the clip (first and last included)."""
    if len(samples) <= k:
        return list(samples)
    idx = sorted({int(round(i)) for i in np.linspace(0, len(samples) - 1, k)})
    return [samples[i] for i in idx]


def decode_sample(jpeg: bytes) -> np.ndarray:
    """JPEG bytes of a sample -> BGR uint8 (h, w, 3); ValueError when the bytes are not an image."""
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("sampled frame is not a decodable JPEG")
    return img


def text_area(boxes: np.ndarray | None, height: int, width: int) -> float:
    """Share of an ``height`` x ``width`` frame covered by the union of quadrilateral ``boxes`` (n, 4, 2)."""
    if boxes is None or len(boxes) == 0:
        return 0.0
    mask = np.zeros((height, width), np.uint8)
    for b in boxes:  # one polygon per call: fillPoly with several polygons fills overlaps even-odd (holes)
        cv2.fillPoly(mask, [np.round(np.asarray(b)).astype(np.int32).reshape(-1, 1, 2)], 1)
    return float(mask.mean())


def _import_rapidocr():
    try:
        from rapidocr import RapidOCR
    except ImportError as exc:  # optional dependency: say which extra brings it
        raise ImportError("the ocr stage needs rapidocr and onnxruntime: pip install 'soraprep[ocr]'") from exc
    return RapidOCR


@register("ocr")
@dataclass
class OcrStage:
    """Text-area ratio and text-box count per clip from PP-OCR's text detector (rapidocr, ONNX, offline)."""

    frames: int = 4             # at most this many sampled frames per clip (spread evenly)
    det_side: int = 320         # the detector's input short side in px (rapidocr default 736: ~6x slower)
    box_thresh: float = 0.5     # minimum detector confidence of a text box
    max_box_ratio: float = 0.5  # a "box" covering more of the frame than this is dense texture, not a text line
    threads: int = 1            # onnxruntime threads per worker (workers are processes already)
    name = "ocr"
    columns = ("ocr_area_ratio", "ocr_area_ratio_mean", "ocr_boxes", "ocr_boxes_mean")
    phase = "score"             # runs after `score`, before `filter`
    samples_every_s = 1.0       # asks `analyze` to keep a frame this often
    resources = Resources(cpus=1, memory_gb=1.0)
    batch_size = 16

    def __post_init__(self) -> None:
        if not 1 <= self.frames <= 64:
            raise ValueError(f"ocr.frames must be between 1 and 64 sampled frames per clip, got {self.frames}")
        if not 32 <= self.det_side <= 2048:
            raise ValueError(f"ocr.det_side must be between 32 and 2048 px (320 is a good default), got {self.det_side}")
        if not 0.0 < self.box_thresh < 1.0:
            raise ValueError(f"ocr.box_thresh is a confidence in (0, 1) (default 0.5), got {self.box_thresh}")
        if not 0.0 < self.max_box_ratio <= 1.0:
            raise ValueError(f"ocr.max_box_ratio is a share of the frame in (0, 1] (default 0.5), got {self.max_box_ratio}")
        if self.threads < 1:
            raise ValueError(f"ocr.threads must be >= 1, got {self.threads}")
        if importlib.util.find_spec("rapidocr") is None or importlib.util.find_spec("onnxruntime") is None:
            raise ValueError("the ocr stage needs rapidocr and onnxruntime: pip install 'soraprep[ocr]'")
        self._engine = None

    def __getstate__(self) -> dict[str, Any]:  # ship the config, never a loaded model
        return {**self.__dict__, "_engine": None}

    def setup(self) -> None:
        """Load the detector once per worker (a failure raises: the runner stops the run with it)."""
        if self._engine is not None:
            return
        RapidOCR = _import_rapidocr()
        self._engine = RapidOCR(params={
            "Global.log_level": "error",
            "Det.limit_side_len": self.det_side,
            "Det.limit_type": "min",
            "Det.box_thresh": self.box_thresh,
            "EngineConfig.onnxruntime.intra_op_num_threads": self.threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        })

    def provenance(self) -> dict[str, Any]:
        import rapidocr

        return {"by": f"soraprep.ocr@{VERSION}",
                "params": {**asdict(self), "model": "PP-OCR text detector (rapidocr default)",
                           "rapidocr": getattr(rapidocr, "__version__", "unknown")}}

    def detect(self, bgr: np.ndarray) -> np.ndarray | None:
        """Text boxes (n, 4, 2) in pixel coordinates of ``bgr``, or None when there is no text.

        DBNet marks dense high-frequency texture (noise, gravel, foliage) as one region spanning most of
        the frame; no text line does that, so boxes over ``max_box_ratio`` of the frame are dropped.
        """
        self.setup()
        boxes = getattr(self._engine(bgr, use_det=True, use_cls=False, use_rec=False), "boxes", None)
        if boxes is None or len(boxes) == 0:
            return None
        h, w = bgr.shape[:2]
        keep = [b for b in boxes if abs(cv2.contourArea(np.asarray(b, np.float32))) <= self.max_box_ratio * h * w]
        return np.stack(keep) if keep else None

    def __call__(self, batch: list[Row]) -> list[Row]:
        prov = None
        self.setup()
        for row in batch:
            if failed(row):
                continue
            samples = row.get("_samples")
            if not samples:
                row["error"] = error_dict(self.name, "no_samples", "no sampled frames on the row: the ocr stage "
                                          "must run inside a curation recipe (analyze keeps the samples)")
                continue
            try:
                ratios, counts = [], []
                for _, jpeg in pick_samples(samples, self.frames):
                    img = decode_sample(jpeg)
                    boxes = self.detect(img)
                    ratios.append(text_area(boxes, *img.shape[:2]))
                    counts.append(0 if boxes is None else len(boxes))
            except Exception as exc:  # a row fails soft: record it, keep going
                row["error"] = error_dict(self.name, type(exc).__name__, str(exc))
                continue
            row["ocr_area_ratio"] = round(max(ratios), 6)
            row["ocr_area_ratio_mean"] = round(float(np.mean(ratios)), 6)
            row["ocr_boxes"] = int(max(counts))
            row["ocr_boxes_mean"] = round(float(np.mean(counts)), 4)
            prov = prov or self.provenance()
            p = json.loads(row.get("provenance") or "{}")
            for col in ("ocr_area_ratio", "ocr_area_ratio_mean", "ocr_boxes", "ocr_boxes_mean"):
                p[col] = prov
            row["provenance"] = json.dumps(p, sort_keys=True)
        return batch
