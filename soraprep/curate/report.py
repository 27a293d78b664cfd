"""The curation report: one self-contained HTML file (inline CSS, SVG charts, base64 thumbnails).

Built from ``OUT/manifest.parquet`` (+ ``OUT/run.json`` for stage times and ``OUT/thumbs/``), so
``soraprep report OUT`` can rebuild it at any time, e.g. after re-thresholding.
"""

from __future__ import annotations

import base64
import html
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from soraprep.curate.cutting import thumb_path
from soraprep.manifest import read_manifest, read_metadata

SCORE_COLUMNS = ("duration_s", "motion_score", "sharpness", "brightness", "black_ratio", "static_ratio", "fps",
                 "short_side", "aspect_ratio")
MAX_THUMBS = 48

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2430;background:#fafbfc}
h1{margin:0 0 4px}h2{margin-top:32px;border-bottom:1px solid #dde;padding-bottom:4px}
.muted{color:#667}.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{background:#fff;border:1px solid #dde;border-radius:8px;padding:10px 16px;min-width:120px}
.card b{display:block;font-size:24px}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #dde;padding:4px 8px;font-size:13px;text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:10px}.thumb{width:190px;background:#fff;border:1px solid #dde;border-radius:6px;
padding:4px;font-size:11px;word-break:break-all}.thumb img{width:100%;border-radius:4px;display:block}
.kept{border-color:#3a3}.dropped{border-color:#c44}.hists{display:flex;flex-wrap:wrap;gap:14px}
.hist{background:#fff;border:1px solid #dde;border-radius:8px;padding:6px}
"""


def _thresholds(recipe_yaml: str | None) -> dict[str, dict[str, float]]:
    if not recipe_yaml:
        return {}
    try:
        data = yaml.safe_load(recipe_yaml)
    except yaml.YAMLError:  # another tool's metadata: draw without thresholds
        return {}
    rules = data.get("filter") if isinstance(data, dict) else None
    if not isinstance(rules, dict):
        return {}
    return {str(k): {b: n for b, t in v.items() if (n := _number(t)) is not None and math.isfinite(n)}
            for k, v in rules.items() if isinstance(v, dict)}


def _value(row: dict[str, Any], col: str):
    if col == "short_side":
        h, w = row.get("height"), row.get("width")
        return None if h is None or w is None else min(h, w)
    return row.get(col)


def _number(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _axis(a: float, b: float, lo: float | None, hi: float | None) -> tuple[float, float]:
    """The x range of a histogram of values in [a, b]: widened to thresholds near the data, and to a
    visible width when every value is equal up to float noise (or equal)."""
    span = max(b / 2 - a / 2, abs(b) * 0.05, 1e-9)  # half the data span, in halves to avoid overflow
    for t in (lo, hi):  # show a threshold on the axis only when it is near the data (else: off-scale label)
        if t is not None and math.isfinite(t) and a / 2 - span <= t / 2 <= b / 2 + span:
            a, b = min(a, t), max(b, t)
    if b / 2 - a / 2 <= max(abs(a), abs(b)) * 1e-9:  # one value (up to noise): a bin 10% of it wide
        c = a / 2 + b / 2
        pad = max(abs(c) * 0.05, 0.5)
        a, b = max(c - pad, -sys.float_info.max), min(c + pad, sys.float_info.max)
    return a, b


def svg_histogram(values: list[float], title: str, lo: float | None = None, hi: float | None = None,
                  bins: int = 30, width: int = 300, height: int = 150) -> str:
    """A small SVG histogram with dashed lines at the filter's min/max."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    pad_l, pad_b, pad_t = 34, 20, 18
    w, h = width - pad_l - 6, height - pad_b - pad_t
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<text x="{pad_l}" y="12" font-size="12" font-weight="bold">{html.escape(title)}</text>']
    if v.size == 0:
        parts.append(f'<text x="{pad_l}" y="{pad_t + h / 2}" font-size="11" fill="#888">no values</text></svg>')
        return "".join(parts)
    a, b = _axis(float(v.min()), float(v.max()), lo, hi)
    half = b / 2 - a / 2  # halves: b - a overflows for values near the float limit
    # own binning (np.histogram refuses ranges a float cannot split into `bins` steps, e.g. 1.6 vs 1.5999999999999996)
    idx = np.clip(np.floor((v / 2 - a / 2) / half * bins), 0, bins - 1).astype(int)
    counts = np.bincount(idx, minlength=bins)
    top = max(1, int(counts.max()))

    def x(val: float) -> float:
        return pad_l + (val / 2 - a / 2) / half * w

    bw = w / bins
    for i, c in enumerate(counts):
        bh = c / top * h
        parts.append(f'<rect x="{pad_l + i * bw:.1f}" y="{pad_t + h - bh:.1f}" width="{max(bw - 1, 1):.1f}" '
                     f'height="{bh:.1f}" fill="#4a7bd0"/>')
    parts.append(f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" stroke="#333"/>')
    parts.append(f'<text x="{pad_l}" y="{height - 4}" font-size="10">{a:.3g}</text>')
    parts.append(f'<text x="{pad_l + w}" y="{height - 4}" font-size="10" text-anchor="end">{b:.3g}</text>')
    parts.append(f'<text x="2" y="{pad_t + 8}" font-size="10">{top}</text>')
    for t, name in ((lo, "min"), (hi, "max")):
        if t is None:
            continue
        label = f"{name} {t:g}"
        if a <= t <= b:
            anchor, dx = ("start", 3) if name == "min" else ("end", -3)
            parts.append(f'<line x1="{x(t):.1f}" y1="{pad_t}" x2="{x(t):.1f}" y2="{pad_t + h}" stroke="#d22" '
                         f'stroke-dasharray="4,3" stroke-width="2"><title>{label}</title></line>')
            parts.append(f'<text x="{x(t) + dx:.1f}" y="{pad_t + 10}" font-size="10" fill="#d22" '
                         f'text-anchor="{anchor}">{label}</text>')
        else:  # far outside the data: say so at the edge instead of squashing the histogram
            edge, anchor, arrow = (pad_l, "start", "◂ ") if t < a else (pad_l + w, "end", "")
            tail = "" if t < a else " ▸"
            parts.append(f'<text x="{edge}" y="{pad_t + 10}" font-size="10" fill="#d22" text-anchor="{anchor}">'
                         f'{arrow}{label} (off scale){tail}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_bars(items: list[tuple[str, float]], unit: str = "s", width: int = 520) -> str:
    if not items:
        return "<p class='muted'>no data</p>"
    top = max(v for _, v in items) or 1.0
    rowh = 22
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{rowh * len(items) + 6}">']
    for i, (name, val) in enumerate(items):
        y = 4 + i * rowh
        bw = (width - 200) * val / top
        parts.append(f'<text x="0" y="{y + 14}" font-size="12">{html.escape(name)}</text>'
                     f'<rect x="100" y="{y}" width="{bw:.1f}" height="16" fill="#6a9f58"/>'
                     f'<text x="{104 + bw:.1f}" y="{y + 13}" font-size="11">{val:.2f} {unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _thumb_html(out: Path, row: dict[str, Any], kept: bool) -> str:
    p = thumb_path(out, str(row.get("clip_id")))
    img = (f'<img alt="thumbnail" src="data:image/jpeg;base64,{base64.b64encode(p.read_bytes()).decode()}">'
           if p.exists() else "<div class='muted'>(no thumbnail)</div>")
    why = "kept" if kept else html.escape(row.get("filter_reason") or "")
    span = f"{row.get('start_s') or 0:.2f}–{row.get('end_s') or 0:.2f} s"
    return (f'<div class="thumb {"kept" if kept else "dropped"}">{img}<div><b>{html.escape(str(row.get("clip_id")))}'
            f'</b><br>{span} · {row.get("num_frames")} f<br>{why}</div></div>')


@dataclass(frozen=True)
class RunSummary:
    """The counts of one manifest, shared by the report's cards, its stage table and the console summary,
    so they can never disagree: ``rows = clips + errors`` and ``clips = kept + dropped``."""

    rows: int
    videos: int
    clips: int  # rows without an error
    kept: int
    dropped: int  # clips the filters dropped
    errors: int
    errors_by_stage: tuple[tuple[str, int], ...]  # pipeline order
    errors_by_kind: tuple[tuple[str, str, int, str, str], ...]  # (stage, kind, count, first source, first message)
    written: int  # kept clips cut into files
    bucketed: int
    hours: float
    kept_hours: float


def row_error(row: dict[str, Any]) -> dict[str, str] | None:
    """A row's error as ``{stage, kind, message}`` strings, whatever shape a manifest stored it in."""
    err = row.get("error")
    if not err:
        return None
    if not isinstance(err, dict):
        return {"stage": "?", "kind": "error", "message": str(err)}
    return {k: str(err.get(k) if err.get(k) is not None else "?") for k in ("stage", "kind", "message")}


def _hours(rows: list[dict[str, Any]]) -> float:
    return sum(d for r in rows if (d := _number(r.get("duration_s"))) is not None and math.isfinite(d)) / 3600


def summarize(rows: list[dict[str, Any]]) -> RunSummary:
    from soraprep.curate.recipe import PIPELINE

    errors = [(r, e) for r in rows if (e := row_error(r))]
    clips = [r for r in rows if not row_error(r)]
    kept = [r for r in clips if r.get("keep")]
    by_stage = Counter(e["stage"] for _, e in errors)
    order = {name: float(i) for i, name in enumerate(PIPELINE)}  # scorers sit between score and filter
    stages = sorted(by_stage, key=lambda st: (order.get(st, order["score"] + 0.5), st))
    kinds: dict[tuple[str, str], list] = {}
    for r, e in errors:
        kinds.setdefault((e["stage"], e["kind"]), [0, str(r.get("source") or r.get("clip_id") or ""), e["message"]])
        kinds[(e["stage"], e["kind"])][0] += 1
    return RunSummary(
        rows=len(rows), videos=len({r.get("video_id") or r.get("source") for r in rows}), clips=len(clips),
        kept=len(kept), dropped=len(clips) - len(kept), errors=len(errors),
        errors_by_stage=tuple((st, by_stage[st]) for st in stages),
        errors_by_kind=tuple(sorted(((st, k, n, src, msg) for (st, k), (n, src, msg) in kinds.items()),
                                    key=lambda t: (-t[2], t[0], t[1]))),
        written=sum(1 for r in kept if r.get("cut_mode") not in (None, "none")),
        bucketed=sum(1 for r in kept if r.get("bucket")), hours=_hours(clips), kept_hours=_hours(kept))


def _fmt_hours(h: float) -> str:
    return f"{h:.2f}" if h < 1e6 else f"{h:.3g}"


def _provenance_columns(row: dict[str, Any]) -> list[str]:
    try:
        prov = json.loads(row.get("provenance") or "{}")
    except (TypeError, ValueError):
        return []
    return list(prov) if isinstance(prov, dict) else []


def build_report(out: Path) -> str:
    out = Path(out)
    rows = read_manifest(out / "manifest.parquet")
    meta = read_metadata(out / "manifest.parquet")
    try:
        run = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    except (OSError, ValueError):
        run = {}
    run = run if isinstance(run, dict) else {}
    thresholds = _thresholds(meta.get("soraprep.recipe"))
    errors = [(r, e) for r in rows if (e := row_error(r))]
    clips = [r for r in rows if not row_error(r)]
    kept = [r for r in clips if r.get("keep")]
    dropped = [r for r in clips if not r.get("keep")]
    s = summarize(rows)
    reasons = Counter(part.split("=")[0].split(" ")[0] for r in dropped
                      for part in str(r.get("filter_reason") or "").split("; ") if part)
    funnel = [("rows in the manifest", s.rows), ("input videos / spans", s.videos),
              *((f"failed at {stage}", n) for stage, n in s.errors_by_stage),
              ("failed (all stages)", s.errors),
              ("clips scored", s.clips), ("dropped by filters", s.dropped), ("kept", s.kept),
              ("kept clips cut into files", s.written), ("kept clips with a bucket", s.bucketed)]
    cards = "".join(f'<div class="card"><b>{v}</b>{html.escape(k)}</div>' for k, v in [
        ("videos", s.videos), ("clips", s.clips), ("kept", s.kept), ("dropped", s.dropped),
        ("errors", s.errors), ("hours scanned", _fmt_hours(s.hours)), ("hours kept", _fmt_hours(s.kept_hours))])
    # built-in columns, every scored column (model-based scorers too: they write provenance) and every
    # column a filter thresholds
    columns = list(SCORE_COLUMNS)
    for c in [k for r in clips for k in _provenance_columns(r)] + list(thresholds):
        if c not in columns:
            columns.append(c)
    hists = "".join(
        f'<div class="hist">{svg_histogram([_number(_value(r, c)) for r in clips], c, thresholds.get(c, {}).get("min"), thresholds.get(c, {}).get("max"))}</div>'
        for c in columns if any(_number(_value(r, c)) is not None for r in clips))
    stage_times = sorted(((str(k), t) for k, v in (run.get("stage_time_s") or {}).items()
                          if (t := _number(v)) is not None and math.isfinite(t)), key=lambda kv: -kv[1])
    buckets = Counter(r.get("bucket") for r in kept if r.get("bucket"))
    err_rows = "".join(
        f"<tr><td>{html.escape(str(r.get('source')))}</td><td>{html.escape(e['stage'])}</td>"
        f"<td>{html.escape(e['kind'])}</td><td>{html.escape(e['message'][:300])}</td></tr>"
        for r, e in errors)
    sections = [
        f"<h1>soraprep curation report</h1><p class='muted'>{html.escape(str(out.resolve()))} · recipe "
        f"{html.escape(str(run.get('recipe', meta.get('soraprep.recipe_hash', ''))))} "
        f"({html.escape(meta.get('soraprep.recipe_hash', ''))}) · wall time {_number(run.get('wall_time_s')) or 0:.1f} s</p>",
        f'<div class="cards">{cards}</div>',
        "<h2 id='stages'>Counts per stage</h2><table><tr><th>stage</th><th>count</th></tr>"
        + "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in funnel) + "</table>",
        "<h2 id='reasons'>Why clips were dropped</h2>"
        + ("<table><tr><th>rule</th><th>clips</th></tr>" + "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in reasons.most_common()) + "</table>"
           if reasons else "<p class='muted'>nothing dropped by the filters</p>"),
        "<h2 id='scores'>Score distributions <span class='muted'>(dashed red: filter thresholds)</span></h2>"
        f"<div class='hists'>{hists}</div>",
        f"<h2 id='kept'>Kept clips <span class='muted'>({len(kept)}, first {min(len(kept), MAX_THUMBS)})</span></h2>"
        f"<div class='grid'>{''.join(_thumb_html(out, r, True) for r in kept[:MAX_THUMBS])}</div>",
        f"<h2 id='dropped'>Dropped clips <span class='muted'>({len(dropped)}, first {min(len(dropped), MAX_THUMBS)})</span></h2>"
        f"<div class='grid'>{''.join(_thumb_html(out, r, False) for r in dropped[:MAX_THUMBS])}</div>",
        "<h2 id='timing'>Time per stage <span class='muted'>(summed over workers)</span></h2>" + svg_bars(stage_times),
        "<h2 id='buckets'>Buckets</h2>" + ("<table><tr><th>bucket</th><th>clips</th></tr>" + "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in sorted(buckets.items())) + "</table>"
            if buckets else "<p class='muted'>no bucketed clips</p>"),
        f"<h2 id='errors'>Errors ({len(errors)})</h2>" + (
            "<table><tr><th>source</th><th>stage</th><th>kind</th><th>message</th></tr>" + err_rows + "</table>"
            if errors else "<p class='muted'>no errors</p>"),
    ]
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>soraprep report</title>"
            f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>")


def write_report(out: str | Path) -> Path:
    out = Path(out)
    path = out / "report.html"
    from soraprep.manifest import temp_path

    tmp = temp_path(path)
    tmp.write_text(build_report(out), encoding="utf-8", errors="backslashreplace")  # names that are not UTF-8
    tmp.replace(path)
    return path
