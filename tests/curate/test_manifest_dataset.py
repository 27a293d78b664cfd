"""The streaming manifest (issue 11, part 3): parts + index assembled from unit commits, global stages over a
column projection, streamed single-file copies, readers of every manifest form, reports from aggregates.

Ground truth is the in-memory path the pipeline used before: every unit's rows as dicts, ``apply_global``
over all of them, one ``write_manifest``. Units are synthetic commits written the way the runners write
them (``write_manifest`` per unit), with the awkward cases in them: an extra column that is an integer in
one unit, a float in another and all null in a third; error rows; near-duplicate hashes across units.
"""

from __future__ import annotations

import json
import random
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from soraprep.cli import app
from soraprep.curate.assemble import assemble, manifest_metadata, plan_parts, unit_key
from soraprep.curate.pipeline import apply_global
from soraprep.curate.recipe import load_recipe, validate
from soraprep.curate.report_stats import MAX_ERROR_ROWS, collect, summarize
from soraprep.manifest import (
    read_manifest,
    read_metadata,
    resolve_path,
    rows_to_table,
    table_rows,
    write_manifest,
)
from soraprep.manifest_dataset import INDEX, iter_manifest, locate
from soraprep.storage.store import Store


def _recipe(dedup: bool):
    data = yaml.safe_load(load_recipe().to_yaml())
    data.pop("version", None)
    if dedup:
        data["phash"], data["dedup"] = {}, {"max_hamming": 3}
        data["filter"]["is_duplicate"] = {"max": 0}
    return validate(data, "test")


def _unit_rows(u: int, clips: int, rng: random.Random) -> list[dict]:
    vid = f"v{u:05d}"
    if u % 17 == 5:  # a unit that failed before it had clips
        return [{"clip_id": f"{vid}-error", "video_id": vid, "source": f"/videos/{vid}.mp4", "path": f"/videos/{vid}.mp4",
                 "keep": False, "filter_reason": "error",
                 "error": {"stage": "probe", "kind": "not_a_video" if u % 2 else "empty_file", "message": f"bad {u}"}}]
    rows = []
    for i in range(clips):
        start = 2.0 * i
        h = rng.getrandbits(64)
        if u % 7 == 3 and u > 7:  # near-duplicates of an earlier unit's clips: one bit flipped
            h = random.Random(u - 7).getrandbits(64) ^ 1
        row = {"clip_id": f"{vid}-{i:04d}", "video_id": vid, "source": f"/videos/{vid}.mp4",
               "path": f"clips/{vid}/{vid}-{i:04d}.mp4", "num_frames": 48, "height": 360, "width": 640,
               "fps": 24.0, "start_s": start, "end_s": start + 2.0, "duration_s": 2.0, "clip_index": i,
               "cut_mode": "copy", "keep": True, "filter_reason": None, "bucket": "360x640x48", "bucket_height": 360,
               "bucket_width": 640, "bucket_frames": 48, "motion_score": None if i == 3 else rng.uniform(0, 2),
               "sharpness": rng.uniform(0, 300), "phash": f"{h:016x}",
               "provenance": json.dumps({"motion_score": {"by": "t"}}), "error": None}
        if u % 3 == 0:
            row["views"] = u * 10 + i            # int64 in these units
        elif u % 3 == 1:
            row["views"] = u + 0.5               # double in these
        else:
            row["views"] = None                  # all null (stored as string) in these
        if row["motion_score"] is not None and row["motion_score"] < 0.05:
            row["keep"], row["filter_reason"] = False, "motion_score=0.01<0.05"
        rows.append(row)
    return rows


def _make_units(out: Path, units: int, clips: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    keys = []
    for u in range(units):
        key = f"v{u:05d}-{u:08x}"
        rows = _unit_rows(u, clips, rng)
        write_manifest(out / unit_key(key), rows,
                       metadata={"soraprep.unit_timings": json.dumps({"analyze": 0.5, "score": 0.25})})
        keys.append(key)
    return keys


def _reference(out: Path, keys: list[str], rec) -> list[dict]:
    """The manifest the in-memory pipeline wrote: all rows as dicts, apply_global, write_manifest."""
    rows = []
    for k in keys:
        rows += table_rows(pq.read_table(out / unit_key(k)))
    rows = apply_global(rows, rec, {}, refilter=True)
    write_manifest(out.parent / "reference.parquet", rows, metadata=manifest_metadata(rec), jsonl=True)
    return read_manifest(out.parent / "reference.parquet")


@pytest.mark.parametrize("dedup", [False, True])
def test_assembled_dataset_equals_the_in_memory_manifest(tmp_path, dedup):
    out = tmp_path / "out"
    keys = _make_units(out, units=120, clips=9)
    rec = _recipe(dedup)
    asm = assemble(Store(out), keys, rec, metadata=manifest_metadata(rec), rows_per_part=250, scan_chunk=25)
    want = _reference(out, keys, rec)
    index = json.loads((out / "manifest" / INDEX).read_text())
    assert index["totals"]["rows"] == len(want) == sum(p["rows"] for p in index["parts"])
    assert index["totals"]["kept"] == sum(bool(r["keep"]) for r in want)
    assert index["totals"]["errors"] == sum(r["error"] is not None for r in want) == 7
    assert len(index["parts"]) == len(plan_parts([p["rows"] for p in index["parts"]], 250)) > 3
    assert all(p["rows"] <= 250 for p in index["parts"]) and sum(p["units"] for p in index["parts"]) == 120
    # the single-file copies and the dataset hold exactly the rows the in-memory path wrote
    assert read_manifest(out / "manifest.parquet") == want
    assert read_manifest(out / "manifest") == want
    assert (out / "manifest.jsonl").read_text() == (tmp_path / "reference.jsonl").read_text()
    assert pq.read_schema(out / "manifest.parquet").remove_metadata() == \
        pq.read_schema(tmp_path / "reference.parquet").remove_metadata()
    assert read_metadata(out / "manifest") == read_metadata(tmp_path / "reference.parquet")
    assert {r["views"] for r in want if r["views"] is not None} >= {30.0, 1.5}  # int and float units: one double
    if dedup:
        dups = [r for r in want if r.get("is_duplicate")]
        assert dups and all(not r["keep"] and "is_duplicate=1>0" in r["filter_reason"] for r in dups)
        assert [r for r in dups if r["bucket"] is None]  # newly dropped: bucket labels cleared
        assert asm.timings["global"] >= 0
    assert asm.timings["analyze"] == pytest.approx(0.5 * 120)


def test_process_pool_map_gives_the_same_dataset(tmp_path):
    """Scan and part tasks are picklable and independent: a process pool's map writes the same parts."""
    rec = _recipe(True)
    a, b = tmp_path / "a", tmp_path / "b"
    keys = _make_units(a, units=40, clips=5)
    _make_units(b, units=40, clips=5)
    assemble(Store(a), keys, rec, metadata=manifest_metadata(rec), rows_per_part=60, scan_chunk=7)
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as ex:
        assemble(Store(b), keys, rec, ex.map, metadata=manifest_metadata(rec), rows_per_part=60, scan_chunk=7)
    assert read_manifest(a / "manifest") == read_manifest(b / "manifest")
    assert (a / "manifest.jsonl").read_text() == (b / "manifest.jsonl").read_text()


def test_no_single_file_removes_stale_copies_and_fewer_parts_remove_old_ones(tmp_path):
    out = tmp_path / "out"
    keys = _make_units(out, units=30, clips=4)
    rec = _recipe(False)
    assemble(Store(out), keys, rec, metadata=manifest_metadata(rec), rows_per_part=20)
    many = sorted(p.name for p in (out / "manifest").glob("part-*.parquet"))
    assemble(Store(out), keys, rec, metadata=manifest_metadata(rec), rows_per_part=1000, single_file=False)
    assert len(many) > 1 and sorted(p.name for p in (out / "manifest").glob("part-*.parquet")) == ["part-00000.parquet"]
    assert not (out / "manifest.parquet").exists() and not (out / "manifest.jsonl").exists()
    assert locate(out).kind == "dataset"  # the run folder now reads as its dataset
    rows = read_manifest(out)
    assert len(rows) == sum(len(_unit_rows(u, 4, random.Random(0))) for u in range(30))
    # clip paths of a dataset are relative to the run folder, whichever form names it
    for name in (out, out / "manifest", out / "manifest" / INDEX, out / "manifest" / "part-00000.parquet"):
        assert resolve_path(name, rows[0]["path"]) == str(out.resolve() / rows[0]["path"])
    # streamed readers: rows or Arrow batches, with a column projection
    batches = list(iter_manifest(out, columns=["clip_id", "keep", "no_such_column"], batch_rows=7, batches=True))
    assert batches[0].schema.names == ["clip_id", "keep"] and max(len(b) for b in batches) <= 7
    assert [r["clip_id"] for r in iter_manifest(out / "manifest" / INDEX)] == [r["clip_id"] for r in rows]


def test_report_and_summary_from_streamed_aggregates(tmp_path):
    out = tmp_path / "out"
    rows = [{"clip_id": f"c{i}", "video_id": f"v{i // 3}", "source": f"s{i // 3}.mp4", "keep": i % 4 != 0,
             "duration_s": 1.5, "motion_score": i / 10, "filter_reason": None if i % 4 else "motion_score=0<1",
             "error": {"stage": "score", "kind": "boom", "message": f"m{i}"} if i % 5 == 0 else None}
            for i in range(MAX_ERROR_ROWS * 5 + 7)]
    write_manifest(out / "manifest.parquet", rows)
    s = summarize(out)
    assert s == summarize(rows) == collect(out / "manifest.parquet", batch_rows=64).summary()
    assert s.rows == len(rows) and s.errors == sum(r["error"] is not None for r in rows) > MAX_ERROR_ROWS
    assert s.videos == len({r["video_id"] for r in rows})
    assert s.kept == sum(r["keep"] and r["error"] is None for r in rows)
    assert s.errors_by_kind == (("score", "boom", s.errors, "s0.mp4", "m0"),)
    agg = collect(out, batch_rows=100)
    assert len(agg.error_rows) == MAX_ERROR_ROWS and len(agg.thumbs_kept) == len(agg.thumbs_dropped) == 48
    assert sum(agg.hists["motion_score"].counts) == s.clips  # every clip's value in a fixed bin
    res = CliRunner().invoke(app, ["report", str(out)])
    assert res.exit_code == 0, res.output
    html = (out / "report.html").read_text()
    assert f"the first {MAX_ERROR_ROWS} of {s.errors} error rows" in html


def test_dataset_on_an_object_store(tmp_path, s3_bucket):
    """Unit commits on S3 -> parts, index and single files on S3, read back through the URL forms."""
    local = tmp_path / "units"
    keys = _make_units(local, units=12, clips=3)
    store = Store(f"{s3_bucket}/runs/r1")
    for k in keys:
        store.put_file(local / unit_key(k), unit_key(k))
    rec = _recipe(True)
    assemble(store, keys, rec, metadata=manifest_metadata(rec), rows_per_part=10)
    want = _reference(local, keys, rec)
    run = f"{s3_bucket}/runs/r1"
    assert read_manifest(run) == read_manifest(f"{run}/manifest.parquet") == want
    assert read_manifest(f"{run}/manifest/") == read_manifest(f"{run}/manifest/{INDEX}") == want
    assert [r["clip_id"] for r in iter_manifest(f"{run}/manifest", batch_rows=4)] == [r["clip_id"] for r in want]
    assert resolve_path(f"{run}/manifest", "clips/a.mp4") == f"{run}/clips/a.mp4"
    assert summarize(run).rows == len(want)
    res = CliRunner().invoke(app, ["report", run])
    assert res.exit_code == 0, res.output
    assert f"<tr><td>rows in the manifest</td><td>{len(want)}</td></tr>" in store.read_text("report.html")


def test_curate_no_single_file_then_report_export_rethreshold(tmp_path):
    """The CLI end to end on the dataset form only: curate --no-single-file, report, export, --rethreshold."""
    from soraprep.video.synth import Shot, make_video

    src = tmp_path / "in"
    make_video(src / "a.mp4", [Shot(30, seed=1), Shot(30, "static")], width=192, height=144)
    (src / "bad.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["curate", str(src), "-o", str(out), "-q", "--no-single-file"])
    assert res.exit_code == 1, res.output  # the bad file is an error row
    assert not (out / "manifest.parquet").exists() and (out / "manifest" / INDEX).is_file()
    assert f"manifest: {out / 'manifest'}" in " ".join(res.output.split())
    rows = read_manifest(out)
    assert len(rows) == 3 and sum(r["error"] is not None for r in rows) == 1
    assert "3 rows: 1 kept, 1 dropped by filters, 1 error" in res.output
    res = CliRunner().invoke(app, ["report", str(out)])
    assert res.exit_code == 0 and "<b>1</b>kept" in (out / "report.html").read_text()
    res = CliRunner().invoke(app, ["export", str(out / "manifest"), "-o", str(tmp_path / "train.csv")])
    assert res.exit_code == 0, res.output
    lines = (tmp_path / "train.csv").read_text().splitlines()
    kept = [r for r in rows if r["keep"]]
    assert len(lines) == 2 and lines[1].startswith(str(out.resolve() / kept[0]["path"]))
    res = CliRunner().invoke(app, ["curate", "--rethreshold", str(out), "-q", "--no-single-file", "--no-report"])
    assert res.exit_code == 1, res.output
    assert read_manifest(out) == rows and not (out / "manifest.parquet").exists()


def test_caption_reads_a_dataset_and_writes_it_back_in_place(tmp_path):
    """``soraprep caption OUT/manifest`` (a dataset whose clip paths are relative to OUT) captions every kept
    clip and leaves a dataset; ``-o`` elsewhere re-bases the relative paths."""
    from soraprep.caption import CaptionSettings, caption_manifest
    from soraprep.caption.fake_server import FakeChatServer
    from soraprep.manifest_parts import write_rows_dataset
    from soraprep.video.synth import Shot, make_video

    out = tmp_path / "out"
    rows = []
    for k in range(2):
        make_video(out / "clips" / f"c{k}.mp4", [Shot(20, seed=k)], width=96, height=64)
        rows.append({"clip_id": f"c{k}", "video_id": f"v{k}", "source": "unused.mp4", "path": f"clips/c{k}.mp4",
                     "num_frames": 20, "fps": 25.0, "keep": True, "error": None})
    write_rows_dataset(Store(out), rows_to_table(rows), rows_per_part=1)
    settings = CaptionSettings(backend="openai", model="fake-vlm", frames=2, concurrency=2,
                               backend_options={"backoff_base_s": 0.01, "max_attempts": 2})
    with FakeChatServer() as srv:
        import dataclasses

        settings = dataclasses.replace(settings, base_url=srv.url)
        s = caption_manifest(out / "manifest", settings=settings)
        assert s.captioned == 2 and s.failed == 0
        elsewhere = caption_manifest(out, out=tmp_path / "other" / "m.parquet", settings=settings)
        assert elsewhere.previous == 2  # captions read back from the dataset
    # rewritten as a dataset (one part now: the second, stale one is gone)
    assert locate(out).kind == "dataset" and len(list((out / "manifest").glob("part-*.parquet"))) == 1
    captioned = read_manifest(out)
    assert [r["clip_id"] for r in captioned] == ["c0", "c1"] and all(r["caption"] for r in captioned)
    moved = read_manifest(tmp_path / "other" / "m.parquet")
    assert [r["path"] for r in moved] == ["../out/clips/c0.mp4", "../out/clips/c1.mp4"]


def test_ray_tasks_write_the_same_dataset(tmp_path, ray_cluster):
    """``--runner ray`` assembles with Ray tasks on the cluster's nodes (runners/ray.task_map): same parts."""
    from soraprep.curate.runners.ray import ray_running, task_map

    assert ray_running()
    rec = _recipe(True)
    a, b = tmp_path / "a", tmp_path / "b"
    keys = _make_units(a, units=30, clips=4)
    _make_units(b, units=30, clips=4)
    assemble(Store(a), keys, rec, rows_per_part=40, scan_chunk=8)
    index = assemble(Store(b), keys, rec, task_map, rows_per_part=40, scan_chunk=8).index
    assert index["totals"]["parts"] > 2
    assert read_manifest(a / "manifest") == read_manifest(b / "manifest") == read_manifest(b / "manifest.parquet")
