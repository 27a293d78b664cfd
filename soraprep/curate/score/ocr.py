"""The ``ocr`` stage: how much of each clip is covered by text (subtitles, watermarks, slides, credits).

A model-based scorer stage (``phase = "score"``): it never decodes. ``analyze`` keeps an RGB JPEG every
``samples_every_s`` seconds of the one decode pass and ``split`` hands each clip its share as
``row["_samples"]``. This stage runs the text *detector* of PP-OCR (through ``rapidocr``, which ships its
ONNX weights, so it works offline) on up to ``frames`` of them and writes, per clip:

    ocr_area_ratio       max over the sampled frames of (area covered by text boxes) / (frame area)
    ocr_area_ratio_mean  mean of the same over the sampled frames
    ocr_boxes            max number of text boxes in one sampled frame
    ocr_boxes_mean       mean number of text boxes per sampled frame

The area is the union of the kept quadrilaterals (a mask, so overlapping boxes count once).

Detectors fire on texture: on a 160x90 music video, brick walls, fences and lattices covered 19-49 % of
the frame with "text" (issue 14). So each detected box is also *read* by PP-OCR's recogniser (v2 of this
stage) and kept only if it reads like text. The rules, each a constructor argument (= recipe key):

    max_box_ratio        one box over this share of the frame is a textured region, not a line of text
    min_aspect           a text line is at least this much longer than high (pickets, slats are not)
    min_text_score       the recogniser's confidence in what it read (texture reads as junk: 0.1-0.6)
    min_chars            letters/digits read (a lone "X" or "1" is what a lattice cell looks like)
    min_char_density     letters/digits per unit of length/height: text fills its box, texture that
                         happens to read as a word or two does not ("TTT" along a whole brick course)
    max_char_repeat      one character making up more than this share of >= 4 is a periodic pattern
                         ("mmmmm", "11111111": a fence or a railing)

``recognize: false`` skips the recogniser (v1's behaviour: geometric rules only; the same cost on footage
without text, up to 2x cheaper on dense texture, and fooled by it; see BENCHMARKS.md).
Thresholds live in the ``filter`` section, e.g. ``filter: {ocr_area_ratio: {max: 0.02}}`` (see
docs/curation.md, "Model-based scorers"). Generated textures with no text (soraprep/video/textures.py)
and frames with real overlay text test the rules (tests/curate/test_ocr_textures.py).

Install: ``pip install 'soraprep[ocr]'`` (rapidocr + onnxruntime; no torch).
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from soraprep.stages import Resources, Row, error_dict, failed, register

VERSION = "2"  # 2: boxes must read as text (recogniser score, characters, density)


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


#: the recogniser reads at most this many box heights of a line (its cost grows with the length)
MAX_READ_ASPECT = 8.0


def rectify(bgr: np.ndarray, quad: np.ndarray, max_aspect: float = MAX_READ_ASPECT) -> np.ndarray:
    """The quadrilateral ``quad`` (tl, tr, br, bl) of ``bgr`` warped to an upright strip, cut to at most
    ``max_aspect`` heights long from its start."""
    q = np.asarray(quad, np.float32)
    length = max(1, int(round(max(np.linalg.norm(q[1] - q[0]), np.linalg.norm(q[2] - q[3])))))
    height = max(1, int(round(max(np.linalg.norm(q[3] - q[0]), np.linalg.norm(q[2] - q[1])))))
    dst = np.float32([[0, 0], [length, 0], [length, height], [0, height]])
    m = cv2.getPerspectiveTransform(q, dst)
    strip = cv2.warpPerspective(bgr, m, (length, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    return strip[:, : max(1, int(max_aspect * height))]


@dataclass(frozen=True)
class TextBox:
    """One detection: its quadrilateral (4, 2) in pixels (top-left, top-right, bottom-right, bottom-left),
    what the recogniser read in it and how sure it is (``text`` "" and ``score`` None without recognition)."""

    quad: np.ndarray
    text: str = ""
    score: float | None = None
    read_aspect: float | None = None  # length/height of the strip the recogniser read (None: the whole box)

    @property
    def length(self) -> float:  # along the text direction
        return float(np.linalg.norm(self.quad[1] - self.quad[0]))

    @property
    def height(self) -> float:
        return float(np.linalg.norm(self.quad[3] - self.quad[0]))

    @property
    def chars(self) -> str:
        """The letters and digits read (any script: CJK counts too)."""
        return "".join(c for c in self.text if c.isalnum())


@register("ocr")
@dataclass
class OcrStage:
    """Text-area ratio and text-box count per clip from PP-OCR (rapidocr, ONNX, offline): boxes that the
    detector finds *and* that read as text."""

    frames: int = 4               # at most this many sampled frames per clip (spread evenly)
    det_side: int = 320           # the detector's input short side in px (rapidocr default 736: ~6x slower)
    box_thresh: float = 0.5       # minimum detector confidence of a text box
    max_box_ratio: float = 0.5    # a "box" covering more of the frame than this is dense texture, not a text line
    min_aspect: float = 1.0       # a box must be at least this much longer than high (0: allow vertical text)
    recognize: bool = True        # read each box with the recogniser and apply the rules below
    min_text_score: float = 0.8   # recogniser confidence to keep a box
    min_chars: int = 2            # letters/digits read in a box
    min_char_density: float = 0.7  # letters/digits per unit of box length/height (text fills its box)
    max_char_repeat: float = 0.9  # largest share of one character among >= 4 read (periodic texture)
    threads: int = 1              # onnxruntime threads per worker (workers are processes already)
    name = "ocr"
    columns = ("ocr_area_ratio", "ocr_area_ratio_mean", "ocr_boxes", "ocr_boxes_mean")
    phase = "score"               # runs after `score`, before `filter`
    samples_every_s = 1.0         # asks `analyze` to keep a frame this often
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
        if not 0.0 <= self.min_aspect <= 20.0:
            raise ValueError(f"ocr.min_aspect is a length/height ratio in [0, 20] (default 1.0; 0 allows "
                             f"vertical text), got {self.min_aspect}")
        if not 0.0 <= self.min_text_score < 1.0:
            raise ValueError(f"ocr.min_text_score is a recogniser confidence in [0, 1) (default 0.8), "
                             f"got {self.min_text_score}")
        if not 0 <= self.min_chars <= 100:
            raise ValueError(f"ocr.min_chars is a number of letters/digits in [0, 100] (default 2), got {self.min_chars}")
        if not 0.0 <= self.min_char_density <= 5.0:
            raise ValueError(f"ocr.min_char_density is letters/digits per unit of length/height in [0, 5] "
                             f"(default 0.7; text measures 1.3-2.2), got {self.min_char_density}")
        if not 0.0 < self.max_char_repeat <= 1.0:
            raise ValueError(f"ocr.max_char_repeat is a share in (0, 1] (default 0.9; 1 turns the rule off), "
                             f"got {self.max_char_repeat}")
        if self.threads < 1:
            raise ValueError(f"ocr.threads must be >= 1, got {self.threads}")
        if importlib.util.find_spec("rapidocr") is None or importlib.util.find_spec("onnxruntime") is None:
            raise ValueError("the ocr stage needs rapidocr and onnxruntime: pip install 'soraprep[ocr]'")
        self._engine = None

    def __getstate__(self) -> dict[str, Any]:  # ship the config, never a loaded model
        return {**self.__dict__, "_engine": None}

    def setup(self) -> None:
        """Load the detector (and recogniser) once per worker (a failure raises: the run stops with it)."""
        if self._engine is not None:
            return
        RapidOCR = _import_rapidocr()
        engine = RapidOCR(params={
            "Global.log_level": "error",
            "Global.text_score": 0.0,  # the rules below decide; rapidocr's own cut-off would hide the scores
            "Det.limit_side_len": self.det_side,
            "Det.limit_type": "min",
            "Det.box_thresh": self.box_thresh,
            "EngineConfig.onnxruntime.intra_op_num_threads": self.threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        })
        load_rec = getattr(engine, "_load_rec_model", None)
        if self.recognize and load_rec is not None:
            load_rec()  # load it now, in setup, not on the first frame that has a box
        self._engine = engine

    def provenance(self) -> dict[str, Any]:
        import rapidocr

        model = "PP-OCR text detector" + (" + recogniser (rapidocr default)" if self.recognize else " (rapidocr default)")
        return {"by": f"soraprep.ocr@{VERSION}",
                "params": {**{k: v for k, v in asdict(self).items() if k != "threads"}, "model": model,
                           "rapidocr": getattr(rapidocr, "__version__", "unknown")}}

    def detect(self, bgr: np.ndarray) -> list[TextBox]:
        """Every box the detector finds in ``bgr``; with ``recognize``, those that pass the geometric rules
        (area, aspect) are also read (cheap rules first: the recogniser costs more than the detector)."""
        self.setup()
        out = self._engine(bgr, use_det=True, use_cls=False, use_rec=False)
        boxes = getattr(out, "boxes", None)
        if boxes is None or len(boxes) == 0:
            return []
        found = [TextBox(np.asarray(b, np.float32)) for b in boxes]
        if not self.recognize:
            return found
        h, w = bgr.shape[:2]
        return [self.read(bgr, b) if self._geometry(b, h, w) is None else b for b in found]

    def read(self, bgr: np.ndarray, box: TextBox) -> TextBox:
        """``box`` with what the recogniser reads in it: the box rectified to a horizontal strip, at most
        ``MAX_READ_ASPECT`` heights of it from the start (a brick course 45 heights long would cost the
        recogniser 10x a subtitle line; a real line's start reads as text anyway)."""
        crop = rectify(bgr, box.quad, MAX_READ_ASPECT)
        out = self._engine(crop, use_det=False, use_cls=False, use_rec=True, text_score=0.0)
        txts, scores = getattr(out, "txts", None), getattr(out, "scores", None)
        if not txts:
            return TextBox(box.quad, "", 0.0, crop.shape[1] / crop.shape[0])
        return TextBox(box.quad, str(txts[0]), float(scores[0]), crop.shape[1] / crop.shape[0])

    def _geometry(self, box: TextBox, height: int, width: int) -> str | None:
        if abs(cv2.contourArea(box.quad)) > self.max_box_ratio * height * width:
            return "box_area"
        if box.length / max(box.height, 1e-6) < self.min_aspect:
            return "aspect"
        return None

    def reject(self, box: TextBox, height: int, width: int) -> str | None:
        """Why ``box`` is texture rather than text (the first rule it fails), or None to keep it."""
        why = self._geometry(box, height, width)
        if why or not self.recognize:
            return why
        if box.score is None or box.score < self.min_text_score:
            return "text_score"
        chars = box.chars
        if len(chars) < self.min_chars:
            return "chars"
        read_aspect = box.read_aspect or box.length / max(box.height, 1e-6)
        if len(chars) < self.min_char_density * read_aspect:
            return "char_density"
        if len(chars) >= 4 and Counter(chars).most_common(1)[0][1] > self.max_char_repeat * len(chars):
            return "char_repeat"
        return None

    def text_boxes(self, bgr: np.ndarray) -> np.ndarray | None:
        """The kept text boxes (n, 4, 2) in pixel coordinates of ``bgr``, or None when there is no text."""
        h, w = bgr.shape[:2]
        keep = [b.quad for b in self.detect(bgr) if self.reject(b, h, w) is None]
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
                    boxes = self.text_boxes(img)
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
            for col in self.columns:
                p[col] = prov
            row["provenance"] = json.dumps(p, sort_keys=True)
        return batch
