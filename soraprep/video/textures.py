"""Text-free textures that fool text detectors: brick walls, fences, lattices, checkerboards, foliage.

A text detector (DBNet in PP-OCR) fires on regular high-contrast strokes; real footage of walls, fences
and trellises was dropped as "text" covering 19-49 % of the frame (issue 14). These generators draw such
scenes procedurally, with no glyphs anywhere, so a test knows the true text area is zero; ``overlay_text``
adds real text (``cv2.putText``) at a known place for the positive cases.

Every generator takes ``(height, width, seed, cell=None)`` and returns an RGB uint8 array (height, width, 3);
``cell`` is the element size in px (brick height, picket pitch, slat pitch, square, leaf), chosen from the
frame size when None. Small cells (3-10 px) at 90-224 px frames are what fooled the detector.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _grain(img: np.ndarray, rng: np.random.Generator, amount: int = 12) -> np.ndarray:
    """Mild sensor-like noise so no texture is perfectly flat."""
    noise = rng.integers(-amount, amount + 1, size=img.shape[:2], dtype=np.int16)[..., None]
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def brick_wall(height: int, width: int, seed: int = 0, cell: int | None = None) -> np.ndarray:
    """Bricks ``cell`` px high laid in rows (header bond: about as long as high) in light mortar, each
    with its own shade, a shadowed lower edge and weathering specks."""
    rng = _rng(seed)
    bh = max(3, cell or height // int(rng.integers(8, 14)))  # brick height (px)
    bw = max(2, int(bh * rng.uniform(1.0, 1.5)))          # brick length: header faces, ~1-1.5x the height
    mortar = max(1, bh // 4)
    img = np.empty((height, width, 3), np.int16)
    img[:] = (210, 205, 195)                              # mortar
    for r, y in enumerate(range(0, height, bh)):
        offset = (bw // 2) * (r % 2)
        for x in range(-offset, width, bw):
            colour = np.array([165, 85, 60]) + rng.integers(-40, 41) + rng.integers(-12, 13, 3)
            x0, x1 = max(0, x + mortar), max(0, x + bw)
            img[y + mortar: y + bh, x0:x1] = colour
            img[y + bh - mortar: y + bh, x0:x1] = colour - 50  # shadow under the brick's face
    img[rng.random((height, width)) < 0.04] -= 70          # weathering specks
    return _grain(np.clip(img, 0, 255).astype(np.uint8), rng)


def fence(height: int, width: int, seed: int = 0, cell: int | None = None) -> np.ndarray:
    """Picket fences seen from afar: rows of short light pickets ``cell`` px apart, each row with a rail,
    over a dark hedge (a balustrade or a stack of railings looks the same to a detector)."""
    rng = _rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = (40, 60, 35)                                 # dark hedge behind
    pitch = max(3, cell or width // int(rng.integers(14, 24)))
    picket = max(1, int(pitch * 0.55))
    band = 2 * pitch                                      # picket height
    rows = 1 + seed % 4
    for r in range(rows):
        y0 = int((r + 0.5) * height / rows - band / 2)
        for x in range(int(rng.integers(0, pitch)), width, pitch):
            img[y0:y0 + band, x:x + picket] = np.clip(np.array([205, 185, 150]) + rng.integers(-25, 26, 3), 0, 255)
        img[y0 + band // 3: y0 + band // 3 + max(1, pitch // 3)] = (170, 150, 120)  # the rail
    return _grain(img, rng)


def lattice(height: int, width: int, seed: int = 0, cell: int | None = None) -> np.ndarray:
    """A diagonal trellis: two families of light slats ``cell`` px apart, crossing at 90 degrees."""
    rng = _rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = (30, 45, 30)
    pitch = max(3, cell or min(height, width) // int(rng.integers(6, 11)))
    thick = max(1, pitch // 5)
    colour = (225, 220, 205)
    for c in range(-height, width + height, pitch):
        cv2.line(img, (c, 0), (c + height, height), colour, thick, cv2.LINE_AA)
        cv2.line(img, (c, height), (c + height, 0), colour, thick, cv2.LINE_AA)
    return _grain(img, rng)


def checkerboard(height: int, width: int, seed: int = 0, cell: int | None = None) -> np.ndarray:
    """Black and white squares of ``cell`` px (a tiled floor, a calibration target)."""
    rng = _rng(seed)
    cell = max(2, cell or min(height, width) // int(rng.integers(6, 12)))
    yy, xx = np.mgrid[0:height, 0:width]
    board = (((yy // cell) + (xx // cell)) % 2).astype(np.uint8) * 215 + 20
    return _grain(np.repeat(board[..., None], 3, axis=2), rng, 6)


def foliage(height: int, width: int, seed: int = 0, cell: int | None = None) -> np.ndarray:
    """Leaf-like noise: many overlapping green ellipses (about ``cell`` px) of varied shade."""
    rng = _rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = (20, 45, 15)
    size = max(2, cell or min(height, width) // 30)
    for _ in range(int(height * width / (size * size) * 1.5)):
        c = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(size // 2 + 1, size * 2)), int(rng.integers(size // 3 + 1, size)))
        g = int(rng.integers(60, 200))
        cv2.ellipse(img, c, axes, float(rng.uniform(0, 180)), 0, 360,
                    (int(g * rng.uniform(0.3, 0.7)), g, int(g * rng.uniform(0.1, 0.4))), -1, cv2.LINE_AA)
    return _grain(img, rng)


#: name -> generator; every texture is text-free by construction
TEXTURES: dict[str, Callable[..., np.ndarray]] = {
    "brick_wall": brick_wall,
    "fence": fence,
    "lattice": lattice,
    "checkerboard": checkerboard,
    "foliage": foliage,
}


def overlay_text(img: np.ndarray, text: str, *, scale: float = 1.0, org: tuple[int, int] | None = None,
                 colour: tuple[int, int, int] = (255, 255, 255), outline: bool = True) -> np.ndarray:
    """``img`` with ``text`` drawn by ``cv2.putText`` (Hershey simplex, anti-aliased), like a burnt-in title.

    ``org`` is the baseline's left end (default: centred horizontally, in the lower third); ``outline``
    draws a dark border under the glyphs, as subtitles do, so the text reads over any background.
    """
    out = np.ascontiguousarray(img).copy()
    h, w = out.shape[:2]
    thick = max(1, int(round(2 * scale)))
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    if org is None:
        org = (max(0, (w - tw) // 2), min(h - 2, int(h * 0.8) + th // 2))
    if outline:
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2 * max(1, thick), cv2.LINE_AA)
    cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
    return out
