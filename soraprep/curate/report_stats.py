"""What the report and the console summary show, accumulated over a manifest streamed in Arrow batches.

Memory stays bounded whatever the run's size: counts, sums, a Counter per small domain (filter rules,
buckets, error kinds), the first ``MAX_THUMBS`` kept and dropped clips, the first ``MAX_ERROR_ROWS`` error
rows, distinct videos as 64-bit hashes, and one fixed-bin histogram per score column. The bins need the
column's range first, so :func:`collect` reads the (few) numeric columns twice: pass 1 finds each column's
finite min/max among clips, pass 2 counts values into ``HIST_BINS`` bins over that range widened to the
recipe's thresholds (``_axis``) — the same bins a histogram over every value in memory would use.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SCORE_COLUMNS = ("duration_s", "motion_score", "sharpness", "brightness", "black_ratio", "static_ratio", "fps",
                 "short_side", "aspect_ratio")
MAX_THUMBS = 48        # kept and dropped clips shown with thumbnails: the first ones in manifest order
MAX_ERROR_ROWS = 500   # error rows listed one by one (every error is counted by kind)
HIST_BINS = 30
BATCH_ROWS = 65_536
_THUMB_COLUMNS = ("clip_id", "start_s", "end_s", "num_frames", "filter_reason")
_PASS1_COLUMNS = {"error", "keep", "video_id", "source", "clip_id", "cut_mode", "bucket", "filter_reason",
                  "provenance", *_THUMB_COLUMNS}


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


def bin_counts(v: np.ndarray, a: float, b: float, bins: int = HIST_BINS) -> np.ndarray:
    """Counts of the finite values ``v`` in ``bins`` equal bins over ``[a, b]`` (ends clamped)."""
    half = b / 2 - a / 2  # halves: b - a overflows for values near the float limit
    # own binning (np.histogram refuses ranges a float cannot split into `bins` steps, e.g. 1.6 vs 1.5999999999999996)
    idx = np.clip(np.floor((v / 2 - a / 2) / half * bins), 0, bins - 1).astype(int)
    return np.bincount(idx, minlength=bins)


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _floats(col) -> np.ndarray:
    """A numeric Arrow column as float64 numpy, nulls as NaN."""
    return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=float)


def _column(t: pa.Table, name: str, typ: pa.DataType = pa.string()):
    return t.column(name) if name in t.column_names else pa.nulls(len(t), typ)


@dataclass
class _Hist:
    present: bool = False       # some clip has a value (NaN included): the histogram is drawn
    lo: float = math.inf        # finite min / max among clips
    hi: float = -math.inf
    counts: np.ndarray | None = None
    axis: tuple[float, float] | None = None


@dataclass
class Aggregates:
    """Streamed aggregates of one manifest: :meth:`add` every batch (pass 1), then :meth:`add_histogram`
    every batch again (pass 2, only the histogram columns)."""

    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    rows: int = 0
    clips: int = 0
    kept: int = 0
    errors: int = 0
    written: int = 0
    bucketed: int = 0
    hours_s: float = 0.0
    kept_hours_s: float = 0.0
    errors_by_stage: Counter = field(default_factory=Counter)
    kinds: dict[tuple[str, str], list] = field(default_factory=dict)  # -> [count, first source, first message]
    error_rows: list[tuple[str, str, str, str]] = field(default_factory=list)  # (source, stage, kind, message)
    reasons: Counter = field(default_factory=Counter)
    buckets: Counter = field(default_factory=Counter)
    provenance_columns: dict[str, None] = field(default_factory=dict)
    thumbs_kept: list[dict[str, Any]] = field(default_factory=list)
    thumbs_dropped: list[dict[str, Any]] = field(default_factory=list)
    hists: dict[str, _Hist] = field(default_factory=dict)
    _video_hashes: list[np.ndarray] = field(default_factory=list)
    _video_count: int = 0

    # -- pass 1
    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        t = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        n = len(t)
        if not n:
            return
        err = _column(t, "error").is_valid().to_numpy(zero_copy_only=False)
        clip = ~err
        keep = pc.fill_null(_column(t, "keep", pa.bool_()), False).to_numpy(zero_copy_only=False).astype(bool)
        kept, dropped = clip & keep, clip & ~keep
        self.rows += n
        self.errors += int(err.sum())
        self.clips += int(clip.sum())
        self.kept += int(kept.sum())
        self._videos(t)
        self._errors(t, np.nonzero(err)[0])
        cut = _column(t, "cut_mode")
        self.written += int((kept & _truthy(cut, exclude="none")).sum())
        bucket = _column(t, "bucket")
        self.bucketed += int((kept & _truthy(bucket)).sum())
        d = _floats(_column(t, "duration_s", pa.float64()))
        fin = np.isfinite(d)
        self.hours_s += float(d[clip & fin].sum())
        self.kept_hours_s += float(d[kept & fin].sum())
        for value, count in _value_counts(_column(t, "filter_reason").filter(pa.array(dropped))):
            for part in str(value or "").split("; "):
                if part:
                    self.reasons[part.split("=")[0].split(" ")[0]] += count
        for value, count in _value_counts(bucket.filter(pa.array(kept & _truthy(bucket)))):
            self.buckets[value] += count
        for value in pc.unique(_column(t, "provenance").filter(pa.array(clip))).to_pylist():
            for name in _provenance_columns(value):
                self.provenance_columns.setdefault(name, None)
        self._thumbs(t, kept, self.thumbs_kept)
        self._thumbs(t, dropped, self.thumbs_dropped)
        self._ranges(t, clip)

    def _videos(self, t: pa.Table) -> None:
        vid = _column(t, "video_id")
        key = pc.if_else(pa.array(_truthy(vid)), vid.cast(pa.string()), _column(t, "source").cast(pa.string()))
        self._video_hashes.append(np.array([hash(v) for v in pc.unique(key).to_pylist()], dtype=np.int64))
        if sum(len(h) for h in self._video_hashes) > 1_000_000:  # compact: distinct hashes only
            self._video_hashes = [np.unique(np.concatenate(self._video_hashes))]

    def _errors(self, t: pa.Table, idx: np.ndarray) -> None:
        if not len(idx):
            return
        take = pa.array(idx)
        errs = _column(t, "error").take(take).to_pylist()
        sources = _column(t, "source").take(take).to_pylist()
        clip_ids = _column(t, "clip_id").take(take).to_pylist()
        for err, src, cid in zip(errs, sources, clip_ids):
            e = row_error({"error": err})
            self.errors_by_stage[e["stage"]] += 1
            entry = self.kinds.setdefault((e["stage"], e["kind"]), [0, str(src or cid or ""), e["message"]])
            entry[0] += 1
            if len(self.error_rows) < MAX_ERROR_ROWS:
                self.error_rows.append((str(src), e["stage"], e["kind"], e["message"][:300]))

    def _thumbs(self, t: pa.Table, mask: np.ndarray, into: list[dict[str, Any]]) -> None:
        need = MAX_THUMBS - len(into)
        if need <= 0 or not mask.any():
            return
        idx = pa.array(np.nonzero(mask)[0][:need])
        cols = {c: _column(t, c).take(idx).to_pylist() for c in _THUMB_COLUMNS}
        into += [{c: cols[c][i] for c in _THUMB_COLUMNS} for i in range(len(idx))]

    def _ranges(self, t: pa.Table, clip: np.ndarray) -> None:
        cols = {f.name: _floats(t.column(f.name))[clip] for f in t.schema if _numeric(f.type)}
        if "height" in cols and "width" in cols:
            cols["short_side"] = np.fmin(cols["height"], cols["width"])
            cols["short_side"][np.isnan(cols["height"]) | np.isnan(cols["width"])] = np.nan
        for name, v in cols.items():
            h = self.hists.setdefault(name, _Hist())
            valid = ~np.isnan(v)
            if name != "short_side":
                col = t.column(name).filter(pa.array(clip))
                valid = ~col.is_null().to_numpy(zero_copy_only=False)
            h.present |= bool(valid.any())
            fin = v[np.isfinite(v)]
            if fin.size:
                h.lo, h.hi = min(h.lo, float(fin.min())), max(h.hi, float(fin.max()))

    # -- between the passes
    def histogram_columns(self) -> list[str]:
        """Built-in score columns, every column a scorer wrote provenance for, every thresholded column:
        those with a number on some clip, in that order."""
        columns = list(SCORE_COLUMNS)
        for c in list(self.provenance_columns) + list(self.thresholds):
            if c not in columns:
                columns.append(c)
        return [c for c in columns if c in self.hists and self.hists[c].present]

    def numeric_columns_needed(self) -> list[str]:
        cols = set(self.histogram_columns()) | {"error"}
        if "short_side" in cols:
            cols |= {"height", "width"}
        return sorted(cols - {"short_side"})

    # -- pass 2
    def add_histogram(self, batch: pa.RecordBatch | pa.Table) -> None:
        t = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        if not len(t):
            return
        clip = ~_column(t, "error").is_valid().to_numpy(zero_copy_only=False)
        for name in self.histogram_columns():
            h = self.hists[name]
            if h.lo > h.hi:  # no finite value: drawn as "no values"
                continue
            if name == "short_side":
                hh, ww = _floats(t.column("height"))[clip], _floats(t.column("width"))[clip]
                v = np.fmin(hh, ww)
            else:
                v = _floats(t.column(name))[clip]
            v = v[np.isfinite(v)]
            if h.axis is None:
                th = self.thresholds.get(name, {})
                h.axis = _axis(h.lo, h.hi, th.get("min"), th.get("max"))
                h.counts = np.zeros(HIST_BINS, dtype=np.int64)
            if v.size:
                h.counts += bin_counts(v, *h.axis)

    # -- results
    @property
    def videos(self) -> int:
        if not self._video_hashes:
            return 0
        return int(np.unique(np.concatenate(self._video_hashes)).size)

    def summary(self) -> RunSummary:
        from soraprep.curate.recipe import PIPELINE

        order = {name: float(i) for i, name in enumerate(PIPELINE)}  # scorers sit between score and filter
        stages = sorted(self.errors_by_stage, key=lambda st: (order.get(st, order["score"] + 0.5), st))
        return RunSummary(
            rows=self.rows, videos=self.videos, clips=self.clips, kept=self.kept, dropped=self.clips - self.kept,
            errors=self.errors, errors_by_stage=tuple((st, self.errors_by_stage[st]) for st in stages),
            errors_by_kind=tuple(sorted(((st, k, n, src, msg) for (st, k), (n, src, msg) in self.kinds.items()),
                                        key=lambda t: (-t[2], t[0], t[1]))),
            written=self.written, bucketed=self.bucketed, hours=self.hours_s / 3600,
            kept_hours=self.kept_hours_s / 3600)


def _truthy(col, exclude: str | None = None) -> np.ndarray:
    """Rows whose text value is set and not empty (nor ``exclude``)."""
    col = col.cast(pa.string()) if not pa.types.is_string(col.type) else col
    ok = pc.and_(pc.is_valid(col), pc.not_equal(pc.fill_null(col, ""), ""))
    if exclude is not None:
        ok = pc.and_(ok, pc.not_equal(pc.fill_null(col, ""), exclude))
    return ok.to_numpy(zero_copy_only=False).astype(bool)


def _value_counts(col) -> list[tuple[Any, int]]:
    if not len(col):
        return []
    vc = pc.value_counts(col)
    return list(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()))


def _provenance_columns(text: Any) -> list[str]:
    try:
        prov = json.loads(text or "{}")
    except (TypeError, ValueError):
        return []
    return list(prov) if isinstance(prov, dict) else []


def collect(source, thresholds: dict[str, dict[str, float]] | None = None, *, histograms: bool = True,
            batch_rows: int = BATCH_ROWS) -> Aggregates:
    """The aggregates of ``source`` (a :class:`~soraprep.manifest_dataset.ManifestSource`, a path or URL of
    any manifest form, or a list of row dicts), in two streamed passes (one without ``histograms``)."""
    from soraprep.manifest_dataset import ManifestSource, locate

    agg = Aggregates(thresholds=dict(thresholds or {}))
    if isinstance(source, list):
        from soraprep.manifest import rows_to_table

        table = rows_to_table(source)
        agg.add(table)
        if histograms:
            agg.add_histogram(table)
        return agg
    src = source if isinstance(source, ManifestSource) else locate(source)
    schema = src.schema()
    columns = [f.name for f in schema if _numeric(f.type) or f.name in _PASS1_COLUMNS]
    for batch in src.batches(columns=columns, batch_rows=batch_rows):
        agg.add(batch)
    if histograms and agg.histogram_columns():
        for batch in src.batches(columns=agg.numeric_columns_needed(), batch_rows=batch_rows):
            agg.add_histogram(batch)
    return agg


def summarize(source) -> RunSummary:
    """The counts of a manifest (rows as dicts, or any manifest path/URL, streamed) — what the console
    summary and the report's cards show."""
    return collect(source, histograms=False).summary()
