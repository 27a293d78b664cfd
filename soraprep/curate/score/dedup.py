"""Near-duplicate clips: a perceptual hash per clip (``phash`` stage) and one global pass (``dedup``).

``phash`` is a model-free scorer stage (``phase = "score"``, numpy/OpenCV only): the 64-bit DCT
perceptual hash of the clip's middle sampled frame (``row["_samples"]`` from the one decode pass),
written as 16 hex digits in the ``phash`` column. Re-encoding, rescaling and mild colour changes move a
pHash by a few bits; different pictures differ in about 32 of 64.

Duplicates can only be found across all clips (clips of different videos), so ``dedup`` is a *global*
stage (``phase = "global"``): the pipeline runs it once over every row after all units are committed,
in manifest order, and again in ``--rethreshold`` (before the filter), so it is deterministic and the
resume guarantee holds. It writes

    dup_of        clip_id of the first clip in manifest order whose hash is within ``max_hamming`` bits
                  (null when none; rows with an error or without a hash are skipped)
    is_duplicate  1 when ``dup_of`` is set, else 0

and the pipeline re-applies the recipe's filter, so ``filter: {is_duplicate: {max: 0}}`` keeps the first
clip of each group and drops the others. Dedup never deletes clip files.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import pyarrow as pa

from soraprep.curate.score.ocr import decode_sample
from soraprep.stages import Resources, Row, error_dict, failed, register

VERSION = "1"


def phash(bgr_or_gray: np.ndarray) -> int:
    """64-bit DCT perceptual hash: 32x32 gray -> 2-D DCT -> top-left 8x8 -> bits above their median."""
    g = bgr_or_gray if bgr_or_gray.ndim == 2 else cv2.cvtColor(bgr_or_gray, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(g, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8]                          # (8, 8) lowest frequencies, DC included
    bits = (low > np.median(low)).reshape(-1)             # (64,) row-major
    return int(np.packbits(bits).view(">u8")[0])


def to_hex(h: int) -> str:
    return f"{h:016x}"


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def first_duplicates(hashes: list[int | None], max_hamming: int) -> list[int | None]:
    """For each hash, the index of the first earlier hash within ``max_hamming`` bits (None if none).

    Pigeonhole index: split the 64 bits into ``max_hamming + 1`` bands; two hashes within ``max_hamming``
    bits agree exactly on at least one band, so only hashes sharing a band value are compared.
    """
    bands = max_hamming + 1
    edges = [round(i * 64 / bands) for i in range(bands + 1)]
    masks = [((1 << (hi - lo)) - 1, lo) for lo, hi in zip(edges, edges[1:])]
    tables: list[dict[int, list[int]]] = [defaultdict(list) for _ in masks]
    out: list[int | None] = []
    for i, h in enumerate(hashes):
        if h is None:
            out.append(None)
            continue
        keys = [(h >> lo) & m for m, lo in masks]
        cands = sorted({j for t, k in zip(tables, keys) for j in t.get(k, ())})
        out.append(next((j for j in cands if hamming(h, hashes[j]) <= max_hamming), None))
        for t, k in zip(tables, keys):
            t[k].append(i)
    return out


@register("phash")
@dataclass
class PhashStage:
    """Perceptual hash of each clip's middle sampled frame -> ``phash`` (16 hex digits)."""

    name = "phash"
    columns = ("phash",)
    phase = "score"
    samples_every_s = 1.0
    resources = Resources(cpus=0.1)
    batch_size = 256

    def setup(self) -> None:
        pass

    def __call__(self, batch: list[Row]) -> list[Row]:
        prov = {"by": f"soraprep.phash@{VERSION}", "params": {"frame": "middle sample", "bits": 64}}
        for row in batch:
            if failed(row):
                continue
            samples = row.get("_samples")
            if not samples:
                row["error"] = error_dict(self.name, "no_samples", "no sampled frames on the row: the phash "
                                          "stage must run inside a curation recipe")
                continue
            try:
                row["phash"] = to_hex(phash(decode_sample(samples[len(samples) // 2][1])))
            except ValueError as exc:
                row["error"] = error_dict(self.name, "bad_sample", str(exc))
                continue
            p = json.loads(row.get("provenance") or "{}")
            p["phash"] = prov
            row["provenance"] = json.dumps(p, sort_keys=True)
        return batch


@register("dedup")
@dataclass
class DedupStage:
    """Global: marks each clip whose ``phash`` is within ``max_hamming`` bits of an earlier clip's."""

    max_hamming: int = 6        # bits of 64; a re-encode moves 0-4, unrelated pictures ~32
    name = "dedup"
    columns = ("dup_of", "is_duplicate")
    phase = "global"            # run once over all rows (pipeline), never per unit
    requires = ("phash",)       # the recipe must also have the phash stage
    resources = Resources(cpus=0.1)
    batch_size = 1_000_000

    def __post_init__(self) -> None:
        if not isinstance(self.max_hamming, int) or not 0 <= self.max_hamming <= 32:
            raise ValueError(f"dedup.max_hamming is a number of differing bits in 0..32 (default 6), "
                             f"got {self.max_hamming!r}")

    def setup(self) -> None:
        pass

    #: the columns ``results`` reads: the pipeline projects just these from every unit (no row dicts)
    reads = ("clip_id", "phash", "error")

    def results(self, columns: dict) -> pa.Table:
        """``dup_of`` and ``is_duplicate`` for every row, in manifest order, from the ``reads`` columns
        (Arrow arrays; ``error`` counts as set where it is valid). Null for rows skipped (an error or no hash)."""
        failed_rows = columns["error"].is_valid().to_pylist()
        hashes = [None if bad or not h else int(h, 16) for h, bad in zip(columns["phash"].to_pylist(), failed_rows)]
        first = pa.array(first_duplicates(hashes, self.max_hamming), type=pa.int64())
        dup_of = columns["clip_id"].take(first).cast(pa.string())
        is_dup = [None if h is None else int(j is not None) for h, j in zip(hashes, first.to_pylist())]
        return pa.table({"dup_of": dup_of, "is_duplicate": pa.array(is_dup, type=pa.int64())})

    def apply(self, rows: list[Row], results: pa.Table) -> None:
        """Set this stage's columns from ``results`` (one row each) on ``rows``; provenance on hashed rows."""
        prov = {"by": f"soraprep.dedup@{VERSION}", "params": asdict(self)}
        for r, dup, flag in zip(rows, results.column("dup_of").to_pylist(), results.column("is_duplicate").to_pylist()):
            r["dup_of"], r["is_duplicate"] = dup, flag
            if flag is None:
                continue
            p = json.loads(r.get("provenance") or "{}")
            p["is_duplicate"] = p["dup_of"] = prov
            r["provenance"] = json.dumps(p, sort_keys=True)

    def __call__(self, rows: list[Row]) -> list[Row]:
        """All rows, in manifest order (``--rethreshold``'s in-memory path; the same as results + apply)."""
        columns = {"clip_id": pa.array([r.get("clip_id") for r in rows], type=pa.string()),
                   "phash": pa.array([r.get("phash") or None for r in rows], type=pa.string()),
                   "error": pa.array([True if failed(r) else None for r in rows], type=pa.bool_())}
        self.apply(rows, self.results(columns))
        return rows
