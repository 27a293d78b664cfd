"""Display orientation: turning decoded pictures the way a player does.

Phones store portrait video as landscape pictures plus a *display matrix* (MP4 ``tkhd``) that tells the
player to turn them. soraprep reports that turn as ``rotation``: degrees **clockwise** that the coded
picture must be rotated to be seen upright (the ``rotate`` tag of older FFmpeg; FFmpeg's own
``av_display_rotation_get`` returns the same angle counter-clockwise, i.e. negated). Widths, heights and
aspect ratios in the manifest are always display sizes, after that turn. Mirroring matrices are not
handled (no camera writes them); only the rotation part is applied.
"""

from __future__ import annotations

import numpy as np


def display_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    """(width, height) as displayed: swapped for a quarter turn."""
    return (height, width) if rotation % 180 == 90 else (width, height)


def coded_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    """The inverse of :func:`display_size` (a quarter turn swaps both ways)."""
    return display_size(width, height, rotation)


def rotate_array(arr: np.ndarray, rotation: int) -> np.ndarray:
    """An (H, W[, C]) picture turned ``rotation`` degrees clockwise (contiguous; unchanged for 0)."""
    k = (rotation // 90) % 4
    if k == 0:
        return arr
    return np.ascontiguousarray(np.rot90(arr, k=-k, axes=(0, 1)))


def upright_frame(frame, rotation: int):
    """A yuv420p ``av.VideoFrame`` with its pixels turned ``rotation`` degrees clockwise, so that it shows
    upright without a display matrix (colour tags kept; pts/time base are the caller's to set)."""
    import av

    k = (rotation // 90) % 4
    if k == 0:
        return frame
    if frame.format.name != "yuv420p" or frame.width % 2 or frame.height % 2:
        raise ValueError(f"upright_frame needs even-sized yuv420p, got {frame.width}x{frame.height} "
                         f"{frame.format.name}")
    planes = []
    for p in frame.planes:
        arr = np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width]
        planes.append(rotate_array(arr, rotation))
    width = planes[0].shape[1]
    out = av.VideoFrame.from_ndarray(np.concatenate([p.ravel() for p in planes]).reshape(-1, width),
                                     format="yuv420p")
    for attr in ("color_range", "colorspace"):
        try:
            setattr(out, attr, getattr(frame, attr))
        except (AttributeError, ValueError):
            pass
    return out
