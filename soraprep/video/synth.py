"""Procedural videos with known ground truth: hard cuts at known frames, static shots, black frames,
blur, text overlays, odd sizes and frame rates, known camera motions and frozen / noisy / small-subject shots.

Used by the tests, the demo and the benchmarks, so nothing needs to be downloaded. Every shot has its own
random texture and palette (a hard cut changes the whole picture), and moving shots pan over it at a fixed
speed so the optical-flow magnitude is known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

SHOT_KINDS = ("moving", "static", "black", "blur", "text", "flash",
              "pan", "tilt", "zoom", "roll", "shaky", "subject", "frozen", "noisy")
#: kinds drawn by a virtual camera over a still texture (see :func:`_camera_frames`)
CAMERA_KINDS = ("pan", "tilt", "zoom", "roll", "shaky")


@dataclass(frozen=True)
class Shot:
    """One shot: ``frames`` long, of a given ``kind``; ``speed`` is the kind's rate, per kind:

    - ``moving`` / ``text`` / ``blur``: content moves left by ``|speed|`` px/frame.
    - ``pan``: the camera pans right by ``speed`` px/frame (content moves left; negative: pans left);
      ``tilt``: the camera tilts down (content moves up; negative: tilts up).
    - ``zoom``: zoom in (negative: out) moving the picture's top and bottom edges ``|speed|`` px/frame;
      ``roll``: the picture turns about its centre, ``speed`` px/frame at the top and bottom edges.
    - ``shaky``: a hand-held still camera: the view jumps by independent offsets of standard deviation
      ``speed`` px in x and y every frame.
    - ``subject``: a still background with a bright square covering 4 % of the frame moving right by
      ``speed`` px/frame (bouncing at the edges): a still camera, not a frozen video.
    - ``frozen``: one picture repeated (a frozen video); ``static`` is the same; ``noisy``: a still picture
      with fresh Gaussian sensor noise of standard deviation ``speed`` luma levels in every frame.
    """

    frames: int
    kind: str = "moving"
    speed: float = 3.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in SHOT_KINDS:
            raise ValueError(f"unknown shot kind {self.kind!r}; choose one of {SHOT_KINDS}")
        if self.frames < 1:
            raise ValueError("a shot needs at least one frame")


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A colourful texture with both coarse structure and fine detail (so it is sharp and trackable)."""
    coarse = rng.integers(0, 256, size=(max(2, height // 48), max(2, width // 48), 3), dtype=np.uint8)
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    fine = rng.integers(-40, 41, size=(max(2, height // 4), max(2, width // 4)), dtype=np.int16)
    img += cv2.resize(fine, (width, height), interpolation=cv2.INTER_NEAREST)[..., None]
    # a palette shift per shot makes colour histograms differ across cuts
    img += rng.integers(-60, 61, size=(1, 1, 3), dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def shot_frames(shot: Shot, index: int, width: int, height: int):
    """Yield the RGB frames (height, width, 3) of one shot."""
    rng = np.random.default_rng(shot.seed if shot.seed is not None else 1000 + index)
    if shot.kind == "black":
        frame = np.zeros((height, width, 3), np.uint8)
        for _ in range(shot.frames):
            yield frame
        return
    if shot.kind in CAMERA_KINDS:
        yield from _camera_frames(shot, rng, width, height)
        return
    if shot.kind in ("subject", "frozen", "noisy"):
        yield from _still_camera_frames(shot, rng, width, height)
        return
    margin = int(abs(shot.speed) * shot.frames) + 2 if shot.kind in ("moving", "text") else 0
    tex = _texture(rng, height, width + margin)
    if shot.kind == "blur":
        tex = cv2.GaussianBlur(tex, (0, 0), sigmaX=max(3.0, width / 60))
    for t in range(shot.frames):
        x = int(round(t * abs(shot.speed))) if margin else 0
        frame = np.ascontiguousarray(tex[:, x:x + width])
        if shot.kind == "text":
            frame = frame.copy()
            scale = max(0.5, height / 240)
            for row in range(3):
                cv2.putText(frame, f"SUBTITLE LINE {row} {index}", (width // 20, height // 4 + row * int(40 * scale)),
                            cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), max(1, int(2 * scale)), cv2.LINE_AA)
        elif shot.kind == "flash" and t % 2 == 1:
            frame = 255 - frame
        yield frame


def _camera_frames(shot: Shot, rng: np.random.Generator, width: int, height: int):
    """A virtual camera over a still texture: frame t samples the texture at ``c_t + R(θ_t) q / s_t`` for the
    output pixel at offset q from the centre (translation c_t, zoom s_t, roll θ_t), with sub-pixel accuracy."""
    n, v, half = shot.frames, shot.speed, min(width, height) / 2
    c = np.zeros((n, 2))
    scale, theta = np.ones(n), np.zeros(n)
    if shot.kind == "pan":
        c[:, 0] = v * np.arange(n)
    elif shot.kind == "tilt":
        c[:, 1] = v * np.arange(n)
    elif shot.kind == "zoom":   # s >= 1 throughout: the texture needs no margin for it
        steps = np.arange(n) if v > 0 else np.arange(n)[::-1]
        scale = (1 + abs(v) / half) ** steps
    elif shot.kind == "roll":
        theta = v / half * np.arange(n)
    elif shot.kind == "shaky":
        c = rng.normal(0.0, abs(v), size=(n, 2))
    # a texture big enough for the whole path, turned or not (the rotated frame's corners reach its diagonal)
    reach = np.hypot(width, height) / 2 if shot.kind == "roll" else max(width, height) / 2
    pad = int(np.ceil(np.abs(c).max() + reach)) + 4
    tex = _texture(rng, 2 * pad, 2 * pad)
    out_c = np.array([(width - 1) / 2, (height - 1) / 2])
    for t in range(n):
        cos, sin = np.cos(theta[t]) / scale[t], np.sin(theta[t]) / scale[t]
        a = np.array([[cos, -sin], [sin, cos]])
        b = np.array([pad, pad]) + c[t] - a @ out_c
        m = np.hstack([a, b[:, None]]).astype(np.float64)
        yield cv2.warpAffine(tex, m, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)


def _still_camera_frames(shot: Shot, rng: np.random.Generator, width: int, height: int):
    """A still camera: a frozen picture, the same with sensor noise, or a small bright subject moving over it."""
    tex = _texture(rng, height, width)
    side = max(2, int(round(np.sqrt(0.04 * width * height))))   # the subject covers 4 % of the frame
    y0 = (height - side) // 2
    for t in range(shot.frames):
        if shot.kind == "frozen":
            yield tex
        elif shot.kind == "noisy":
            noise = rng.standard_normal(size=(height, width, 1), dtype=np.float32) * abs(shot.speed)  # luma noise
            yield np.clip(tex + noise, 0, 255).astype(np.uint8)
        else:
            span = max(1, width - side)
            x = int(round(width / 10 + t * abs(shot.speed))) % (2 * span)
            x = x if x <= span else 2 * span - x                  # bounce at the edges
            frame = tex.copy()
            frame[y0:y0 + side, x:x + side] = 255
            yield frame


def glitch_blocks(rgb: np.ndarray, seed: int = 0, area: float = 0.3) -> np.ndarray:
    """A copy of ``rgb`` with decoder-style garbage: a band of 8x8 blocks (aligned to the coded 8-px grid)
    over about ``area`` of the frame, each block solid white or green (or left as it was, ~30%), as a
    damaged MPEG-4/H.264 stream shows when a slice is lost and concealment fails."""
    rng = np.random.default_rng(seed)
    out = rgb.copy()
    h, w = out.shape[:2]
    rows, cols = h // 8, w // 8
    band = max(1, int(round(rows * area)))
    top = int(rng.integers(0, max(1, rows - band + 1)))
    colours = np.array([[255, 255, 255], [0, 255, 0]], np.uint8)
    for r in range(top, top + band):
        for c in range(cols):
            pick = rng.random()
            if pick < 0.7:
                out[8 * r:8 * r + 8, 8 * c:8 * c + 8] = colours[int(pick < 0.35)]
    return out


def make_video(path: str | Path, shots: Sequence[Shot], *, fps: Fraction | int | float = Fraction(25),
               width: int = 320, height: int = 240, codec: str = "libx264", gop: int | None = None,
               bframes: int | None = None, crf: int = 23, preset: str = "ultrafast",
               audio: bool = False, glitches: Sequence[int] = ()) -> list[int]:
    """Write a video made of ``shots`` and return the frame indices where hard cuts happen.

    ``gop`` fixes the keyframe interval (and disables scene-cut keyframes) so tests can place keyframes
    away from cuts; ``bframes`` sets B-frames (libx264), which reorders frames in decode order.
    ``glitches``: frame indices overwritten with :func:`glitch_blocks` garbage (damaged-frame tests).
    """
    from soraprep.types import fps_fraction

    fps = fps_fraction(fps)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(path), mode="w")
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p" if codec != "mjpeg" else "yuvj420p"
    if codec == "libx264":
        params = [f"crf={crf}"]
        if gop is not None:
            params += [f"keyint={gop}", f"min-keyint={gop}", "scenecut=0"]
        if bframes is not None:
            params.append(f"bframes={bframes}")
        stream.options = {"preset": preset, "x264-params": ":".join(params)}
    elif gop is not None:
        stream.codec_context.gop_size = gop
    astream = None
    if audio:
        astream = container.add_stream("aac", rate=16000)
    cuts, n = [], 0
    for i, shot in enumerate(shots):
        if i:
            cuts.append(n)
        for rgb in shot_frames(shot, i, width, height):
            if n in glitches:
                rgb = glitch_blocks(rgb, seed=n)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = n
            for packet in stream.encode(frame):
                container.mux(packet)
            n += 1
    for packet in stream.encode():
        container.mux(packet)
    if astream is not None:
        samples = int(n / fps * 16000)
        t = np.arange(samples) / 16000.0
        pcm = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        for start in range(0, samples, 1024):
            af = av.AudioFrame.from_ndarray(pcm[:, start:start + 1024], format="fltp", layout="mono")
            af.sample_rate = 16000
            af.pts = start
            for packet in astream.encode(af):
                container.mux(packet)
        for packet in astream.encode():
            container.mux(packet)
    container.close()
    return cuts
