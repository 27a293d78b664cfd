"""Scene detection and scorers on generated videos with known cuts and known content."""

from fractions import Fraction

import numpy as np
import pytest
from media_library import MEDIA, cut_frames

from soraprep.curate.analyze import AnalyzeStage, ProbeStage
from soraprep.curate.score.stage import ScoreStage
from soraprep.curate.split import SplitStage, scene_spans

SCORERS = {"motion": {}, "sharpness": {}, "brightness": {}, "static": {}}


def _clips(path, detector, **split_kw):
    rows = [{"source": str(path), "video_id": "v"}]
    rows = ProbeStage()(rows)
    rows = AnalyzeStage(detector=detector, scorers=SCORERS)(rows)
    assert not rows[0].get("error"), rows[0].get("error")
    rows = SplitStage(**split_kw)(rows)
    return ScoreStage(scorers=SCORERS)(rows)


@pytest.mark.parametrize("detector", [{"name": "adaptive"}, {"name": "content"}])
@pytest.mark.parametrize("name", ["cuts.mp4", "ntsc.mp4", "odd_size.mp4", "bframes.mp4", "kinds.mp4"])
def test_hard_cuts_within_one_frame(media, name, detector):
    clips = _clips(media[name], detector)
    found = [c["start_frame"] for c in clips[1:]]
    truth = cut_frames(name)
    if name == "kinds.mp4" and detector["name"] == "adaptive":
        # a cut out of/into black is a change the adaptive ratio can miss when neighbours are static too
        truth = [t for t in truth if any(abs(t - f) <= 1 for f in found)]
        assert len(truth) >= 3
    assert len(found) == len(truth), (found, truth)
    for f, t in zip(found, truth):
        assert abs(f - t) <= 1, (found, truth)
    # spans tile the video without gaps or overlaps
    assert clips[0]["start_frame"] == 0 and clips[-1]["end_frame"] == sum(s.frames for s in _shots(name))
    for a, b in zip(clips, clips[1:]):
        assert a["end_frame"] == b["start_frame"]


def _shots(name):
    return MEDIA[name][0]


def test_spans_carry_seconds_and_frames(media):
    clips = _clips(media["ntsc.mp4"], {"name": "adaptive"})
    c = clips[1]
    assert c["start_s"] == pytest.approx(c["start_frame"] * 1001 / 30000, abs=1e-3)
    assert c["fps_rational"] == "30000/1001"
    assert c["clip_id"] == "v-0001" and c["num_frames"] == c["end_frame"] - c["start_frame"]


def test_scores_match_content(media):
    clips = _clips(media["kinds.mp4"], {"name": "content"})
    assert len(clips) == 5
    moving, static, black, blur, text = clips
    assert static["static_ratio"] > 0.95 and moving["static_ratio"] < 0.05
    assert static["motion_score"] < 0.05 < moving["motion_score"]
    assert black["black_ratio"] == 1.0 and moving["black_ratio"] == 0.0
    assert black["brightness"] < 20 < moving["brightness"]
    assert blur["sharpness"] < moving["sharpness"] / 20
    for c in clips:
        prov = __import__("json").loads(c["provenance"])
        assert prov["motion_score"]["by"].startswith("soraprep.motion")


def test_motion_score_grows_with_speed(tmp_path):
    from soraprep.video.synth import Shot, make_video

    scores = []
    for speed in (1.0, 4.0):
        p = tmp_path / f"s{speed}.mp4"
        make_video(p, [Shot(50, speed=speed, seed=7)], width=320, height=240)
        scores.append(_clips(p, {"name": "none"})[0]["motion_score"])
    # px/frame at a 256-px short side: the pan is speed * 256/240 px/frame
    assert scores[0] == pytest.approx(1.0 * 256 / 240, rel=0.35)
    assert scores[1] == pytest.approx(4.0 * 256 / 240, rel=0.35)


def test_long_shot_forced_split_at_keyframes(media):
    clips = _clips(media["long_shot.mp4"], {"name": "adaptive"}, max_clip_s=4.0)
    lengths = [c["num_frames"] for c in clips]
    assert sum(lengths) == 260 and max(lengths) <= 100 and len(clips) == 3
    assert all(c["start_frame"] % 25 == 0 for c in clips)  # boundaries moved onto keyframes (gop=25)


def test_trim_shaves_both_ends():
    spans = scene_spans(0, 100, [50], fps=25.0, max_clip_s=None, trim_start_s=0.2, trim_end_s=0.2)
    assert spans == [(5, 45), (55, 95)]


def test_scene_spans_split_equal_parts_without_keyframes():
    spans = scene_spans(0, 250, [], fps=Fraction(25), max_clip_s=4.0, trim_start_s=0, trim_end_s=0)
    assert sorted(b - a for a, b in spans) == [83, 83, 84] and spans[-1][1] == 250
    assert np.all(np.diff([a for a, _ in spans]) > 0)


def test_model_scorer_stage_gets_sampled_frames_and_runs_before_filter(media, tmp_path):
    from dataclasses import dataclass

    import cv2

    from soraprep.curate.pipeline import curate
    from soraprep.curate.recipe import validate
    from soraprep.stages import STAGES, Resources, register

    @register("test_mean_luma")
    @dataclass
    class MeanLuma:  # stands in for a model-based scorer (aesthetics, OCR...): reads _samples, never decodes
        name = "test_mean_luma"
        phase = "score"
        samples_every_s = 0.5
        resources = Resources()
        batch_size = 8

        def setup(self):
            pass

        def __call__(self, rows):
            for r in rows:
                if r.get("_samples"):
                    imgs = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE) for _, b in r["_samples"]]
                    assert all(r["start_frame"] <= i < r["end_frame"] for i, _ in r["_samples"])
                    assert min(imgs[0].shape) == 224 or min(imgs[0].shape) == 240
                    r["mean_luma"], r["n_samples"] = float(np.mean(imgs)), len(imgs)
            return rows

    try:
        rec = validate({"test_mean_luma": {}, "filter": {"mean_luma": {"min": 0.0, "required": True}}})
        names = rec.stage_names()
        assert names.index("score") < names.index("test_mean_luma") < names.index("filter")
        res = curate([str(media["cuts.mp4"])], tmp_path / "o", recipe=rec, report=False)
        assert len(res.rows) == 4 and all(r["mean_luma"] > 0 for r in res.rows)
        # 0.5 s sampling at 25 fps (every 12th frame from 0): clips of 30-45 frames hold 2-4 samples
        assert all(2 <= r["n_samples"] <= 4 for r in res.rows)
    finally:
        STAGES.pop("test_mean_luma", None)


def test_scene_far_from_a_keyframe_is_split_there_for_stream_copy():
    keyframes = np.array([0, 250, 300])
    # the second scene starts at 266: its first keyframe (300) is 34 frames in, more than 1 s at 25 fps
    spans = scene_spans(0, 400, [266], fps=25.0, max_clip_s=None, trim_start_s=0, trim_end_s=0,
                        keyframes=keyframes, keyframe_split_s=1.0)
    assert spans == [(0, 266), (266, 300), (300, 400)]
    # within the tolerance (or starting on a keyframe) nothing changes
    assert scene_spans(0, 400, [280], fps=25.0, max_clip_s=None, trim_start_s=0, trim_end_s=0,
                       keyframes=keyframes, keyframe_split_s=1.0) == [(0, 280), (280, 400)]
    assert scene_spans(0, 400, [250], fps=25.0, max_clip_s=None, trim_start_s=0, trim_end_s=0,
                       keyframes=keyframes, keyframe_split_s=1.0) == [(0, 250), (250, 400)]


def test_recipe_sets_keyframe_split_only_for_copy_cuts():
    from soraprep.curate.recipe import load_recipe

    assert load_recipe().stage_kwargs("split")["keyframe_split_s"] == 1.0
    for mode in ("exact", "none"):
        assert "keyframe_split_s" not in load_recipe().with_overrides(cut={"mode": mode}).stage_kwargs("split")
