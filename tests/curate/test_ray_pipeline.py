"""The stage-level Ray pipeline on a real multi-node cluster gives the local runner's manifest rows,
schedules model stages with what they declare, and survives killed workers, a removed node and a
killed driver (see soraprep/curate/runners/ray.py)."""

from __future__ import annotations

import shutil
import threading

import pytest
import yaml

from soraprep.curate.pipeline import curate

ray = pytest.importorskip("ray", reason="the Ray runner is tested where the [ray] extra is installed")

INPUTS = ("cuts.mp4", "kinds.mp4", "tree.avi")


@pytest.fixture(scope="module")
def inputs(media, tmp_path_factory):
    src = tmp_path_factory.mktemp("ray_in")
    for name in INPUTS:
        shutil.copy(media[name], src / name)
    (src / "broken.mp4").write_bytes(b"nope" * 10)
    return src


@pytest.fixture(scope="module")
def local_default(inputs, tmp_path_factory):
    return curate([str(inputs)], tmp_path_factory.mktemp("local") / "out", workers=1, report=False)


def _clips(out):
    return sorted(str(p.relative_to(out)) for p in (out / "clips").rglob("*.*"))


def test_default_recipe_same_rows_as_local(ray_cluster, inputs, local_default, tmp_path):
    out = tmp_path / "ray"
    result = curate([str(inputs)], out, workers=1, report=False, runner="ray", ray_address=ray_cluster.address)
    assert result.rows == local_default.rows
    assert result.errors == 1 and result.kept == local_default.kept > 0
    assert _clips(out) == _clips(local_default.out)
    again = curate([str(inputs)], out, workers=1, report=False, runner="ray", ray_address=ray_cluster.address)
    assert again.rows == local_default.rows  # a rerun finds every unit committed
    # other decisions only: both runners re-decide from the stored analysis (no decode), reusing clip files
    stricter = tmp_path / "stricter.yaml"
    motion = sorted(r["motion_score"] for r in local_default.rows if r.get("keep"))
    stricter.write_text(yaml.safe_dump({"filter": {"motion_score": {"min": float(motion[len(motion) // 2])}}}))
    local_out = tmp_path / "local"
    shutil.copytree(local_default.out, local_out)
    local = curate([str(inputs)], local_out, recipe=stricter, workers=1, report=False)
    remote = curate([str(inputs)], out, recipe=stricter, workers=1, report=False, runner="ray",
                    ray_address=ray_cluster.address)
    assert remote.redone == local.redone == {"redecided": 4}  # the broken file too
    assert remote.rows == local.rows and remote.kept < local_default.kept
    assert _clips(out) == _clips(local_out)


def test_from_and_to_s3_same_rows_as_local(ray_cluster, inputs, local_default, s3_bucket, s3_server, tmp_path):
    """Ray actors on every node read sources from and commit units to a real S3 server (moto): the rows are
    the local runner's. The options travel explicitly (the nodes started before the server's env vars)."""
    from soraprep.storage import Store

    opts = {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}
    to_s3 = curate([str(inputs)], f"{s3_bucket}/ray-out", workers=1, report=False, runner="ray",
                   ray_address=ray_cluster.address, storage_options=opts)
    assert to_s3.rows == local_default.rows
    store = Store(f"{s3_bucket}/ray-out", opts)
    assert sorted(k for k in store.list("clips")) == _clips(local_default.out)
    videos = Store(f"{s3_bucket}/videos", opts)
    for p in sorted(inputs.iterdir()):
        videos.put_file(p, p.name)
    local_runner = curate([videos.root], f"{s3_bucket}/local-s3", workers=1, report=False, storage_options=opts)
    ray_runner = curate([videos.root], f"{s3_bucket}/ray-s3", workers=1, report=False, runner="ray",
                        ray_address=ray_cluster.address, storage_options=opts)
    assert ray_runner.rows == local_runner.rows and ray_runner.kept == local_default.kept
    assert all(r["source"].startswith(videos.root) for r in ray_runner.rows)
    assert sorted(Store(f"{s3_bucket}/ray-s3", opts).list("clips")) == sorted(
        Store(f"{s3_bucket}/local-s3", opts).list("clips"))


def test_units_in_windows_same_rows(ray_cluster, inputs, local_default, tmp_path, monkeypatch):
    """A run of more units than one Ray dataset takes (``WINDOW``) goes window by window: same rows."""
    from soraprep.curate.runners import ray as ray_runner

    monkeypatch.setattr(ray_runner, "WINDOW", 3)  # 4 units: two datasets
    result = curate([str(inputs)], tmp_path / "out", workers=1, report=False, runner="ray",
                    ray_address=ray_cluster.address)
    assert result.rows == local_default.rows


# ---- failures: a killed actor, a removed node, a killed driver -------------------------------------------

def _ppid(pid: int) -> int | None:
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _raylets(cluster) -> dict[int, object]:
    nodes = [cluster.head_node, *cluster.worker_nodes]
    return {n.all_processes["raylet"][0].process.pid: n for n in nodes}


def _analysis_actors(cluster) -> list[int]:
    """Pids of this cluster's Ray actor processes that run an analysis worker: the parents of a supervised
    worker (a multiprocessing spawn child) that are Ray workers started by one of the cluster's raylets."""
    import os

    raylets = _raylets(cluster)
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit() and "multiprocessing.spawn" in _cmdline(int(name)):
            parent = _ppid(int(name))
            if parent and _cmdline(parent).startswith("ray::") and _ppid(parent) in raylets:
                found.add(parent)
    return sorted(found)


def _busiest_worker_node(cluster):
    """The worker node (not the driver's head node) running the most of this run's pool actors, if any."""
    import os

    raylets = {pid: n for pid, n in _raylets(cluster).items() if n is not cluster.head_node}
    count = dict.fromkeys(raylets, 0)
    for name in os.listdir("/proc"):
        if name.isdigit() and "MapBatches(" in _cmdline(int(name)) and _ppid(int(name)) in raylets:
            count[_ppid(int(name))] += 1
    busiest = max(count, key=count.get)
    return raylets[busiest] if count[busiest] else None


def _run_in_thread(fn):
    box: dict = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def _wait_for(cond, timeout: float = 60.0):
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out waiting for the run to get there")


def _finish(t, box):
    t.join(120)
    assert not t.is_alive(), "the run did not end"
    if "error" in box:
        raise box["error"]
    return box["result"]


def test_killed_analysis_actor_same_rows(ray_cluster, inputs, local_default, tmp_path):
    import os
    import signal

    t, box = _run_in_thread(lambda: curate([str(inputs)], tmp_path / "ray", workers=1, report=False,
                                           runner="ray", ray_address=ray_cluster.address))
    victim = _wait_for(lambda: _analysis_actors(ray_cluster))[0]
    assert t.is_alive()
    os.kill(victim, signal.SIGKILL)  # the actor process itself (its supervised worker dies with it)
    result = _finish(t, box)
    assert result.rows == local_default.rows
    assert victim not in _analysis_actors(ray_cluster)


def test_removed_node_same_rows(ray_cluster, inputs, local_default, tmp_path):
    t, box = _run_in_thread(lambda: curate([str(inputs)], tmp_path / "ray", workers=1, report=False,
                                           runner="ray", ray_address=ray_cluster.address))
    _wait_for(lambda: _analysis_actors(ray_cluster))
    node = _wait_for(lambda: _busiest_worker_node(ray_cluster))
    assert t.is_alive()
    ray_cluster.remove_node(node)  # the node's raylet, object store and workers go
    try:
        result = _finish(t, box)
    finally:
        ray_cluster.add_node(num_cpus=1)  # back to three nodes for the next test
    assert result.rows == local_default.rows
    assert _clips(result.out) == _clips(local_default.out)


def test_killed_driver_rerun_resumes(ray_cluster, inputs, local_default, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "ray"
    units = out / ".soraprep" / "units"
    cmd = [sys.executable, "-m", "soraprep.cli", "curate", str(inputs), "-o", str(out), "--runner", "ray",
           "--ray-address", ray_cluster.address, "--workers", "1", "--no-report", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    try:
        _wait_for(lambda: units.is_dir() and any(units.glob("*.parquet")), timeout=90)
        committed = len(list(units.glob("*.parquet")))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert committed < len(INPUTS) + 1
    result = curate([str(inputs)], out, workers=1, report=False, runner="ray", ray_address=ray_cluster.address)
    assert result.rows == local_default.rows
    assert _clips(out) == _clips(local_default.out)


# ---- model stages get their own pools, with what they declare ----------------------------------------

def test_model_stage_pools_same_rows_as_local_and_gpus_asked_for(ray_cluster, inputs, tmp_path):
    """ocr (a real model, rapidocr's weights) and gpu_probe (test-only: declares Resources(gpus=0.5), records
    what Ray gave its actor) each get a pool; the recipe's resources: override what gpu_probe declares."""
    pytest.importorskip("rapidocr")
    import ray_stages  # noqa: F401 - registers gpu_probe

    from soraprep.curate.recipe import load_recipe
    from soraprep.curate.runners.ray import pools_for

    recipe = tmp_path / "models.yaml"
    recipe.write_text(yaml.safe_dump({"ocr": {"frames": 2}, "gpu_probe": {}, "cut": {"mode": "none"},
                                      "resources": {"ocr": {"cpus": 0.5, "batch_size": 3},
                                                    "gpu_probe": {"gpus": 0.25, "batch_size": 9}}}))
    pools = {p.name: p for p in pools_for(load_recipe(recipe), tmp_path, 1)}
    assert list(pools) == ["analysis", "gpu_probe", "ocr", "decision"]  # recipe order (safe_dump sorts)
    assert (pools["gpu_probe"].gpus, pools["gpu_probe"].cpus, pools["gpu_probe"].batch_size) == (0.25, 0.25, 9)
    assert pools["gpu_probe"].units_per_batch == 2  # clips of two videos flattened into one call
    assert pools["gpu_probe"].remote_args()["num_gpus"] == 0.25 and "num_gpus" not in pools["ocr"].remote_args()
    gpu_node = ray_cluster.add_node(num_cpus=1, num_gpus=1)  # a (fake) GPU node: Ray only counts it
    try:
        ray_cluster.wait_for_nodes()
        remote = curate([str(inputs)], tmp_path / "ray", recipe=recipe, workers=1, report=False, runner="ray",
                        ray_address=ray_cluster.address)
    finally:
        ray_cluster.remove_node(gpu_node)
    local = curate([str(inputs)], tmp_path / "local", recipe=recipe, workers=1, report=False)
    ok = [r for r in remote.rows if not r.get("error")]
    assert ok and all(r["ocr_boxes"] is not None and r["probe_samples"] > 0 for r in ok)
    assert {r["probe_gpus"] for r in ok} == {0.25}  # what the actor was given: the override, not 0.5
    assert {r["probe_gpus"] for r in local.rows if not r.get("error")} == {0.0}
    strip = [{k: v for k, v in r.items() if k != "probe_gpus"} for r in remote.rows]
    assert strip == [{k: v for k, v in r.items() if k != "probe_gpus"} for r in local.rows]


def test_unit_that_kills_its_actor_every_time_ends_as_worker_died(ray_cluster, inputs, local_default, tmp_path,
                                                                  monkeypatch):
    import ray_stages  # noqa: F401 - registers actor_killer

    from soraprep.curate.runners import ray as ray_runner

    monkeypatch.setattr(ray_runner, "ACTOR_RETRIES", 1)  # two rounds of one try each: a bounded total
    monkeypatch.setattr(ray_runner, "TASK_RETRIES", 0)
    src = tmp_path / "in"
    shutil.copytree(inputs, src)
    shutil.copy(src / "cuts.mp4", src / "poison.mp4")
    recipe = tmp_path / "killer.yaml"
    recipe.write_text(yaml.safe_dump({"actor_killer": {}, "resources": {"actor_killer": {"cpus": 0.5}}}))
    result = curate([str(src)], tmp_path / "ray", recipe=recipe, workers=1, report=False, runner="ray",
                    ray_address=ray_cluster.address)
    dead = [r for r in result.rows if r["clip_id"].startswith("poison")]
    assert len(dead) == 1 and dead[0]["error"]["kind"] == "worker_died"
    assert dead[0]["error"]["stage"] == "runner"
    others = [r for r in result.rows if not r["clip_id"].startswith("poison")]
    assert len(others) == len(local_default.rows)  # (other clip ids: the inputs are in another folder)
    assert sum(1 for r in others if r.get("error")) == local_default.errors
    assert sum(1 for r in others if r.get("keep")) == local_default.kept


def test_a_decision_worker_that_dies_makes_one_worker_died_row_naming_its_stage(ray_cluster, inputs, local_default,
                                                                                tmp_path):
    """Decision stages run in the decision actor's supervised worker: a stage that kills that process (a
    crashing encoder) is retried once, then the video is one ``worker_died`` row naming the stage, and the
    actor lives on for the other videos (no Ray retry round is spent)."""
    import ray_stages  # noqa: F401 - registers actor_killer

    src = tmp_path / "in"
    shutil.copytree(inputs, src)
    shutil.copy(src / "cuts.mp4", src / "poison.mp4")
    recipe = tmp_path / "killer.yaml"
    recipe.write_text(yaml.safe_dump({"actor_killer": {"kill_parent": False},
                                      "resources": {"actor_killer": {"cpus": 0.5}}}))
    result = curate([str(src)], tmp_path / "ray", recipe=recipe, workers=1, report=False, runner="ray",
                    ray_address=ray_cluster.address)
    dead = [r for r in result.rows if r["clip_id"].startswith("poison")]
    assert len(dead) == 1 and dead[0]["error"]["kind"] == "worker_died"
    assert dead[0]["error"]["stage"] == "actor_killer"
    others = [r for r in result.rows if not r["clip_id"].startswith("poison")]
    assert sum(1 for r in others if r.get("keep")) == local_default.kept
