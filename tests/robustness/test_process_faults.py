"""Issue 10 (process faults): every input ends in a true row, through the CLI — no hang, no loss, no
stale result, no deleted user file.

Workers that die, outgrow the memory bound or hang are driven by the test-only ``fault`` stage of
``soraprep_fault_stages.py`` (run in a CLI subprocess that imports it; workers import it by themselves).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest
from typer.testing import CliRunner

import soraprep
from soraprep.cli import app
from soraprep.manifest import read_manifest
from soraprep.video.synth import Shot, make_video

HERE = Path(__file__).parent
ROOT = Path(soraprep.__file__).resolve().parents[1]  # the soraprep under test, also in the subprocesses


def _video(path: Path, frames: int = 30, fps=Fraction(25)) -> Path:
    make_video(path, [Shot(frames, speed=3)], fps=fps, width=160, height=144)
    return path


def _fault_cli(args: list[str], timeout: float = 120, **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    """``soraprep curate ARGS`` in a subprocess where the ``fault`` stage is registered."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(HERE), str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    cmd = [sys.executable, "-c", "import soraprep_fault_stages; from soraprep.cli import main; main()", "curate",
           *args]
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _fault_recipe(path: Path, actions: dict[str, str], marks: Path) -> Path:
    marks.mkdir(exist_ok=True)
    path.write_text(json.dumps({"fault": {"actions": actions, "marker_dir": str(marks)}}))  # JSON is YAML
    return path


def _by_video(out: Path) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for r in read_manifest(out / "manifest.parquet"):
        rows.setdefault(Path(r["source"]).stem, []).append(r)
    return rows


def _curate(args: list[str]):
    return CliRunner().invoke(app, ["curate", *args, "-q", "--no-report"])


# --- item 3: a loop that depends on max_clip_s * fps; a memory bound -----------------------------------


def test_low_frame_rate_and_tiny_max_clip_end_in_rows(tmp_path):
    """1 frame / 30 s made the forced split loop forever (max_len = floor(20 s * 1/30) = 0, 23 GB)."""
    slow = tmp_path / "slow"
    _video(slow / "slow.mp4", frames=6, fps=Fraction(1, 30))
    res = _curate([str(slow), "-o", str(tmp_path / "o1"), "--max-worker-memory", "1GiB"])
    assert res.exit_code == 0, res.output
    rows = read_manifest(tmp_path / "o1" / "manifest.parquet")
    assert [(r["start_frame"], r["num_frames"], r["error"]) for r in rows] == [(i, 1, None) for i in range(6)]
    assert all("fps=" in r["filter_reason"] for r in rows)  # the fps filter (>= 1) decides, with a reason

    fast = tmp_path / "fast"
    _video(fast / "fast.mp4", frames=10)
    (tmp_path / "tiny.yaml").write_text("split: {max_clip_s: 0.001}\ncut: {mode: none}\n")
    res = _curate([str(fast), "-o", str(tmp_path / "o2"), "-r", str(tmp_path / "tiny.yaml"),
                   "--max-worker-memory", "1GiB"])
    assert res.exit_code == 0, res.output
    rows = read_manifest(tmp_path / "o2" / "manifest.parquet")
    assert [(r["start_frame"], r["end_frame"]) for r in rows] == [(i, i + 1) for i in range(10)]


# --- items 3 and 7: memory bound, worker death, time limit (local runner) ------------------------------


def test_hog_killed_worker_and_hang_become_error_rows(tmp_path):
    src = tmp_path / "in"
    for name in ("hog", "die", "once", "hang", "ok"):
        _video(src / f"{name}.mp4")
    marks = tmp_path / "marks"
    recipe = _fault_recipe(tmp_path / "faults.yaml", {"hog.mp4": "alloc", "die.mp4": "die", "once.mp4": "die_once",
                                                      "hang.mp4": "hang"}, marks)
    out = tmp_path / "out"
    t0 = time.monotonic()
    res = _fault_cli([str(src), "-o", str(out), "-r", str(recipe), "-w", "2", "-q", "--no-report",
                      "--max-worker-memory", "600MiB", "--unit-timeout", "15"])  # generous: 2 busy cores
    wall = time.monotonic() - t0
    assert res.returncode == 1, res.stderr
    rows = _by_video(out)
    err = {v: (rs[0]["error"] or {}).get("kind") for v, rs in rows.items()}
    assert err == {"hog": "out_of_memory", "die": "worker_died", "once": None, "hang": "timeout", "ok": None}
    assert all(len(rs) == 1 for rs in rows.values())
    assert rows["hog"][0]["error"]["stage"] == rows["die"][0]["error"]["stage"] == "fault"
    assert "2 times" in rows["die"][0]["error"]["message"]
    assert rows["once"][0]["keep"] and rows["ok"][0]["keep"]  # retried once after its worker died: fine
    assert (marks / "once.mp4").exists()                      # ... and it really did die the first time
    assert wall < 120


def test_worker_died_rows_follow_a_changed_recipe_like_any_other(tmp_path):
    """A unit the supervisor commits for a dead worker carries the recipe's stage fingerprints, so a rerun with
    other thresholds treats it like every other unit (re-decided, no --force needed) and it stays a true row."""
    src = tmp_path / "in"
    for name in ("die", "ok"):
        _video(src / f"{name}.mp4")
    marks = tmp_path / "marks"
    recipe = _fault_recipe(tmp_path / "faults.yaml", {"die.mp4": "die"}, marks)
    out = tmp_path / "out"
    args = [str(src), "-o", str(out), "-q", "--no-report", "--max-worker-memory", "1GiB"]
    assert _fault_cli([*args, "-r", str(recipe)]).returncode == 1
    import pyarrow.parquet as pq

    metas = [pq.read_schema(p).metadata for p in (out / ".soraprep" / "units").glob("*.parquet")]
    assert len(metas) == 2 and all(b"soraprep.fingerprints" in m for m in metas)
    stricter = json.loads(recipe.read_text()) | {"filter": {"sharpness": {"min": 1e9}}}
    recipe.write_text(json.dumps(stricter))
    res = _fault_cli([*args, "-r", str(recipe)])
    assert res.returncode == 1, res.stderr[-2000:]  # not 2 ("analysed with other settings ... --force")
    rows = _by_video(out)
    assert rows["die"][0]["error"]["kind"] == "worker_died"
    assert not rows["ok"][0]["keep"] and "sharpness" in rows["ok"][0]["filter_reason"]


# --- item 7 on Ray: a unit that kills its worker every time ends as a row and the run ends -------------


def test_ray_runner_survives_killed_workers_and_actors(tmp_path):
    """Ray restarts a dead actor and retries its task forever by default: a unit that kills its actor
    every time must still end as a row, and the run must end."""
    pytest.importorskip("ray", reason="the Ray runner is tested where the [ray] extra is installed")
    src = tmp_path / "in"
    for name in ("actor", "once", "ok"):
        _video(src / f"{name}.mp4")
    marks = tmp_path / "marks"
    recipe = _fault_recipe(tmp_path / "faults.yaml", {"actor.mp4": "kill_parent", "once.mp4": "die_once"}, marks)
    out = tmp_path / "out"
    res = _fault_cli([str(src), "-o", str(out), "-r", str(recipe), "-w", "2", "-q", "--no-report",
                      "--runner", "ray"], timeout=240)
    assert res.returncode == 1, res.stderr[-3000:]
    rows = _by_video(out)
    assert {v: (rs[0]["error"] or {}).get("kind") for v, rs in rows.items()} == {
        "actor": "worker_died", "once": None, "ok": None}
    assert rows["once"][0]["keep"] and rows["ok"][0]["keep"]  # its worker died once, inside the actor
    assert (marks / "once.mp4").exists()


# --- item 9: one run per OUT; a killed run's lock is taken over; its workers die with it ---------------


def test_second_run_on_busy_out_exits_2_then_stale_lock_is_taken_over(tmp_path):
    src = tmp_path / "in"
    for name in ("hang", "ok"):
        _video(src / f"{name}.mp4")
    marks = tmp_path / "marks"
    recipe = _fault_recipe(tmp_path / "faults.yaml", {"hang.mp4": "hang_once"}, marks)
    out = tmp_path / "out"
    first = _fault_cli([str(src), "-o", str(out), "-r", str(recipe), "-q", "--no-report"], popen=True)
    lock = out / ".soraprep" / "lock"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not lock.exists():
            time.sleep(0.05)
        assert json.loads(lock.read_text())["pid"] == first.pid
        second = _curate([str(src), "-o", str(out)])
        assert second.exit_code == 2
        assert f"in use by pid {first.pid} on host {socket.gethostname()}" in " ".join(second.output.split())
        # the first run's worker is now stuck in the `hang` stage; kill -9 the run, as a user would
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(marks.glob("hang-pid-*")):
            time.sleep(0.05)
        worker = int(next(marks.glob("hang-pid-*")).name.rsplit("-", 1)[1])
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{worker}").exists():
        time.sleep(0.05)
    if sys.platform.startswith("linux"):
        assert not Path(f"/proc/{worker}").exists(), "a killed run's worker must die with it"
    assert lock.exists()  # left behind by the killed run: stale
    third = _fault_cli([str(src), "-o", str(out), "-r", str(recipe), "-q", "--no-report"])
    assert third.returncode == 0, third.stderr
    rows = _by_video(out)
    assert rows["hang"][0]["keep"] and rows["ok"][0]["keep"]
    assert not lock.exists()  # released at the end


# --- item 8: the start-up clean-up deletes only soraprep's own temp files -----------------------------


def test_user_files_in_out_survive_and_foreign_host_lock_is_explained(tmp_path):
    src = tmp_path / "in"
    _video(src / "a.mp4")
    out = tmp_path / "out"
    user = [".env.tmp.bak", "notes/.template.tmpl", ".partial-results.csv", "clips/mine/.partial-x.mp4",
            ".manifest.parquet.tmp1"]
    for rel in user:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("user data")
    stale_tmp = out / "clips" / "a" / ".soraprep-tmp-999999-a-0000.mp4"  # a killed run's half-written clip
    stale_tmp.parent.mkdir(parents=True)
    stale_tmp.write_bytes(b"half")
    lock = out / ".soraprep" / "lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": 2 ** 22 + 7, "host": "render-node-7", "since": "yesterday"}))
    res = _curate([str(src), "-o", str(out)])
    assert res.exit_code == 2
    msg = " ".join(res.output.split())
    assert "in use by pid 4194311 on host render-node-7" in msg and str(lock) in msg.replace(" ", "")
    res = CliRunner().invoke(app, ["curate", "--rethreshold", str(out)])  # re-thresholding writes OUT too
    assert res.exit_code == 2 and "in use by pid 4194311" in " ".join(res.output.split())
    res = _curate([str(src), "-o", str(tmp_path / "other"), "--max-worker-memory", "lots"])
    assert res.exit_code == 2 and "--max-worker-memory" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "other").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "a minute ago"}))
    res = _curate([str(src), "-o", str(out)])  # a dead pid on this host: stale, taken over
    assert res.exit_code == 0, res.output
    for rel in user:
        assert (out / rel).read_text() == "user data", rel
    assert not stale_tmp.exists() and not lock.exists()
    assert [r["keep"] for r in read_manifest(out / "manifest.parquet")] == [True]


# --- item 9: an OUT inside the input folder is not re-ingested ---------------------------------------


def test_out_inside_input_and_other_runs_are_not_reingested(tmp_path):
    src = tmp_path / "in"
    _video(src / "a.mp4")
    other = src / "older_run"  # another soraprep run's OUT inside the input folder: outputs, not inputs
    (other / ".soraprep").mkdir(parents=True)
    _video(other / "clips" / "x" / "x-0000.mp4")
    out = src / "out"
    first = _curate([str(src), "-o", str(out)])
    assert first.exit_code == 0, first.output
    rows = read_manifest(out / "manifest.parquet")
    assert [Path(r["source"]).name for r in rows] == ["a.mp4"]
    again = _curate([str(src), "-o", str(out)])  # was 3 -> 6 -> 9 rows: its own clips came back as inputs
    assert again.exit_code == 0, again.output
    assert read_manifest(out / "manifest.parquet") == rows
    for bad in ([str(out), "-o", str(out)], [str(other), "-o", str(tmp_path / "o3")]):
        res = _curate(bad)
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
