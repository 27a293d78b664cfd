"""The Ray Data runner produces the same manifest as the local runner (same stages, same commits)."""

import shutil

import pytest

from soraprep.curate.pipeline import curate

ray = pytest.importorskip("ray", reason="the Ray runner is tested where the [ray] extra is installed")


def test_ray_runner_matches_local(media, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("cuts.mp4", "kinds.mp4", "tree.avi"):
        shutil.copy(media[name], src / name)
    (src / "broken.mp4").write_bytes(b"nope" * 10)
    local = curate([str(src)], tmp_path / "local", workers=1, report=False)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        remote = curate([str(src)], tmp_path / "ray", workers=1, report=False, runner="ray")
    finally:
        ray.shutdown()
    assert remote.rows == local.rows
    assert remote.errors == 1 and remote.kept == local.kept > 0
    clips = sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray" / "clips").rglob("*.*"))
    assert clips == sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local" / "clips").rglob("*.*"))
