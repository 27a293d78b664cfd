"""``--sweep``: the same estimate over a grid of resolutions and clip lengths, written as JSON + plots.

Axes: ``height`` (width follows the base aspect ratio, rounded to a multiple of 16), ``width``,
``frames``. The HTML plot is self-contained SVG (no dependency); the PNG needs matplotlib
(``pip install 'soraprep[estimate]'``) and is skipped with a warning without it.
"""

from __future__ import annotations

import html
import itertools
import json
import math
from pathlib import Path
from typing import Any

from soraprep.estimate.plan import estimate

AXES = ("height", "width", "frames")
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def parse_sweep(specs: list[str]) -> dict[str, list[int]]:
    """``["height=256,512", "frames=1,17"]`` -> ``{"height": [256, 512], "frames": [1, 17]}``."""
    axes: dict[str, list[int]] = {}
    for spec in specs:
        for part in spec.replace(";", " ").split():
            name, sep, values = part.partition("=")
            name = name.strip().lower()
            if not sep or name not in AXES:
                raise ValueError(f"bad --sweep {part!r}: use AXIS=V1,V2,... with AXIS one of {', '.join(AXES)} "
                                 "(e.g. --sweep height=256,512,768 --sweep frames=17,51)")
            try:
                vals = [int(v) for v in values.split(",") if v.strip()]
            except ValueError:
                raise ValueError(f"bad --sweep values {values!r}: integers separated by commas") from None
            if not vals or min(vals) < 1:
                raise ValueError(f"--sweep {name} needs positive integers, got {values!r}")
            axes[name] = vals
    if not axes:
        raise ValueError("--sweep needs at least one AXIS=V1,V2,... (axes: height, width, frames)")
    return axes


def run_sweep(axes: dict[str, list[int]], **base: Any) -> list[dict[str, Any]]:
    """One estimate per grid point; a point whose shape is invalid carries ``error`` instead of numbers."""
    first = estimate(**base)  # validates the shared options and gives the base shape
    s = first.settings
    base_h, base_w, base_f = s["height"] or 256, s["width"] or 256, s["frames"] or 1
    names = list(axes)
    points = []
    for values in itertools.product(*(axes[n] for n in names)):
        v = dict(zip(names, values, strict=True))
        h = v.get("height", base_h)
        w = v.get("width", base_w if "height" not in v else max(16, round(h * base_w / base_h / 16) * 16))
        f = v.get("frames", base_f)
        point: dict[str, Any] = {"frames": f, "height": h, "width": w}
        try:
            est = estimate(**{**base, "frames": f, "height": h, "width": w})
        except ValueError as exc:
            point["error"] = str(exc)
        else:
            d = est.to_dict()
            point.update({k: d[k] for k in ("tokens", "forward_flops", "train_flops", "gpu_hours", "wall_hours",
                                            "cost", "memory_per_gpu_bytes", "fits", "max_micro_batch")})
            point["capacity_bytes"] = est.memory.capacity
            point["layout"] = d["layout"]["layout"]["describe"] if d["layout"] else None  # per point with --layout auto
        points.append(point)
    return points


def _series(points: list[dict[str, Any]]) -> tuple[str, str, dict[str, list[tuple[float, float, float, bool]]]]:
    """Pick x (height if it varies, else frames, else width) and group the rest into labelled series."""
    ok = [p for p in points if "error" not in p]
    varying = [a for a in AXES if len({p[a] for p in points}) > 1]
    x = varying[0] if varying else "height"
    label_axes = [a for a in varying if a != x and not (x == "height" and a == "width")]
    if points and points[0].get("cost") is not None:
        metric = "cost"
    elif points and points[0].get("gpu_hours") is not None:
        metric = "gpu_hours"
    else:
        metric = "forward_flops"
    groups: dict[str, list[tuple[float, float, float, bool]]] = {}
    for p in ok:
        label = ", ".join(f"{a}={p[a]}" for a in label_axes) or "estimate"
        groups.setdefault(label, []).append((p[x], p[metric] or 0.0, p["memory_per_gpu_bytes"] / 2**30, p["fits"]))
    for g in groups.values():
        g.sort()
    return x, metric, groups


_METRIC_LABEL = {"cost": "training cost ($)", "gpu_hours": "GPU-hours", "forward_flops": "forward FLOPs per sample"}


def _svg_panel(title: str, xlab: str, series: dict[str, list[tuple[float, float]]], *, hline: float | None,
               w: int = 460, h: int = 320) -> str:
    left, right, top, bottom = 70, 20, 30, 45
    xs = [x for pts in series.values() for x, _ in pts] or [0, 1]
    ys = [y for pts in series.values() for _, y in pts if y > 0] + ([hline] if hline else [])
    ys = ys or [1.0]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    ly0, ly1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    ly1 = ly1 if ly1 > ly0 else ly0 + 1

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (w - left - right)

    def py(y: float) -> float:
        return top + (ly1 - math.log10(max(y, 10.0**ly0))) / (ly1 - ly0) * (h - top - bottom)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" fill="none" stroke="#999"/>']
    for e in range(ly0, ly1 + 1):
        yy = py(10.0**e)
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 4}" y="{yy + 4:.1f}" text-anchor="end">1e{e}</text>')
    for xv in sorted(set(xs)):
        out.append(f'<text x="{px(xv):.1f}" y="{h - bottom + 14}" text-anchor="middle">{xv:g}</text>')
    out.append(f'<text x="{(left + w - right) / 2}" y="{h - 8}" text-anchor="middle">{html.escape(xlab)}</text>')
    if hline:
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{py(hline):.1f}" y2="{py(hline):.1f}" '
                   'stroke="#000" stroke-dasharray="5,4"/>')
        out.append(f'<text x="{w - right - 4}" y="{py(hline) - 4:.1f}" text-anchor="end">GPU memory</text>')
    for i, (label, pts) in enumerate(series.items()):
        color = _COLORS[i % len(_COLORS)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        out.extend(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>' for x, y in pts)
        out.append(f'<text x="{left + 6}" y="{top + 14 + 13 * i}" fill="{color}">{html.escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def write_sweep(points: list[dict[str, Any]], out_dir: str | Path, *, title: str) -> dict[str, str | None]:
    """Write ``sweep.json``, ``sweep.html`` (inline SVG) and ``sweep.png`` (if matplotlib is installed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps({"title": title, "points": points}, indent=1))
    x, metric, groups = _series(points)
    cap = next((p["capacity_bytes"] / 2**30 for p in points if "capacity_bytes" in p), None)
    cost_series = {k: [(a, b) for a, b, _, _ in v] for k, v in groups.items()}
    mem_series = {k: [(a, c) for a, _, c, _ in v] for k, v in groups.items()}
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(p.get(k, '')))}</td>" for k in
                         ("frames", "height", "width", "tokens", "gpu_hours", "cost", "memory_per_gpu_bytes",
                          "fits", "error")) + "</tr>"
        for p in points
    )
    page = (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<h2 style='font-family:sans-serif'>{html.escape(title)}</h2>"
        + _svg_panel(_METRIC_LABEL[metric], x, cost_series, hline=None)
        + _svg_panel("memory per GPU (GiB)", x, mem_series, hline=cap)
        + "<table border=1 cellspacing=0 style='font-family:sans-serif;font-size:12px'><tr>"
        + "".join(f"<th>{c}</th>" for c in ("frames", "height", "width", "tokens", "gpu_hours", "cost",
                                             "memory_per_gpu_bytes", "fits", "error"))
        + "</tr>" + rows + "</table>"
    )
    (out / "sweep.html").write_text(page)
    files: dict[str, str | None] = {"json": str(out / "sweep.json"), "html": str(out / "sweep.html"), "png": None}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return files
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for label, pts in cost_series.items():
        a1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    for label, pts in mem_series.items():
        a2.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    if cap:
        a2.axhline(cap, color="k", linestyle="--", label="GPU memory")
    for ax, ylab in ((a1, _METRIC_LABEL[metric]), (a2, "memory per GPU (GiB)")):
        ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(ylab)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=110)
    plt.close(fig)
    files["png"] = str(out / "sweep.png")
    return files
