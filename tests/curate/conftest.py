"""A real multi-node Ray cluster on this machine for the Ray runner tests (module-scoped: one per module)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_cluster():
    """A head node and two worker nodes, one CPU each (``ray.cluster_utils.Cluster``: separate raylets
    and object stores, like a real cluster); this process is connected to it as the driver."""
    ray = pytest.importorskip("ray", reason="the Ray runner is tested where the [ray] extra is installed")
    from ray.cluster_utils import Cluster

    saved = os.environ.get("PYTHONPATH")
    # the nodes' workers import this worktree's soraprep and the test-only stages next to this file
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(Path(__file__).parent)] + ([saved] if saved else []))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
