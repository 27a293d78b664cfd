"""Driver memory assembling a 10 M-row manifest from unit commits (issue 11: the driver never holds all rows).

``generate`` writes synthetic unit commits the way the runners do (``OUT/.soraprep/units/<key>.parquet``,
one Parquet file per video with the manifest's schema and ``soraprep.unit_timings`` metadata), vectorised
with numpy/pyarrow: by default 100,000 units x 100 clips = 10 M rows with realistic columns (ids, paths,
spans, geometry, scores, a 64-bit ``phash``, a provenance JSON, bucket labels, filter reasons, and an
``error`` struct on 1 % of the rows, whole failed units among them).

``measure`` runs in a fresh process and reports its own peak RSS (``getrusage`` ``ru_maxrss``) after
``assemble`` (footer scan, parts, index; builtin ``map``, so the part writers run inside the driver too —
the worst case for its memory) and the report aggregates (``report_stats.collect``: two streamed passes),
optionally with the single-file copies (``manifest.parquet`` + ``manifest.jsonl``) streamed from the parts.

    python benchmarks/bench_manifest_scale.py generate --out /tmp/m10m              # ~10 M rows
    python benchmarks/bench_manifest_scale.py measure --out /tmp/m10m               # dataset + index + report
    python benchmarks/bench_manifest_scale.py measure --out /tmp/m10m --single-file # + manifest.parquet/.jsonl
    python benchmarks/bench_manifest_scale.py all --out /tmp/m10m                   # all three, fresh processes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ERROR_TYPE = pa.struct([("stage", pa.string()), ("kind", pa.string()), ("message", pa.string())])
PROVENANCE = json.dumps({c: {"by": "soraprep.score@1", "params": {"samples_every_s": 1.0, "short_side": 144}}
                         for c in ("black_ratio", "brightness", "motion_score", "sharpness", "static_ratio")} |
                        {"phash": {"by": "soraprep.phash@1", "params": {"bits": 64, "frame": "middle sample"}}},
                        sort_keys=True)


def _block(u0: int, units: int, clips: int, seed: int) -> pa.Table:
    """Rows of units ``u0 .. u0+units-1`` (``clips`` each), in manifest order, as one table."""
    rng = np.random.default_rng(seed + u0)
    n = units * clips
    u = np.repeat(np.arange(u0, u0 + units), clips)
    i = np.tile(np.arange(clips), units)
    vid = np.char.add("v", np.char.zfill(u.astype(str), 7))
    clip_id = np.char.add(np.char.add(vid, "-"), np.char.zfill(i.astype(str), 4))
    failed_unit = (u % 211) == 7                       # a unit that failed as a whole (one error row in reality)
    err = failed_unit | (rng.random(n) < 0.005)        # ~1 % of rows carry an error
    fps = np.where(u % 3 == 0, 30000 / 1001, 25.0)
    start = i * 4.0
    dur = rng.uniform(2.0, 4.0, n)
    h, w = np.where(u % 2 == 0, 720, 1080), np.where(u % 2 == 0, 1280, 1920)
    motion = rng.gamma(2.0, 0.5, n)
    sharp = rng.uniform(0, 400, n)
    keep = ~err & (motion >= 0.05) & (sharp >= 10)
    reason = np.where(err, "error", np.where(motion < 0.05, "motion_score<0.05", np.where(sharp < 10, "sharpness<10", "")))
    phash = [f"{x:016x}" for x in rng.integers(0, 2**63 - 1, n, dtype=np.int64)]
    kinds = np.array(["not_a_video", "decode_error", "bad_sample", "timeout"])[rng.integers(0, 4, n)]
    frames = np.round(dur * fps).astype(np.int64)
    error = pa.StructArray.from_arrays(
        [pa.array(np.where(failed_unit, "probe", "analyze")), pa.array(kinds),
         pa.array(np.char.add("synthetic failure in ", clip_id))], fields=list(ERROR_TYPE), mask=pa.array(~err))
    bucket = np.where(keep, np.char.add(np.char.add(np.where(u % 2 == 0, "720x1280x", "1080x1920x"),
                                                   np.minimum(frames, 102).astype(str)), ""), None)
    cols = {
        "clip_id": pa.array(clip_id), "video_id": pa.array(vid),
        "source": pa.array(np.char.add(np.char.add("s3://bucket/videos/", vid), ".mp4")),
        "path": pa.array(np.char.add(np.char.add(np.char.add("clips/", vid), np.char.add("/", clip_id)), ".mp4")),
        "text": pa.nulls(n, pa.string()), "num_frames": pa.array(frames),
        "height": pa.array(h.astype(np.int64)), "width": pa.array(w.astype(np.int64)),
        "aspect_ratio": pa.array(h / w), "resolution": pa.array((h * w).astype(np.int64)), "fps": pa.array(fps),
        "fps_rational": pa.array(np.where(u % 3 == 0, "30000/1001", "25/1")),
        "start_s": pa.array(start), "end_s": pa.array(start + dur),
        "start_frame": pa.array(np.round(start * fps).astype(np.int64)),
        "end_frame": pa.array(np.round((start + dur) * fps).astype(np.int64)),
        "duration_s": pa.array(dur), "clip_index": pa.array(i.astype(np.int64)), "codec": pa.array(np.full(n, "h264")),
        "cut_mode": pa.array(np.where(keep, "copy", "none")), "keep": pa.array(keep),
        "filter_reason": pa.array(np.where(reason == "", None, reason)),
        "bucket": pa.array(bucket, type=pa.string()),
        "bucket_height": pa.array(np.where(keep, np.minimum(h, 720), 0), mask=~keep, type=pa.int64()),
        "bucket_width": pa.array(np.where(keep, np.minimum(w, 1280), 0), mask=~keep, type=pa.int64()),
        "bucket_frames": pa.array(np.minimum(frames, 102), mask=~keep, type=pa.int64()),
        "damaged_frames": pa.array(np.zeros(n, dtype=np.int64)),
        "provenance": pa.array(np.full(n, PROVENANCE)), "error": error,
        "black_ratio": pa.array(rng.beta(0.3, 5, n)), "brightness": pa.array(rng.uniform(20, 220, n)),
        "motion_score": pa.array(motion), "phash": pa.array(phash), "sharpness": pa.array(sharp),
        "static_ratio": pa.array(rng.beta(0.5, 3, n)),
    }
    return pa.table(cols)


def _write_block(args) -> int:
    out, u0, units, clips, seed = args
    table = _block(u0, units, clips, seed)
    folder = Path(out) / ".soraprep" / "units"
    timings = json.dumps({"probe": 0.01, "analyze": 2.5, "split": 0.1, "score": 0.4, "filter": 0.001,
                          "cut": 0.2, "bucket": 0.001})
    meta = {b"soraprep.schema_version": b"1", b"soraprep.unit_timings": timings.encode(),
            b"soraprep.recipe_hash": b"synthetic"}
    for k in range(units):
        unit = table.slice(k * clips, clips)
        pq.write_table(unit.replace_schema_metadata(meta), folder / f"{unit_key_name(u0 + k)}.parquet")
    return units * clips


def unit_key_name(u: int) -> str:
    return f"v{u:07d}-{(u * 2654435761) % 2**32:08x}"


def generate(out: Path, units: int, clips: int, seed: int = 0, procs: int = 2, block: int = 1000) -> None:
    (out / ".soraprep" / "units").mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    jobs = [(str(out), u0, min(block, units - u0), clips, seed) for u0 in range(0, units, block)]
    with Pool(procs) as pool:
        rows = sum(pool.imap_unordered(_write_block, jobs))
    (out / "keys.json").write_text(json.dumps([unit_key_name(u) for u in range(units)]))
    print(json.dumps({"generated_rows": rows, "units": units, "seconds": round(time.perf_counter() - t, 1)}))


def _recipe(dedup: int | None):
    from soraprep.curate.recipe import load_recipe, validate

    if dedup is None:
        return load_recipe()
    import yaml

    data = yaml.safe_load(load_recipe().to_yaml())
    data.pop("version", None)
    data["phash"], data["dedup"] = {}, {"max_hamming": dedup}
    data["filter"]["is_duplicate"] = {"max": 0}
    return validate(data, "bench")


def measure(out: Path, single_file: bool, rows_per_part: int, dedup: int | None = None,
            limit_units: int | None = None) -> dict:
    from soraprep.curate.assemble import assemble, manifest_metadata
    from soraprep.curate.report_stats import collect
    from soraprep.storage.store import Store

    keys = json.loads((out / "keys.json").read_text())[:limit_units]
    rec = _recipe(dedup)
    result = {"units": len(keys), "single_file": single_file, "dedup_max_hamming": dedup}
    t = time.perf_counter()
    asm = assemble(Store(out), keys, rec, metadata=manifest_metadata(rec), rows_per_part=rows_per_part,
                   single_file=single_file)
    result["assemble_s"] = round(time.perf_counter() - t, 1)
    result["rss_after_assemble_mib"] = _peak_mib()
    t = time.perf_counter()
    agg = collect(asm.source, {"motion_score": {"min": 0.05}, "sharpness": {"min": 10.0}})
    s = agg.summary()
    result["report_aggregates_s"] = round(time.perf_counter() - t, 1)
    result.update(rows=asm.index["totals"]["rows"], kept=s.kept, errors=s.errors, videos=s.videos,
                  parts=asm.index["totals"]["parts"], histograms=len(agg.histogram_columns()),
                  dataset_mib=round(sum(p["bytes"] for p in asm.index["parts"]) / 2**20),
                  peak_rss_mib=_peak_mib())
    if single_file:
        result["single_files_mib"] = {n: round(os.path.getsize(out / n) / 2**20)
                                      for n in ("manifest.parquet", "manifest.jsonl")}
    return result


def _peak_mib() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["generate", "measure", "all"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--units", type=int, default=100_000)
    ap.add_argument("--clips", type=int, default=100)
    ap.add_argument("--rows-per-part", type=int, default=500_000)
    ap.add_argument("--single-file", action="store_true")
    ap.add_argument("--limit-units", type=int, default=None, help="assemble only the first N units")
    ap.add_argument("--dedup", type=int, default=None, metavar="MAX_HAMMING",
                    help="add the phash + dedup global stages (projection path); dedup's own candidate search is "
                         "quadratic in clips sharing a hash band, so use 0 (exact hashes) for millions of rows")
    args = ap.parse_args()
    if args.cmd in ("generate", "all") and not (args.out / "keys.json").exists():
        generate(args.out, args.units, args.clips)
    if args.cmd == "measure":
        print(json.dumps(measure(args.out, args.single_file, args.rows_per_part, args.dedup, args.limit_units)))
    if args.cmd == "all":  # each measurement in a fresh process: ru_maxrss is the process's own peak
        for extra in ([], ["--single-file"]):
            subprocess.run([sys.executable, __file__, "measure", "--out", str(args.out),
                            "--rows-per-part", str(args.rows_per_part), *extra], check=True)


if __name__ == "__main__":
    main()
