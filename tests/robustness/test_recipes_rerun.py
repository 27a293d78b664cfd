"""Recipes and reruns, through `soraprep curate` (issue 10, items 10, 13, 14).

* Rerunning into an existing OUT with another recipe or --cut gives exactly what a fresh run into an
  empty OUT gives (manifest column by column, clip files, metadata); decision-only changes do not decode;
  analysis changes stop with exit 2 until --force.
* A recipe file overrides the keys it names on top of the default; null removes a default filter rule;
  bad recipes (unknown filter column, bad cut.crf/preset, non-UTF-8, YAML alias bomb) fail before any work.
* The copy cut never splits a keyframe-less head off a shot when a part would fall under the duration
  minimum: the shot is re-encoded whole instead (the 3.44 s shot of the Panda-70M rehearsal).
"""

from __future__ import annotations

import json
import shutil
import time
from fractions import Fraction
from pathlib import Path

import pytest
from typer.testing import CliRunner

from soraprep.cli import app
from soraprep.manifest import read_manifest, read_metadata
from soraprep.video.io import decode
from soraprep.video.synth import Shot, make_video


def _curate(*args: str):
    return CliRunner().invoke(app, ["curate", *map(str, args), "-q", "--no-report"])


def _recipe(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


def _comparable(out: Path):
    rows = read_manifest(out / "manifest.parquet")
    return [{k: v for k, v in r.items() if not any(t in k for t in ("time", "elapsed", "latency"))} for r in rows]


def _files(out: Path, folder: str) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in (out / folder).rglob("*") if p.is_file())


def _same_as_fresh(out: Path, fresh: Path) -> None:
    assert _comparable(out) == _comparable(fresh)
    assert _files(out, "clips") == _files(fresh, "clips")  # no clip of another recipe left behind
    for f in _files(out, "clips"):  # and each file is the one a fresh run writes (no stale cut reused)
        assert (out / f).read_bytes() == (fresh / f).read_bytes(), f
    assert _files(out, "thumbs") == _files(fresh, "thumbs")
    for key in ("soraprep.recipe", "soraprep.recipe_hash", "soraprep.fingerprints"):
        assert read_metadata(out / "manifest.parquet")[key] == read_metadata(fresh / "manifest.parquet")[key]
    assert json.loads((out / "run.json").read_text())["recipe_hash"] == \
        json.loads((fresh / "run.json").read_text())["recipe_hash"]


@pytest.fixture()
def inputs(media, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("cuts.mp4", "kinds.mp4"):
        shutil.copy(media[name], src / name)
    good = media["cuts.mp4"].read_bytes()
    (src / "truncated.mp4").write_bytes(good[: len(good) // 3])  # a partial decode and an error row
    (src / "zero.mp4").write_bytes(b"")                            # go through reruns too
    return src


# --- item 10: no stale results on rerun -----------------------------------------------------------

def test_rerun_with_another_recipe_or_cut_equals_a_fresh_run(inputs, tmp_path):
    out = tmp_path / "out"
    assert _curate(inputs, "-o", out).exit_code == 1  # zero.mp4
    kept_a = {r["clip_id"] for r in read_manifest(out / "manifest.parquet") if r["keep"]}

    # B: other thresholds (drops two kept clips, keeps the frozen shot): re-decided, no decoding
    b = _recipe(tmp_path, "b", "filter:\n  motion_score: null\n  static_ratio: null\n"
                               "  brightness: {min: 100, max: 140}\n")
    res = _curate(inputs, "-o", out, "--recipe", b)
    assert res.exit_code == 1, res.output
    assert "redecided" in res.output
    assert "analyze" not in json.loads((out / "run.json").read_text())["stage_time_s"]  # nothing decoded
    fresh_b = tmp_path / "fresh_b"
    assert _curate(inputs, "-o", fresh_b, "--recipe", b).exit_code == 1
    _same_as_fresh(out, fresh_b)
    kept_b = {r["clip_id"] for r in read_manifest(out / "manifest.parquet") if r["keep"]}
    assert kept_a - kept_b and kept_b - kept_a  # the rerun really changed what is kept

    # C: the same recipe with another cut mode: every clip re-cut from the stored analysis
    res = _curate(inputs, "-o", out, "--recipe", b, "--cut", "keyframe")
    assert res.exit_code == 1, res.output
    fresh_c = tmp_path / "fresh_c"
    assert _curate(inputs, "-o", fresh_c, "--recipe", b, "--cut", "keyframe").exit_code == 1
    _same_as_fresh(out, fresh_c)
    assert {r["cut_mode"] for r in read_manifest(out / "manifest.parquet") if r["keep"]} <= {"keyframe", "exact"}

    # D: another split parameter needs a decode: exit 2 saying what to do, OUT untouched ...
    d = _recipe(tmp_path, "d", b.read_text() + "split:\n  max_clip_s: 0.8\n")
    before = _comparable(out)
    res = _curate(inputs, "-o", out, "--recipe", d, "--cut", "keyframe")
    assert res.exit_code == 2
    assert "--force" in " ".join(res.output.split()) and "(split, which follows" in " ".join(res.output.split())
    assert _comparable(out) == before
    # ... and with --force the result is a fresh run's
    res = _curate(inputs, "-o", out, "--recipe", d, "--cut", "keyframe", "--force")
    assert res.exit_code == 1, res.output
    fresh_d = tmp_path / "fresh_d"
    assert _curate(inputs, "-o", fresh_d, "--recipe", d, "--cut", "keyframe").exit_code == 1
    _same_as_fresh(out, fresh_d)
    assert len(_comparable(out)) > len(before)  # 0.8 s clips: more rows than before


def test_rethreshold_refuses_to_change_how_clips_were_cut(inputs, tmp_path):
    out = tmp_path / "out"
    assert _curate(inputs, "-o", out).exit_code == 1
    first = read_metadata(out / "manifest.parquet")["soraprep.recipe_hash"]
    res = CliRunner().invoke(app, ["curate", "--rethreshold", str(out), "--cut", "none", "--no-report"])
    assert res.exit_code == 2 and "rerun `soraprep curate`" in " ".join(res.output.split())
    # thresholds alone are fine; the metadata says which run's analysis and cuts the rows come from
    b = _recipe(tmp_path, "b", "filter:\n  brightness: {min: 100}\n")
    res = CliRunner().invoke(app, ["curate", "--rethreshold", str(out), "--recipe", str(b), "--no-report"])
    assert res.exit_code == 1, res.output  # zero.mp4's error row
    meta = read_metadata(out / "manifest.parquet")
    assert meta["soraprep.rethreshold_of"] == first != meta["soraprep.recipe_hash"]


# --- item 13: one rule for recipe files; bad recipes fail before any work ---------------------------

def test_a_recipe_file_overrides_only_the_keys_it_names(media, tmp_path):
    video = media["kinds.mp4"]  # shots: moving, static, black, blurred, text
    only_short_side = _recipe(tmp_path, "ss", "filter:\n  short_side: {min: 200}\n")
    res = _curate(video, "-o", tmp_path / "a", "--recipe", only_short_side)
    assert res.exit_code == 0, res.output
    reasons = [r["filter_reason"] or "" for r in read_manifest(tmp_path / "a" / "manifest.parquet")]
    # the default's other filters still hold: the frozen, black and blurred shots are dropped
    assert "static_ratio" in reasons[1] and "black_ratio" in reasons[2] and "sharpness" in reasons[3]
    meta = read_metadata(tmp_path / "a" / "manifest.parquet")["soraprep.recipe"]
    assert "short_side:\n    min: 200" in meta and "motion_score" in meta  # the metadata holds the merged recipe

    removed = _recipe(tmp_path, "rm", "filter:\n  motion_score: null\n  static_ratio: null\n")
    assert _curate(video, "-o", tmp_path / "b", "--recipe", removed).exit_code == 0
    rows = read_manifest(tmp_path / "b" / "manifest.parquet")
    assert rows[1]["keep"], rows[1]["filter_reason"]  # the frozen shot passes once both rules are removed

    # the derived geometry columns are there when the filter runs (the aspect_ratio rule was a no-op)
    tall = _recipe(tmp_path, "tall", "filter:\n  aspect_ratio: {min: 1.0}\n")
    assert _curate(video, "-o", tmp_path / "c", "--recipe", tall).exit_code == 0
    rows = read_manifest(tmp_path / "c" / "manifest.parquet")
    assert not any(r["keep"] for r in rows) and all("aspect_ratio=0.75<1" in r["filter_reason"] for r in rows)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("name, body, message", [
    ("unknown_column", b"filter:\n  motoin_score: {min: 0.5}\n", "did you mean 'motion_score'"),
    ("orphan_rule", b"analyze:\n  scorers: {static: null}\n", "filter.static_ratio: no stage"),
    ("crf", b"cut:\n  crf: 99\n", "cut.crf must be an integer 0-51"),
    ("preset", b"cut:\n  preset: fastest\n", "cut.preset must be an x264 preset"),
    ("latin1", "filter:\n  duration_s: {min: 1.0}  # caf\xe9\n".encode("latin-1"), "not UTF-8"),
    ("bomb", BOMB.encode(), "aliases expand to more than"),
    ("base", b"base: strict\n", "base 'strict' is not a recipe"),
])
def test_bad_recipe_exits_2_before_any_work(media, tmp_path, name, body, message):
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(body)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    res = _curate(media["cuts.mp4"], "-o", out, "--recipe", path)
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())
    assert "Traceback" not in res.output and not out.exists()  # nothing was done
    assert time.perf_counter() - t0 < 10


# --- item 14: the copy cut never splits a shot into parts the duration filter drops ------------------

def test_keyframe_head_split_only_when_both_parts_stay_long_enough(tmp_path):
    fps = Fraction(25)
    # x: second shot [55, 141) = 3.44 s, its first keyframe 43 frames (1.72 s) in: halves under 2 s
    make_video(tmp_path / "in" / "x.mp4", [Shot(55, speed=3, seed=1), Shot(86, speed=-2, seed=2)], fps=fps, gop=98)
    # y: second shot [55, 205) = 6 s, first keyframe 60 frames (2.4 s) in: both parts >= 2 s
    make_video(tmp_path / "in" / "y.mp4", [Shot(55, speed=3, seed=3), Shot(150, speed=2, seed=4)], fps=fps, gop=115)
    recipe = _recipe(tmp_path, "min2", "filter:\n  duration_s: {min: 2.0}\n")
    out = tmp_path / "out"
    res = _curate(tmp_path / "in", "-o", out, "--recipe", recipe)
    assert res.exit_code == 0, res.output
    rows = read_manifest(out / "manifest.parquet")
    x = [r for r in rows if r["video_id"].startswith("x")]
    y = [r for r in rows if r["video_id"].startswith("y")]
    assert [(r["start_frame"], r["end_frame"], r["keep"]) for r in x] == [(0, 55, True), (55, 141, True)]
    assert x[1]["cut_mode"] == "exact"  # the whole 3.44 s shot re-encoded, nothing lost
    assert [(r["start_frame"], r["end_frame"], r["keep"], r["cut_mode"]) for r in y] == [
        (0, 55, True, "copy"), (55, 115, True, "exact"), (115, 205, True, "copy")]
    for r in x + y:
        assert sum(1 for _ in decode(out / r["path"], size=32, fmt="gray")) == r["num_frames"]
