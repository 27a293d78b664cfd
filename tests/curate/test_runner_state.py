"""Runner state belongs to the run: two ``curate()`` calls in one process share nothing, no stage (model)
stays alive after a run returns, and the worker thread counts (OMP_NUM_THREADS, OpenCV, torch) do not
leak into the caller's process — also when the units run in this process (one worker, no limits)."""

from __future__ import annotations

import gc
import os
from fractions import Fraction

import cv2
import pytest

from soraprep.curate.analyze import AnalyzeStage
from soraprep.curate.cutting import CutStage
from soraprep.curate.pipeline import curate
from soraprep.curate.runners import local
from soraprep.curate.runners.state import WorkerState, restore_threads, set_worker_threads
from soraprep.manifest import read_manifest
from soraprep.video.synth import Shot, make_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    make_video(d / "a.mp4", [Shot(30, seed=1, speed=3), Shot(30, seed=2, speed=3)], fps=Fraction(25),
               width=192, height=144, gop=10)
    return d


def _alive(cls) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is cls)


def _settings(torch) -> tuple:
    return os.environ.get("OMP_NUM_THREADS"), cv2.getNumThreads(), torch.get_num_threads()


@pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "workers"])
def test_two_runs_in_one_process(videos, tmp_path, monkeypatch, in_process):
    torch = pytest.importorskip("torch")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cv2_before, torch_before = cv2.getNumThreads(), torch.get_num_threads()
    try:
        cv2.setNumThreads(3)
        torch.set_num_threads(2)
        before = _settings(torch)
        assert before == (None, 3, 2)
        kw = {"max_worker_memory": None} if in_process else {}   # no limits + 1 worker: units run here
        recipes = {}
        for cut in ("exact", "none"):   # two runs, two recipes: each must see its own stages
            recipes[cut] = tmp_path / f"{cut}.yaml"
            recipes[cut].write_text(f"cut: {{mode: {cut}}}\nfilter: {{motion_score: null, static_ratio: null}}\n")
        a = curate([str(videos)], tmp_path / "a", recipe=recipes["exact"], report=False, **kw)
        assert _settings(torch) == before                  # restored (in-process) or never touched (workers)
        b = curate([str(videos)], tmp_path / "b", recipe=recipes["none"], report=False, **kw)
        assert _settings(torch) == before
        rows_a = [r for r in read_manifest(a.manifest) if r.get("keep")]
        rows_b = [r for r in read_manifest(b.manifest) if r.get("keep")]
        assert rows_a and {r["cut_mode"] for r in rows_a} == {"exact"}
        assert rows_b and {r.get("cut_mode") for r in rows_b} <= {None, "none"}
        assert [(r["start_frame"], r["end_frame"]) for r in rows_a] == [(r["start_frame"], r["end_frame"])
                                                                        for r in rows_b]
        # nothing of either run stays resident: no worker state, no set-up stage
        assert not hasattr(local, "_STATE")
        assert _alive(WorkerState) == 0 and _alive(AnalyzeStage) == 0 and _alive(CutStage) == 0
    finally:
        cv2.setNumThreads(cv2_before)
        torch.set_num_threads(torch_before)


def test_worker_state_close_restores_threads_and_drops_stages(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)
        from soraprep.curate.recipe import load_recipe

        rec = load_recipe(None)
        with WorkerState.open(rec.sections, rec.source, str(tmp_path / "out")) as state:
            assert state.setup_error is None and state.stages
            assert cv2.getNumThreads() == 1 and os.environ["OMP_NUM_THREADS"] == "7"   # the user's env wins
            other = WorkerState.build(rec.sections, rec.source, str(tmp_path / "other"))
            assert other.stages[0] is not state.stages[0] and other.out != state.out   # two states, no sharing
        assert state.stages == [] and cv2.getNumThreads() == 2 and os.environ["OMP_NUM_THREADS"] == "7"
        monkeypatch.delenv("OMP_NUM_THREADS")
        saved = set_worker_threads()
        assert os.environ["OMP_NUM_THREADS"] == "1"
        restore_threads(saved)
        assert "OMP_NUM_THREADS" not in os.environ and cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)
