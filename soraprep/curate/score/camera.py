"""Camera motion per clip, from the dense optical flow the ``motion`` scorer already computes.

No second flow and no second decode: for every flow field it computes, the motion scorer also keeps five
cheap global statistics (:func:`global_flow`), and at aggregation time :func:`classify` turns a clip's
statistics into two columns:

``camera_motion`` (text), one of :data:`CAMERA_CLASSES`:

==============  ===========================================================================================
``static``      no global motion above ``move_px`` (a still camera; subjects may move in front of it)
``pan_left``    the camera turns left: the picture content moves right (mean horizontal flow > 0)
``pan_right``   the camera turns right: content moves left
``tilt_up``     the camera tilts up: content moves down (image y grows downwards)
``tilt_down``   the camera tilts down: content moves up
``zoom_in``     content expands from the centre (positive divergence)
``zoom_out``    content contracts towards the centre
``roll``        content turns about the centre (either way)
``shaky``       the translation jitters from sample to sample by ``shake_px`` or more (hand-held shake)
``mixed``       two global motions of similar size (e.g. a pan while zooming), or flow the global model
                does not explain (residual larger than the largest global motion: parallax, big subjects)
==============  ===========================================================================================

``camera_shake``: the sample-to-sample jitter of the global translation, ``sqrt(mean(|Δt|²) / 2)`` over
consecutive samples (for independent jitter of standard deviation s this is s; a steady or slowly
accelerating pan gives ~0), in px/frame at a 256-px short side. Null for clips with fewer than two samples.

Units: every statistic is in pixels per frame at a 256-px short side (like ``motion_score``); zoom and
roll are the displacement they cause at the edge of the short side (half the short side from the centre),
so a zoom of 1 moves the top and bottom edges by 1 px/frame, comparable to a pan of 1 px/frame.

The fit is robust to moving subjects: the translation is the median flow, and zoom and roll are medians of
the per-point divergence and curl away from the centre, so a subject covering less than half the picture
does not move them (a bird crossing a still sky leaves the camera ``static``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

CAMERA_CLASSES = ("static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out", "roll",
                  "shaky", "mixed")
#: per-pair signals the motion scorer stores (px/frame at a 256-px short side)
FLOW_STATS = ("cam_dx", "cam_dy", "cam_zoom", "cam_roll", "cam_resid")
_STRIDE = 4  # statistics on every 4th flow vector each way (DIS ultrafast is smooth over 4 px): 16x fewer points


def global_flow(flow: np.ndarray, scale: float) -> tuple[float, float, float, float, float]:
    """Robust similarity-motion fit of one dense flow field ``(h, w, 2)`` (px/frame, x right, y down).

    Returns ``(dx, dy, zoom, roll, residual)`` multiplied by ``scale`` (flow px -> px at 256-px short side):
    the median translation; the median divergence and curl of the flow about the centre, as displacement
    at half the short side; the mean magnitude of what the translation + zoom + roll model leaves.
    """
    h, w = flow.shape[:2]
    x, y, far, xr, yr = _grid(h, w)
    f = flow[::_STRIDE, ::_STRIDE]
    u, v = f[..., 0], f[..., 1]                                      # (h/s, w/s)
    tx, ty = float(np.median(u)), float(np.median(v))
    up, vp = u - tx, v - ty
    uf, vf = up[far], vp[far]
    a = float(np.median(xr * uf + yr * vf))          # divergence / 2: relative scale change per frame
    b = float(np.median(xr * vf - yr * uf))          # curl / 2: rotation, radians per frame
    ex, ey = up - (a * x - b * y), vp - (b * x + a * y)
    resid = float(np.mean(np.sqrt(ex * ex + ey * ey)))
    edge = min(h, w) / 2
    return tx * scale, ty * scale, a * edge * scale, b * edge * scale, resid * scale


@lru_cache(maxsize=16)
def _grid(h: int, w: int):
    """Sampled coordinates about the centre (x, y), the points far enough from it (near the centre divergence
    and curl are noise over a tiny radius), and x / r², y / r² there. Cached per flow size."""
    x = (np.arange(0, w, _STRIDE, dtype=np.float32) - (w - 1) / 2)[None, :]
    y = (np.arange(0, h, _STRIDE, dtype=np.float32) - (h - 1) / 2)[:, None]
    xx, yy = np.broadcast_to(x, (y.size, x.size)), np.broadcast_to(y, (y.size, x.size))
    r2 = xx * xx + yy * yy
    far = r2 > (0.25 * min(h, w)) ** 2
    return x, y, far, xx[far] / r2[far], yy[far] / r2[far]


def classify(stats: dict[str, np.ndarray], *, move_px: float, shake_px: float,
             mixed_ratio: float) -> tuple[str | None, float | None]:
    """``(camera_motion, camera_shake)`` from one clip's per-pair :data:`FLOW_STATS` (NaN where unsampled).

    None for both when the clip holds no sampled pair.
    """
    ok = ~np.isnan(stats["cam_dx"])
    if not ok.any():
        return None, None
    dx, dy, zoom, roll, resid = (stats[k][ok].astype(np.float64) for k in FLOW_STATS)
    shake = None
    if dx.size >= 2:
        shake = float(np.sqrt(np.mean(np.diff(dx) ** 2 + np.diff(dy) ** 2) / 2))
    if shake is not None and shake >= shake_px:
        return "shaky", shake
    means = {"pan": float(dx.mean()), "tilt": float(dy.mean()), "zoom": float(zoom.mean()),
             "roll": float(roll.mean())}
    ranked = sorted(means, key=lambda k: abs(means[k]), reverse=True)
    top, second = abs(means[ranked[0]]), abs(means[ranked[1]])
    if top < move_px:
        return "static", shake
    if second >= mixed_ratio * top or float(resid.mean()) > top:
        return "mixed", shake
    kind, sign = ranked[0], means[ranked[0]] > 0
    label = {"pan": ("pan_right", "pan_left"), "tilt": ("tilt_down", "tilt_up"),
             "zoom": ("zoom_out", "zoom_in"), "roll": ("roll", "roll")}[kind][int(sign)]
    return label, shake
