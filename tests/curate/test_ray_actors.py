"""The Ray runner's model-stage actor, called directly (it is a plain class; Ray only hosts it): clips of
several videos flattened into the stage's batch_size, regrouped per video; a stage that raises makes
error rows of its batch only; one that cannot set up stops the run."""

from __future__ import annotations

import numpy as np
import ray_stages  # noqa: F401 - registers flaky_scorer

from soraprep.curate.runners.ray_actors import DecisionActor, ModelActor, decode, encode


def _item(key: str, clips: list[str], **extra) -> dict:
    unit = {"_key": key, "source": f"/videos/{key}.mp4"}
    rows = [dict(unit, clip_id=c, _samples=[(0, b"jpeg")]) for c in clips]
    return {"unit": unit, "rows": rows, "timings": {}, "reused": False, **extra}


def _call(actor, items: list[dict]) -> list[dict]:
    col = np.empty(len(items), dtype=object)
    col[:] = [encode(i) for i in items]
    return [decode(b) for b in actor(batch={"item": col})["item"]]


def test_clips_of_several_videos_share_stage_batches_and_are_regrouped(tmp_path):
    actor = ModelActor({"flaky_scorer": {}}, "test", str(tmp_path), "flaky_scorer", batch_size=3, modules=[])
    items = [_item("a", ["a-0", "a-1"]), _item("b", ["b-0", "b-1", "b-2", "b-3"]), _item("c", ["c-0"])]
    out = _call(actor, items)
    assert [[r["clip_id"] for r in i["rows"]] for i in out] == [["a-0", "a-1"], ["b-0", "b-1", "b-2", "b-3"],
                                                               ["c-0"]]
    sizes = [r["called_with"] for i in out for r in i["rows"]]
    assert sizes == [3, 3, 3, 3, 3, 3, 1]  # 7 clips: batches of 3, 3, 1 across video boundaries
    assert all(i["timings"]["flaky_scorer"] >= 0 for i in out)


def test_a_stage_exception_makes_error_rows_of_its_batch_only(tmp_path):
    actor = ModelActor({"flaky_scorer": {}}, "test", str(tmp_path), "flaky_scorer", batch_size=2, modules=[])
    stored = _item("s", ["s-0"], reused=True)  # analysis read from storage: no model stage runs again
    failed = {"unit": {"_key": "f"}, "rows": None, "error": ["analyze", "timeout", "too slow"]}
    items = [_item("a", ["a-0", "a-bad"]), _item("b", ["b-0", "b-1"]), stored, failed]
    a, b, s, f = _call(actor, items)
    assert [r["error"]["kind"] for r in a["rows"]] == ["internal_error", "internal_error"]
    assert a["rows"][0]["error"] == {"stage": "flaky_scorer", "kind": "internal_error",
                                     "message": "RuntimeError: CUDA error: device-side assert"}
    assert [r.get("error") for r in b["rows"]] == [None, None] and [r["called_with"] for r in b["rows"]] == [2, 2]
    assert "called_with" not in s["rows"][0] and f == failed


def test_a_stage_that_cannot_set_up_stops_the_run(tmp_path):
    sections = {"flaky_scorer": {"fail_setup": True}}
    actor = ModelActor(sections, "test", str(tmp_path), "flaky_scorer", batch_size=2, modules=[])
    (item,) = _call(actor, [_item("a", ["a-0"])])
    assert item["fatal"] == "stage 'flaky_scorer' failed to set up: RuntimeError: weights not found"
    summary = DecisionActor(sections, "test", str(tmp_path), ["filter", "cut", "bucket"], [])(
        batch={"item": np.array([encode(item)], dtype=object)})
    assert list(summary["fatal"]) == [item["fatal"]] and list(summary["key"]) == ["a"]
    assert not (tmp_path / ".soraprep").exists()  # nothing committed
