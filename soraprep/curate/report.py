"""The curation report: one self-contained HTML file (inline CSS, SVG charts, base64 thumbnails).

Built from the run's manifest (``OUT/manifest.parquet`` or the ``OUT/manifest/`` dataset, streamed:
see :mod:`.report_stats`) + ``OUT/run.json`` for stage times and ``OUT/thumbs/``, so ``soraprep report OUT``
can rebuild it at any time, e.g. after re-thresholding; OUT may be a store URL.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from soraprep.curate.cutting import thumb_path
from soraprep.curate.report_stats import (  # noqa: F401 - RunSummary, row_error, summarize: the public API
    HIST_BINS,
    MAX_ERROR_ROWS,
    MAX_THUMBS,
    SCORE_COLUMNS,
    Aggregates,
    RunSummary,
    _axis,
    bin_counts,
    collect,
    row_error,
    summarize,
)

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


def _number(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def svg_histogram(values: list[float], title: str, lo: float | None = None, hi: float | None = None,
                  bins: int = HIST_BINS, width: int = 300, height: int = 150) -> str:
    """A small SVG histogram with dashed lines at the filter's min/max."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return svg_histogram_counts(None, None, title, lo, hi, width=width, height=height)
    a, b = _axis(float(v.min()), float(v.max()), lo, hi)
    return svg_histogram_counts(bin_counts(v, a, b, bins), (a, b), title, lo, hi, width=width, height=height)


def svg_histogram_counts(counts: np.ndarray | None, axis: tuple[float, float] | None, title: str,
                         lo: float | None = None, hi: float | None = None, width: int = 300, height: int = 150) -> str:
    """The histogram drawn from fixed-bin ``counts`` over ``axis`` = (a, b) (None: "no values")."""
    pad_l, pad_b, pad_t = 34, 20, 18
    w, h = width - pad_l - 6, height - pad_b - pad_t
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<text x="{pad_l}" y="12" font-size="12" font-weight="bold">{html.escape(title)}</text>']
    if counts is None or axis is None:
        parts.append(f'<text x="{pad_l}" y="{pad_t + h / 2}" font-size="11" fill="#888">no values</text></svg>')
        return "".join(parts)
    a, b = axis
    bins = len(counts)
    half = b / 2 - a / 2
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


def _thumb_html(read_thumb, row: dict[str, Any], kept: bool) -> str:
    data = read_thumb(str(row.get("clip_id")))
    img = (f'<img alt="thumbnail" src="data:image/jpeg;base64,{base64.b64encode(data).decode()}">'
           if data is not None else "<div class='muted'>(no thumbnail)</div>")
    why = "kept" if kept else html.escape(row.get("filter_reason") or "")
    span = f"{row.get('start_s') or 0:.2f}–{row.get('end_s') or 0:.2f} s"
    return (f'<div class="thumb {"kept" if kept else "dropped"}">{img}<div><b>{html.escape(str(row.get("clip_id")))}'
            f'</b><br>{span} · {row.get("num_frames")} f<br>{why}</div></div>')


def _fmt_hours(h: float) -> str:
    return f"{h:.2f}" if h < 1e6 else f"{h:.3g}"


def _thumb_reader(store):
    """clip_id -> the thumbnail's bytes (None when there is none), from a local OUT or a store."""
    def read(clip_id: str) -> bytes | None:
        try:
            if not store.remote:
                p = thumb_path(store.local_path(), clip_id)
                return p.read_bytes() if p.exists() else None
            rel = thumb_path(Path("/out"), clip_id).relative_to(Path("/out").resolve()).as_posix()
            return store.read_bytes(rel)  # one GET; a missing thumbnail raises FileNotFoundError
        except (OSError, ValueError):
            return None

    return read


def _store(out, storage_options: dict[str, Any] | None):
    from soraprep.storage.store import Store

    return out if isinstance(out, Store) else Store(out, storage_options)


def build_report(out, storage_options: dict[str, Any] | None = None) -> str:
    """The report of the run in ``out`` (a folder, a store URL or a ``Store``), from its manifest streamed
    in batches."""
    from soraprep.manifest_dataset import locate

    store = _store(out, storage_options)
    source = locate(store.url(), store.storage_options)
    meta = source.metadata()
    try:
        run = json.loads(store.read_text("run.json")) if store.exists("run.json") else {}
    except (OSError, ValueError):
        run = {}
    run = run if isinstance(run, dict) else {}
    thresholds = _thresholds(meta.get("soraprep.recipe"))
    agg = collect(source, thresholds)
    s = agg.summary()
    where = store.url() if store.remote else str(Path(store.root).resolve())
    funnel = [("rows in the manifest", s.rows), ("input videos / spans", s.videos),
              *((f"failed at {stage}", n) for stage, n in s.errors_by_stage),
              ("failed (all stages)", s.errors),
              ("clips scored", s.clips), ("dropped by filters", s.dropped), ("kept", s.kept),
              ("kept clips cut into files", s.written), ("kept clips with a bucket", s.bucketed)]
    cards = "".join(f'<div class="card"><b>{v}</b>{html.escape(k)}</div>' for k, v in [
        ("videos", s.videos), ("clips", s.clips), ("kept", s.kept), ("dropped", s.dropped),
        ("errors", s.errors), ("hours scanned", _fmt_hours(s.hours)), ("hours kept", _fmt_hours(s.kept_hours))])
    hists = "".join(
        f'<div class="hist">{svg_histogram_counts(h.counts, h.axis, c, thresholds.get(c, {}).get("min"), thresholds.get(c, {}).get("max"))}</div>'
        for c in agg.histogram_columns() if (h := agg.hists[c]) is not None)
    stage_times = sorted(((str(k), t) for k, v in (run.get("stage_time_s") or {}).items()
                          if (t := _number(v)) is not None and math.isfinite(t)), key=lambda kv: -kv[1])
    reasons, buckets, read_thumb = agg.reasons, agg.buckets, _thumb_reader(store)
    err_rows = "".join(
        f"<tr><td>{html.escape(src)}</td><td>{html.escape(stage)}</td>"
        f"<td>{html.escape(kind)}</td><td>{html.escape(message)}</td></tr>"
        for src, stage, kind, message in agg.error_rows)
    more_errors = (f"<p class='muted'>the first {len(agg.error_rows)} of {s.errors} error rows; every one is counted "
                   "by kind above and listed in the manifest</p>" if s.errors > len(agg.error_rows) else "")
    sections = [
        f"<h1>soraprep curation report</h1><p class='muted'>{html.escape(where)} · recipe "
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
        f"<h2 id='kept'>Kept clips <span class='muted'>({s.kept}, first {min(s.kept, MAX_THUMBS)})</span></h2>"
        f"<div class='grid'>{''.join(_thumb_html(read_thumb, r, True) for r in agg.thumbs_kept)}</div>",
        f"<h2 id='dropped'>Dropped clips <span class='muted'>({s.dropped}, first {min(s.dropped, MAX_THUMBS)})</span></h2>"
        f"<div class='grid'>{''.join(_thumb_html(read_thumb, r, False) for r in agg.thumbs_dropped)}</div>",
        "<h2 id='timing'>Time per stage <span class='muted'>(summed over workers)</span></h2>" + svg_bars(stage_times),
        "<h2 id='buckets'>Buckets</h2>" + ("<table><tr><th>bucket</th><th>clips</th></tr>" + "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in sorted(buckets.items())) + "</table>"
            if buckets else "<p class='muted'>no bucketed clips</p>"),
        f"<h2 id='errors'>Errors ({s.errors})</h2>" + (
            "<table><tr><th>source</th><th>stage</th><th>kind</th><th>message</th></tr>" + err_rows + "</table>"
            + more_errors if s.errors else "<p class='muted'>no errors</p>"),
    ]
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>soraprep report</title>"
            f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>")


def write_report(out, storage_options: dict[str, Any] | None = None) -> Path | str:
    """Write ``OUT/report.html`` (atomically; OUT may be a store URL or a ``Store``). Returns its path
    (URL when remote)."""
    store = _store(out, storage_options)
    text = build_report(store)
    url = store.write_bytes("report.html", text.encode("utf-8", "backslashreplace"))  # names that are not UTF-8
    return url if store.remote else Path(store.root) / "report.html"
