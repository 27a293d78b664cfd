"""Procedural videos with gradual transitions of known length, and scoring detectors against them.

Shots come from :mod:`soraprep.video.synth` (each its own texture and palette, panning at a fixed speed).
Between two shots goes a hard ``cut`` or a gradual transition of ``frames`` length:

- ``dissolve``: the last frames of shot A cross-fade into the first frames of shot B (weights
  ``k / (L + 1)``, so every transition frame is a true mix and the frames around it are pure shots);
- ``fade``: A fades to black over the first half, B fades in from black over the second half;
- ``wipe``: a vertical edge sweeps left to right, B on its left, A on its right.

The ground truth says where each hard cut lands (the first frame of the new shot) and which frames
``[a, b)`` belong to a transition (neither pure A nor pure B): a correct split puts those frames in no clip.
:func:`score_boundaries` matches a detector's cuts and transition ranges against it (precision, recall).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from soraprep.video.synth import Shot, shot_frames

TRANSITION_KINDS = ("cut", "dissolve", "fade", "wipe")


@dataclass(frozen=True)
class Transition:
    """How one shot gives way to the next: ``kind`` over ``frames`` frames (a ``cut`` has none)."""

    kind: str = "cut"
    frames: int = 0

    def __post_init__(self) -> None:
        if self.kind not in TRANSITION_KINDS:
            raise ValueError(f"unknown transition {self.kind!r}; choose one of {TRANSITION_KINDS}")
        if self.kind == "cut" and self.frames != 0:
            raise ValueError("a hard cut has frames=0")
        if self.kind != "cut" and self.frames < 2:
            raise ValueError(f"a {self.kind} needs frames >= 2")


@dataclass(frozen=True)
class TransitionTruth:
    """Ground truth of a generated video: hard cuts (first frame of the new shot), gradual transitions
    as ``(kind, a, b)`` with frames ``[a, b)`` in the transition, and the frame count."""

    cuts: tuple[int, ...]
    transitions: tuple[tuple[str, int, int], ...]
    num_frames: int


def transition_frames(shots: Sequence[Shot], transitions: Sequence[Transition], width: int,
                      height: int) -> tuple[list[np.ndarray], TransitionTruth]:
    """The RGB frames of ``shots`` joined by ``transitions`` (one fewer than shots), and the truth."""
    if len(transitions) != len(shots) - 1:
        raise ValueError(f"{len(shots)} shots need {len(shots) - 1} transitions, got {len(transitions)}")
    clips = [list(shot_frames(s, i, width, height)) for i, s in enumerate(shots)]
    for i, t in enumerate(transitions):
        need = t.frames if t.kind in ("dissolve", "wipe") else (t.frames + 1) // 2
        if min(len(clips[i]), len(clips[i + 1])) <= need:
            raise ValueError(f"shots {i} and {i + 1} are too short for a {t.frames}-frame {t.kind}")
    out: list[np.ndarray] = list(clips[0])
    cuts, ranges = [], []
    for t, nxt in zip(transitions, clips[1:]):
        nxt = list(nxt)
        if t.kind == "cut":
            cuts.append(len(out))
        elif t.kind in ("dissolve", "wipe"):
            a = len(out) - t.frames
            for k in range(t.frames):
                out[a + k] = _mix(out[a + k], nxt[k], (k + 1) / (t.frames + 1), t.kind)
            nxt = nxt[t.frames:]
            ranges.append((t.kind, a, len(out)))
        else:  # fade: out over the first half (A's tail), in over the second (B's head)
            n_out, n_in = t.frames // 2, t.frames - t.frames // 2
            a = len(out) - n_out
            for k in range(n_out):
                out[a + k] = _scale(out[a + k], (n_out - k) / (n_out + 1))
            for k in range(n_in):
                nxt[k] = _scale(nxt[k], (k + 1) / (n_in + 1))
            ranges.append(("fade", a, len(out) + n_in))
        out += nxt
    return out, TransitionTruth(tuple(cuts), tuple(ranges), len(out))


def _mix(a: np.ndarray, b: np.ndarray, w: float, kind: str) -> np.ndarray:
    if kind == "dissolve":
        return np.clip(np.rint(a * (1.0 - w) + b * w), 0, 255).astype(np.uint8)
    edge = int(round(w * a.shape[1]))  # wipe: B left of the edge
    out = a.copy()
    out[:, :edge] = b[:, :edge]
    return out


def _scale(frame: np.ndarray, w: float) -> np.ndarray:
    return np.clip(np.rint(frame * w), 0, 255).astype(np.uint8)


def make_transition_video(path: str | Path, shots: Sequence[Shot], transitions: Sequence[Transition], *,
                          fps: Fraction | int = 25, width: int = 320, height: int = 180, crf: int = 20,
                          preset: str = "ultrafast") -> TransitionTruth:
    """Write an H.264 video of ``shots`` joined by ``transitions``; returns its :class:`TransitionTruth`."""
    frames, truth = transition_frames(shots, transitions, width, height)
    _write(Path(path), iter(frames), Fraction(fps), width, height, crf, preset)
    return truth


def _write(path: Path, frames: Iterator[np.ndarray], fps: Fraction, width: int, height: int, crf: int,
           preset: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": preset, "x264-params": f"crf={crf}"}
        for n, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = n
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def sequence(kind: str, frames: int, *, count: int, shot_frames_each: int = 75,
             speed: float = 2.0) -> tuple[list[Shot], list[Transition]]:
    """``count`` transitions of one kind between ``count + 1`` moving shots (distinct seeds)."""
    shots = [Shot(shot_frames_each, "moving", speed=speed, seed=7000 + i) for i in range(count + 1)]
    return shots, [Transition(kind, frames)] * count


@dataclass(frozen=True)
class BoundaryScore:
    """Detected boundaries matched one-to-one against the truth (``tol`` frames of slack)."""

    true_positives: int
    detected: int
    truth: int

    @property
    def precision(self) -> float:
        return self.true_positives / self.detected if self.detected else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.truth if self.truth else 1.0


def score_boundaries(truth: TransitionTruth, cuts: Sequence[int], transitions: Sequence[tuple[int, int]] = (),
                     *, tol: int = 2) -> BoundaryScore:
    """Match detected boundaries to true ones. A detected boundary is a cut ``c`` (the range ``[c, c)``)
    or a transition range ``[a, b)``; cuts lying inside a detected transition are the same boundary.
    A true boundary (a cut at ``c`` or a range ``[a, b)``) is found when a detection overlaps it within
    ``tol`` frames; each detection counts once, so a dissolve reported as two cuts gives one false positive."""
    det = sorted([(int(a), int(b)) for a, b in transitions]
                 + [(int(c), int(c)) for c in cuts if not any(a <= c <= b for a, b in transitions)])
    true = sorted([(c, c) for c in truth.cuts] + [(a, b) for _, a, b in truth.transitions])
    used = [False] * len(det)
    tp = 0
    for ta, tb in true:
        for j, (da, db) in enumerate(det):
            if not used[j] and da <= tb + tol and db >= ta - tol:
                used[j] = True
                tp += 1
                break
    return BoundaryScore(tp, len(det), len(true))
