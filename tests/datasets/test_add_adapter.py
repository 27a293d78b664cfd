"""Adding a dataset adapter is one parser function + one registration (docs/architecture.md, "How to add a
dataset adapter"): the adapter below is the one that section shows, defined here instead of in
``soraprep/datasets/``. It ingests a tiny generated metadata file into a valid manifest (good rows with the
manifest's conventions, malformed records as ``file:line`` error rows), which ``download`` then cuts."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import pytest
from typer.testing import CliRunner

from soraprep.cli import app
from soraprep.datasets import ingest
from soraprep.datasets.common import ParseContext, RecordError, as_id, check_span, parse_seconds, require
from soraprep.datasets.download import download
from soraprep.datasets.records import read_records
from soraprep.datasets.registry import PARSERS, get_spec, register
from soraprep.manifest import META_VERSION, SCHEMA_VERSION, read_manifest, read_metadata, row_problem
from soraprep.video.io import probe
from soraprep.video.synth import Shot, make_video

NAME = "clipbank"
LICENSE = "ClipBank: CC-BY 4.0 (test data)"


# --- the adapter (soraprep/datasets/clipbank.py in the docs) -------------------------------------------------
def parse_clipbank(ctx: ParseContext) -> Iterator[dict[str, Any]]:
    """ClipBank CSV: ``id,file,start,end,caption`` (seconds), one clip per record."""
    for rec in read_records(ctx.path):            # CSV/JSON/JSONL/Parquet, each record with its line
        ctx.records_read += 1
        if rec.error:                              # a malformed record: an error row, the file goes on
            yield ctx.error_row(rec.line, rec.error.kind, str(rec.error))
            continue
        d = rec.data
        try:
            require(d, "id", "file", "start", "end")
            start, end = parse_seconds(d["start"], "start"), parse_seconds(d["end"], "end")
            check_span(start, end)
        except RecordError as exc:
            yield ctx.error_row(rec.line, exc.kind, str(exc), video_id=d.get("id"), source=d.get("file"))
            continue
        yield ctx.base_row(rec.line, video_id=as_id(d["id"]), source=d["file"], clip_index=0,
                           start_s=start, end_s=end, text=d.get("caption"))
# -------------------------------------------------------------------------------------------------------------


@pytest.fixture()
def clipbank():
    """Registers the adapter as ``@register(NAME, license=LICENSE)`` on the function would, then removes it."""
    register(NAME, license=LICENSE)(parse_clipbank)
    yield get_spec(NAME)
    PARSERS.pop(NAME)


@pytest.fixture(scope="module")
def metadata(tmp_path_factory):
    d = tmp_path_factory.mktemp("clipbank")
    make_video(d / "a.mp4", [Shot(30, seed=1), Shot(30, seed=2)], fps=Fraction(25), width=64, height=48, gop=10)
    make_video(d / "b.mp4", [Shot(40, seed=3)], fps=Fraction(25), width=64, height=48, gop=10)
    path = d / "clipbank.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "file", "start", "end", "caption"])
        w.writerow(["a1", d / "a.mp4", "0.4", "1.2", "a red square"])         # line 2: frames 10..30
        w.writerow(["a2", d / "a.mp4", "1.2", "2.0", "a blue square"])        # line 3: frames 30..50
        w.writerow(["b1", d / "b.mp4", "0", "0.8", "stripes"])                # line 4: frames 0..20
        w.writerow(["bad", d / "b.mp4", "1.0", "0.5", "inverted"])           # line 5: bad span
        w.writerow(["nofile", "", "0", "1", "no file"])                       # line 6: missing field
    return path


def test_registered_adapter_ingests_into_a_valid_manifest(clipbank, metadata, tmp_path):
    assert clipbank.parse is parse_clipbank and clipbank.license == LICENSE
    out = tmp_path / "clipbank.parquet"
    report = ingest(dataset=NAME, path=metadata, out=out)
    assert (report.records_read, report.clips, dict(report.errors)) == (5, 3, {"bad_span": 1, "missing_field": 1})

    assert read_metadata(out)[META_VERSION.decode()] == str(SCHEMA_VERSION)
    rows = read_manifest(out)
    good = [r for r in rows if not r["error"]]
    assert [(r["clip_id"], r["video_id"], r["start_s"], r["end_s"], r["text"]) for r in good] == [
        ("a1-0000", "a1", 0.4, 1.2, "a red square"), ("a2-0000", "a2", 1.2, 2.0, "a blue square"),
        ("b1-0000", "b1", 0.0, 0.8, "stripes")]
    for r in good:
        assert row_problem(r, r["source"]) is None
        assert (r["dataset"], r["license"], r["captions"]) == (NAME, LICENSE, [r["text"]])
    errors = {r["meta_line"]: r["error"] for r in rows if r["error"]}
    assert set(errors) == {5, 6}
    assert errors[5]["stage"] == "ingest" and errors[5]["kind"] == "bad_span"
    assert errors[5]["message"].startswith(f"{metadata}:5: ")
    assert errors[6]["kind"] == "missing_field" and "'file'" in errors[6]["message"]

    # the manifest is usable downstream as it is: download cuts each span from the local sources
    dl = download(manifest=out, out=tmp_path / "dl", cut="exact", concurrency=1)
    assert dl.clips_cut == 3
    cut = {r["clip_id"]: r for r in read_manifest(tmp_path / "dl" / "manifest.parquet") if not r["error"]}
    assert {k: (r["start_frame"], r["end_frame"]) for k, r in cut.items()} == {
        "a1-0000": (10, 30), "a2-0000": (30, 50), "b1-0000": (0, 20)}
    for r in cut.values():
        assert probe(tmp_path / "dl" / r["path"]).num_frames == r["num_frames"] == 20


def test_cli_finds_a_registered_adapter(clipbank, metadata, tmp_path):
    res = CliRunner().invoke(app, ["ingest", "--dataset", NAME, str(metadata), "-o", str(tmp_path / "m.parquet")])
    assert res.exit_code == 1, res.output  # 1: it ran, and two records became error rows
    assert len(read_manifest(tmp_path / "m.parquet")) == 5
    res = CliRunner().invoke(app, ["ingest", "--dataset", "clipbnk", str(metadata), "-o", str(tmp_path / "x.parquet")])
    assert res.exit_code == 2 and NAME in res.output  # usage error, naming the registered datasets


def test_names_are_unique(clipbank):
    with pytest.raises(ValueError, match="already registered"):
        register(NAME, license=LICENSE)(parse_clipbank)
