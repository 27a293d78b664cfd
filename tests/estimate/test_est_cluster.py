"""The cluster scale model's arithmetic (soraprep/estimate/cluster.py): rates, bottlenecks, nodes, cost."""

from __future__ import annotations

import pytest

from soraprep.estimate import hardware
from soraprep.estimate.cluster import (
    NODES,
    PANDA70M,
    Node,
    StageCosts,
    Workload,
    balanced_mix,
    cpu_seconds_per_video_second,
    fleet,
    gpu_seconds_per_video_second,
    node_throughput,
    nodes_for,
)

COSTS = StageCosts(analysis_cpu_s=0.1, cut_cpu_s=0.01, ocr_cpu_s=0.2, clip_cpu_s=1.5,
                   clip_image_flops=1.5e11, clip_text_flops=1.3e10)
SCORERS = Workload("scorers", ocr=True, clip=True, text_match=True, mean_clip_s=8.0)


def test_sampled_frames_per_video_second():
    assert Workload("default").frames_per_video_s == 0  # no model stage: nothing sampled
    assert SCORERS.frames_per_video_s == pytest.approx(4 / 8)  # 8 samples in a clip, 4 used
    short = Workload("short", ocr=True, mean_clip_s=2.5)  # 2 samples at one per second
    assert short.frames_per_video_s == pytest.approx(2 / 2.5)
    tiny = Workload("tiny", ocr=True, mean_clip_s=0.5)  # still one frame per clip
    assert tiny.frames_per_video_s == pytest.approx(1 / 0.5)


def test_cpu_seconds_add_up_per_stage():
    assert cpu_seconds_per_video_second(COSTS, Workload("default"), clip_on_gpu=False) == pytest.approx(0.11)
    half = Workload("half", kept_fraction=0.5)
    assert cpu_seconds_per_video_second(COSTS, half, clip_on_gpu=False) == pytest.approx(0.105)
    on_cpu = cpu_seconds_per_video_second(COSTS, SCORERS, clip_on_gpu=False)
    on_gpu = cpu_seconds_per_video_second(COSTS, SCORERS, clip_on_gpu=True)
    assert on_gpu == pytest.approx(0.11 + 0.5 * 0.2)
    assert on_cpu == pytest.approx(on_gpu + 0.5 * 1.5)


def test_gpu_seconds_from_flops():
    peak = 1e15
    got = gpu_seconds_per_video_second(COSTS, SCORERS, peak_flops=peak, mfu=0.5)
    assert got == pytest.approx((0.5 * 1.5e11 + 1.3e10 / 8) / (peak * 0.5))
    assert gpu_seconds_per_video_second(COSTS, Workload("default"), peak_flops=peak, mfu=0.5) == 0
    with pytest.raises(ValueError, match="mfu"):
        gpu_seconds_per_video_second(COSTS, SCORERS, peak_flops=peak, mfu=0)


def test_cpu_node_rate_is_its_usable_vcpus_over_the_cost():
    node = Node("cpu", vcpus=64, price_per_hour=3.2, price_source="test", cpu_efficiency=0.75)
    t = node_throughput(node, COSTS, Workload("default"))
    assert t.video_hours_per_hour == pytest.approx(64 * 0.75 / 0.11)
    assert (t.bottleneck, t.gpu_side, t.gpu_busy, t.cpu_busy) == ("cpu", None, None, 1.0)
    assert t.usd_per_video_hour == pytest.approx(3.2 / t.video_hours_per_hour)


def test_gpu_node_names_the_slower_side():
    node = Node("g", vcpus=96, price_per_hour=10, price_source="test", gpus=8, gpu="a100-80gb")
    peak = hardware.get_gpu("a100-80gb").peak_flops("bf16")
    t = node_throughput(node, COSTS, SCORERS, mfu=0.3)
    cpu_side = 96 * 0.8 / (0.11 + 0.5 * 0.2)
    gpu_side = 8 / ((0.5 * 1.5e11 + 1.3e10 / 8) / (peak * 0.3))
    assert (t.cpu_side, t.gpu_side) == (pytest.approx(cpu_side), pytest.approx(gpu_side))
    assert t.bottleneck == "cpu" and t.video_hours_per_hour == pytest.approx(cpu_side)
    assert t.gpu_busy == pytest.approx(cpu_side / gpu_side)
    heavy = StageCosts(**{**COSTS.__dict__, "clip_image_flops": 1e16})  # a model far too big for the GPUs
    t = node_throughput(node, heavy, SCORERS, mfu=0.3)
    assert t.bottleneck == "gpu" and t.cpu_busy < 1 and t.gpu_busy == 1.0
    # the default recipe has no GPU stage: an 8-GPU node is just its CPUs
    t = node_throughput(node, COSTS, Workload("default"))
    assert t.gpu_side is None and t.video_hours_per_hour == pytest.approx(96 * 0.8 / 0.11)


def test_nodes_for_a_deadline():
    assert nodes_for(168, 1.0) == 1  # exactly one node-week
    assert nodes_for(169, 1.0) == 2
    assert nodes_for(1, 1000.0) == 1
    assert nodes_for(240, 2.0, wall_hours=24) == 5
    with pytest.raises(ValueError):
        nodes_for(1, 0)


def test_fleet_cost_is_busy_node_hours_times_price():
    node = Node("cpu", vcpus=10, price_per_hour=2.0, price_source="test", cpu_efficiency=1.0)
    t = node_throughput(node, StageCosts(analysis_cpu_s=0.1, cut_cpu_s=0.0), Workload("default"))
    assert t.video_hours_per_hour == pytest.approx(100)
    f = fleet(50_000, t, wall_hours=168)
    assert (f.nodes, f.node_hours, f.cost) == (3, pytest.approx(500), pytest.approx(1000))


def test_balanced_mix_adds_cpu_nodes_for_the_decode():
    gpu = Node("g", vcpus=10, price_per_hour=20, price_source="test", gpus=1, gpu="h100-sxm", cpu_efficiency=1.0)
    cpu = Node("c", vcpus=10, price_per_hour=1, price_source="test", cpu_efficiency=1.0)
    costs = StageCosts(analysis_cpu_s=0.1, cut_cpu_s=0.0, clip_image_flops=1e9)
    w = Workload("clip", clip=True, mean_clip_s=4.0)  # 1 frame per video-second
    peak = hardware.get_gpu("h100-sxm").peak_flops()
    gpu_rate = 1 / (1e9 / (peak * 0.3))  # video-h/h of one GPU
    hours = gpu_rate * 168 * 0.5  # half a GPU-week of work
    m = balanced_mix(hours, costs, w, gpu, cpu, mfu=0.3, wall_hours=168)
    need_cpus = hours / 168 * 0.1
    assert m.extra["gpu_nodes"] == 1 and m.extra["gpu_busy"] == pytest.approx(0.5)
    assert m.extra["cpu_nodes"] == -(-(need_cpus - 10) // 10)
    assert m.cost == pytest.approx((20 + m.extra["cpu_nodes"]) * 168)
    with pytest.raises(ValueError, match="no GPU stage"):
        balanced_mix(hours, costs, Workload("default"), gpu, cpu)


def test_inputs_fail_loud():
    with pytest.raises(ValueError, match="kept_fraction"):
        Workload("x", kept_fraction=1.5)
    with pytest.raises(ValueError, match="GPU model"):
        Node("x", vcpus=8, price_per_hour=1, price_source="t", gpus=8)
    with pytest.raises(ValueError):
        Node("x", vcpus=0, price_per_hour=1, price_source="t")


def test_presets_are_consistent():
    # Panda-70M's published totals: 70.7 M clips, 166.8 k hours -> 8.5 s per clip
    assert PANDA70M["video_hours"] * 3600 / PANDA70M["clips"] == pytest.approx(PANDA70M["mean_clip_s"], rel=0.01)
    assert NODES["cpu-64"].price_per_hour == pytest.approx(64 * 0.0446)  # estimate's per-vCPU curation price
    for n in NODES.values():
        assert n.gpu is None or n.gpu in hardware.GPUS


def test_scale_model_script_models_given_costs(tmp_path):
    """benchmarks/scale_model.py --costs: the model over recorded costs (nothing measured), as JSON."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    analysis = {"cpu_s_per_video_s": 0.1, "sampled_cpu_s_per_video_s": 0.1, "frames_per_cpu_s": 250,
                "bitrate_mbps": 1.0}
    cut = {"copy": {"cpu_s_per_clip_second": 0.02, "cpu_s_per_clip": 0.2, "clips": 1, "clip_seconds": 10}}
    measured = {"machine": {"cpu": "test", "cores": 2, "date_utc": "-", "load_1min": 0.0},
                "analysis": {f"{r}-{f}": analysis for r in ("720p", "1080p") for f in ("smooth", "grain")},
                "cut": {"720p": cut, "1080p": cut}, "ocr": {"cpu_s_per_frame": 0.2, "det_side": 320},
                "clip_l14": {"cpu_s_per_image": 1.5, "image_flops": 1.6e11, "text_flops_77_tokens": 1.3e10,
                             "params": 3e8}}
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps({"measured": measured}))
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, str(root / "benchmarks" / "scale_model.py"), "--costs", str(costs),
                          "--json", "--nodes", "cpu-64"], capture_output=True, text=True, cwd=root, check=True)
    out = json.loads(res.stdout)
    [row] = [t for t in out["throughput"] if t["resolution"] == "720p" and t["workload"] == "default"]
    assert row["video_hours_per_hour"] == pytest.approx(64 * 0.8 / 0.12)
    assert row["nodes"] == nodes_for(PANDA70M["video_hours"], 64 * 0.8 / 0.12)
    assert row["cost"] == pytest.approx(PANDA70M["video_hours"] / (64 * 0.8 / 0.12) * 64 * 0.0446)
