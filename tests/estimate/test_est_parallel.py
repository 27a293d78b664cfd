"""Parallel layouts: memory sharding, constraints, communication volumes, the layout recommender."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from soraprep.cli import app
from soraprep.estimate.comm import Links, all_gather_s, all_reduce_s, all_to_all_s, step_time
from soraprep.estimate.flops import Activations, MacTerm, ModelCount, ParamGroup, count_model
from soraprep.estimate.hardware import INTERCONNECTS, get_gpu, get_links
from soraprep.estimate.memory import GIB, estimate_memory
from soraprep.estimate.parallel import TIE, Geometry, Layout, check_layout, layout_memory, plan_layout
from soraprep.estimate.plan import estimate
from soraprep.models.config import PRESETS, VideoDiTConfig

M = 1_000_000
BIG = 10**15  # capacity large enough that everything fits


def toy(tokens: int = 1024) -> ModelCount:
    """8 M block parameters over 4 layers (8 heads, width 64), 1 M outside the blocks; round activations."""
    cfg = VideoDiTConfig(hidden_size=64, depth=4, num_heads=8)
    params = (ParamGroup("blocks.attn.qkv", 8 * M, "per_token"), ParamGroup("x_embedder", M, "per_token"))
    terms = (MacTerm("blocks.attn.qkv", "linear", 10**9), MacTerm("blocks.attn.core", "attention", 10**9),
             MacTerm("blocks.cross_attn.core", "attention", 10**8))
    act = Activations(none=10 * M, selective=6 * M, full_stored=M, full_working=M // 2)
    return ModelCount("toy", cfg, (4, 4, 64, 64), tokens, 0, params, terms, act)


def mem(layout: Layout, **kw):
    return layout_memory(toy(), layout, capacity_bytes=BIG, overhead_bytes=0, **kw)


# ---- memory ----------------------------------------------------------------------------------------


def test_tp_pp_zero1_sharding_by_hand():
    m = mem(Layout(tp=2, pp=2, dp=2, zero=1, recompute="none", micro_batch=1, grad_accum=4))
    p = 8 * M // 4 + M  # block params split over tp x pp, the rest whole on the first stage
    assert (m.weights, m.gradients, m.optimizer, m.ema) == (2 * p, 2 * p, 12 * p // 2, 4 * p)
    # 1F1B: min(pp, micro-batches) = 2 in flight, each with 1/pp of the layers, split over tp
    assert m.activations == 10 * M * 2 // (2 * 2) * 2
    assert m.gathered == 0
    one = mem(Layout(tp=2, pp=2, dp=2, zero=1, micro_batch=1, grad_accum=1))
    assert one.activations == m.activations // 2  # a single micro-batch: one in flight


def test_sp_zero3_full_recompute_by_hand():
    m = mem(Layout(sp=4, sp_kind="ulysses", dp=2, zero=3, recompute="full", micro_batch=3, grad_accum=1))
    p = 9 * M  # ZeRO-3 shards over dp x sp = 8 ranks
    assert (m.weights, m.gradients, m.optimizer, m.ema) == (2 * p // 8, 2 * p // 8, 12 * p // 8, 4 * p // 8)
    assert m.gathered == (8 * M // 4) * (2 * 2 + 2)  # 2 blocks' bf16 weights + 1 block's gradients
    assert m.activation_per_sample == (M // 4 + (M // 2) // 4) * 2  # stored + working, sequence split by 4
    assert m.activations == 3 * m.activation_per_sample
    assert m.total == m.weights + m.gradients + m.optimizer + m.ema + m.activations + m.gathered


@pytest.mark.parametrize("zero", [0, 1, 2])
@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_pure_data_parallel_equals_the_plain_memory_model(zero, recompute):
    c = count_model(PRESETS["STDiT-XL/2"])
    lo = Layout(dp=8, zero=zero, recompute=recompute, micro_batch=2)
    new = layout_memory(c, lo, capacity_bytes=80 * GIB)
    old = estimate_memory(params=c.params_total, trainable_params=c.params_trainable,
                          activation_elements=c.activations.elements(recompute), capacity_bytes=80 * GIB,
                          micro_batch=2, zero=zero, num_gpus=8)
    assert new == old


# ---- constraints -----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout,match", [
    (Layout(tp=3, dp=2), "--tp 3 must divide the 8 attention heads: use --tp 1, 2, 4, 8"),
    (Layout(sp=16, dp=1), "Ulysses --sp 16 must divide the 8 heads per tensor-parallel rank.*--sp-kind ring"),
    (Layout(tp=4, sp=4, dp=1), "Ulysses --sp 4 must divide the 2 heads"),
    (Layout(sp=3, sp_kind="ring", dp=2), "1024 tokens is not divisible by --sp 3"),
    (Layout(pp=3, dp=2), "--pp 3 must divide the 4 layers: use --pp 1, 2, 4"),
    (Layout(pp=2, dp=3, zero=3), "ZeRO stage 0 or 1"),
    (Layout(tp=16, dp=1), "must divide the 8 attention heads"),
    (Layout(sp=2, sp_kind="zigzag", dp=3), "--sp-kind"),
])
def test_bad_layouts_name_the_fix(layout, match):
    with pytest.raises(ValueError, match=match):
        check_layout(Geometry.of(toy()), layout, num_gpus=layout.num_gpus)


def test_tp_across_nodes_and_gpu_count():
    geo = Geometry.of(toy())
    with pytest.raises(ValueError, match="spans nodes"):
        check_layout(geo, Layout(tp=8, dp=1), num_gpus=8, gpus_per_node=4)
    with pytest.raises(ValueError, match="does not divide --num-gpus 12"):
        check_layout(geo, Layout(tp=8, dp=1), num_gpus=12)
    with pytest.raises(ValueError, match="but --num-gpus is 6: use dp = 3"):
        check_layout(geo, Layout(tp=2, dp=2), num_gpus=6)
    with pytest.raises(ValueError, match="does not divide --num-gpus 12"):
        estimate(model="STDiT-S/2", num_gpus=12, tp=8)


# ---- communication -----------------------------------------------------------------------------------


def test_collective_closed_forms():
    assert all_reduce_s(8e9, 8, 1e9) == pytest.approx(2 * 7 / 8 * 8)
    assert all_gather_s(8e9, 4, 2e9) == pytest.approx(3 / 4 * 4)
    assert all_to_all_s(8e9, 2, 1e9) == pytest.approx(4)
    assert all_reduce_s(8e9, 1, 1e9) == all_gather_s(8e9, 1, 1e9) == 0


def _links(gpn=8):
    return Links(INTERCONNECTS["nvlink4"], INTERCONNECTS["ib-ndr"], gpn)


def _time(layout, **kw):
    c = toy()
    return step_time(c, layout, Geometry.of(c), peak_flops=1e15, mfu=0.5, links=kw.pop("links", _links()), **kw)


def test_tensor_and_sequence_parallel_volumes():
    nv = INTERCONNECTS["nvlink4"].bandwidth()
    msg = 2 * 1024 * 64 * 2  # micro-batch 2 x 1024 tokens x width 64 x 2 bytes
    t = _time(Layout(tp=4, dp=1, micro_batch=2, grad_accum=3))
    # 3 micro-batches x 4 layers x 3 sub-layers (self-attn, cross-attn, MLP) x (forward + backward)
    assert t.bytes_per_gpu["tp"] == pytest.approx(3 * 4 * 3 * 2 * (2 * 3 / 4 * msg))
    assert t.comm_s["tp"] == pytest.approx(3 * 4 * 3 * 2 * all_reduce_s(msg, 4, nv))
    full = _time(Layout(tp=4, dp=1, micro_batch=2, grad_accum=3, recompute="full"))
    assert full.comm_s["tp"] == pytest.approx(t.comm_s["tp"] * 3 / 2)  # the recompute repeats the forward
    u = _time(Layout(sp=4, dp=1, micro_batch=2))
    shard = msg / 4  # each rank holds a quarter of the sequence
    # 4 all-to-alls (q, k, v, out) per self-attention per pass; the cross-attention needs none
    assert u.bytes_per_gpu["sp"] == pytest.approx(4 * 1 * 2 * 4 * (3 / 4) * shard)
    r = _time(Layout(sp=4, sp_kind="ring", dp=1, micro_batch=2))
    # 3 rounds of K, V forward; K, V, dK, dV backward
    assert r.bytes_per_gpu["sp"] == pytest.approx(4 * 3 * shard * (2 + 4))
    assert r.comm_s["sp"] == pytest.approx(r.bytes_per_gpu["sp"] / nv)
    assert r.exposed_s["sp"] <= r.comm_s["sp"]


def test_data_parallel_and_pipeline_volumes():
    t2 = _time(Layout(dp=8, zero=2))
    t3 = _time(Layout(dp=8, zero=3))
    psi = 9 * M * 2
    assert t2.bytes_per_gpu["dp"] == pytest.approx(2 * 7 / 8 * psi)  # ring all-reduce of bf16 gradients
    assert t3.bytes_per_gpu["dp"] == pytest.approx(1.5 * t2.bytes_per_gpu["dp"])  # ZeRO paper: 3 psi vs 2 psi
    assert t3.comm_s["dp"] == pytest.approx(1.5 * t2.comm_s["dp"])
    # ZeRO-2 keeps a gradient shard only: a reduce-scatter per micro-batch, one weight all-gather per step
    t2m = _time(Layout(dp=8, zero=2, grad_accum=4))
    assert t2m.bytes_per_gpu["dp"] == pytest.approx(7 / 8 * 9 * M * (4 * 2 + 2))
    t1m = _time(Layout(dp=8, zero=1, grad_accum=4))
    assert t1m.bytes_per_gpu["dp"] == pytest.approx(t2.bytes_per_gpu["dp"])  # once per step, like DDP
    assert t1m.exposed_s["dp"] >= all_gather_s(9 * M * 2, 8, INTERCONNECTS["nvlink4"].bandwidth())
    # 16 GPUs on nodes of 8: the data-parallel ring crosses the network
    t16 = _time(Layout(dp=16, zero=2), links=_links(8))
    t16_one_node = _time(Layout(dp=16, zero=2), links=_links(16))
    assert t16.comm_s["dp"] / t16_one_node.comm_s["dp"] == pytest.approx(450 / 50)
    p = _time(Layout(pp=2, dp=1, micro_batch=1, grad_accum=4))
    assert p.bubble_s == pytest.approx(p.compute_s * (2 - 1) / 4)
    assert p.bytes_per_gpu["pp"] == pytest.approx(2 * 4 * 1024 * 64 * 2)  # activation + gradient per micro-batch


def test_interconnect_presets_and_overrides():
    intra, inter = get_links("h100")
    assert (intra.name, inter.name, intra.gbytes_per_s, inter.gbytes_per_s) == ("nvlink4", "ib-ndr", 450, 50)
    assert get_links("a100")[0].gbytes_per_s == 300 and get_links("a100")[1].name == "ib-hdr"
    assert [x.name for x in get_links("h100", "pcie5,roce-200")] == ["pcie5", "roce-200"]
    assert get_links("h200", "ib-hdr")[0].name == "nvlink4"
    assert all(i.source for i in INTERCONNECTS.values())
    with pytest.raises(ValueError, match="unknown interconnect 'ib-xdr'"):
        get_links("h100", "ib-xdr")


# ---- recommender -------------------------------------------------------------------------------------

#: A ~14B video DiT (width 5120, 40 heads, MLP 13824 as Wan2.1-14B; 28 blocks of per-block adaLN)
WAN_LIKE = VideoDiTConfig(hidden_size=5120, depth=28, num_heads=40, mlp_ratio=2.7, text_len=512, in_channels=16)
SHAPE = dict(frames=129, height=720, width=1280, vae_compression=(4, 8, 8))


def test_14b_at_720p_129_frames_fits_only_with_a_parallel_layout():
    plain = estimate(config=WAN_LIKE, **SHAPE, gpu="h100", num_gpus=64)
    assert plain.to_dict()["params"] > 14e9 and plain.largest.count.tokens == 33 * 45 * 80
    assert not plain.memory.fits  # pure data parallel, ZeRO 0, no recompute: hundreds of GiB
    auto = estimate(config=WAN_LIKE, **SHAPE, gpu="h100", num_gpus=64, layout="auto", mfu=0.4)  # as plan_layout's
    d = auto.to_dict()
    lay = d["layout"]
    assert d["fits"] and lay["fits"] and lay["recommended"]
    assert d["memory_per_gpu_bytes"] <= get_gpu("h100").memory_bytes
    best = lay["layout"]
    assert best["tp"] * best["sp"] * best["pp"] > 1  # needs model/sequence parallelism to be the cheapest
    assert d["settings"]["recompute"] == best["recompute"] and d["settings"]["sp"] == best["sp"]
    # pure DP fits only with FSDP + full recompute (4/3 of the compute): the recommendation is faster
    dp_only = plan_layout(auto.largest.count, gpu="h100", num_gpus=64, tp=1, sp=1, pp=1)
    assert dp_only.best is not None and dp_only.best.layout.recompute == "full"
    assert lay["seconds_per_sample"] < dp_only.best.seconds_per_sample


def test_recommender_is_monotone_in_memory_and_bandwidth():
    c = count_model(WAN_LIKE.replace(input_size=(33, 90, 160)))
    prev_time, prev_fit = float("inf"), -1
    for gib in (40, 80, 141, 192):
        plan = plan_layout(c, gpu=get_gpu("h100", memory_gib=gib), num_gpus=32)
        assert plan.best is not None and plan.best.fits
        fastest = min(x.seconds_per_sample for x in plan.fitting)
        assert fastest <= prev_time  # more memory: never a slower fastest layout
        assert plan.best.seconds_per_sample <= fastest * (1 + TIE)  # the pick is a near-tie of it
        assert len(plan.fitting) >= prev_fit
        prev_time, prev_fit = fastest, len(plan.fitting)
    slow = plan_layout(c, gpu="h100", num_gpus=32, interconnect="pcie4,eth-100")
    fast = plan_layout(c, gpu="h100", num_gpus=32)
    assert fast.fitting[0].seconds_per_sample <= slow.fitting[0].seconds_per_sample * (1 + TIE)
    assert min(x.time.step_s for x in fast.fitting) <= min(x.time.step_s for x in slow.fitting)
    assert [x.fits for x in plan_layout(c, gpu=get_gpu("h100", memory_gib=10), num_gpus=8).candidates[:1]] == [False]


def test_cli_layout_flags_and_json_block():
    runner = CliRunner()
    args = ["estimate", "--model", "STDiT-S/2", "--frames", "16", "--height", "256", "--width", "256",
            "--num-gpus", "16", "--steps", "10", "--batch", "32"]
    r = runner.invoke(app, [*args, "--tp", "2", "--sp", "2", "--sp-kind", "ring", "--gpus-per-node", "4",
                            "--interconnect", "nvlink3,ib-hdr", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert {"params", "memory_per_gpu_bytes", "fits", "gpu_hours", "memory"} <= set(d)
    lay = d["layout"]
    assert lay["layout"]["dp"] == 4 and lay["layout"]["sp_kind"] == "ring" and not lay["recommended"]
    assert lay["links"]["intra_node"]["name"] == "nvlink3" and lay["links"]["gpus_per_node"] == 4
    assert lay["gpu_hours_with_comm"] >= d["gpu_hours"] * 0.999
    r = runner.invoke(app, [*args, "--layout", "auto"])
    assert r.exit_code == 0 and "layouts fit" in r.stdout
    bad = runner.invoke(app, [*args, "--tp", "4", "--json"])
    assert bad.exit_code == 2 and bad.stdout == "" and "--tp 4 must divide the 6 attention heads" in bad.stderr


def test_geometry_reads_other_block_naming_schemes():
    """Joint-attention counters name their blocks 'double.*' / 'single.*', grouped video counters
    'blocks[spatial].*': block parameters and attention sub-layers per block are still found."""
    cfg = VideoDiTConfig(hidden_size=64, depth=4, num_heads=8)
    params = (ParamGroup("double.img_attn.qkv", 3 * M, "per_token"), ParamGroup("double[-1].txt_mod", M, "per_sample"),
              ParamGroup("single.linear1", 4 * M, "per_token"), ParamGroup("img_in", M, "per_token"),
              ParamGroup("txt_in.refiner.qkv", M, "text"))
    terms = (MacTerm("double.attn.core", "attention", 10**9), MacTerm("single.attn.core", "attention", 10**9),
             MacTerm("txt_in.refiner.attn.core", "conditioning", 10**6))
    act = Activations(none=M, selective=M, full_stored=M, full_working=M)
    geo = Geometry.of(ModelCount("joint", cfg, (4, 4, 64, 64), 1024, 0, params, terms, act))
    assert (geo.layer_params, geo.other_params) == (8 * M, 2 * M)
    assert (geo.self_attention, geo.sublayers) == (1, 2)
    video = (MacTerm("blocks[spatial].attn.core(spatial)", "attention", 10**9),
             MacTerm("blocks[spatial].cross_attn.core", "attention", 10**8),
             MacTerm("blocks[temporal,no-cross].attn.core(temporal)", "attention", 10**8))
    geo = Geometry.of(ModelCount("latte", cfg, (4, 4, 64, 64), 1024, 0, params[:1], video, act))
    assert geo.self_attention == 1 and geo.sublayers == 1.5 + 1  # half the blocks cross-attend


def test_recommender_keeps_pure_data_parallel_when_it_is_best_and_says_when_nothing_fits():
    d = estimate(model="DiT-XL/2", height=256, width=256, steps=10, batch=256, gpu="a100", num_gpus=8,
                 layout="auto", mfu=0.4).to_dict()
    lo = d["layout"]["layout"]
    assert (lo["tp"], lo["sp"], lo["pp"], lo["zero"], lo["recompute"]) == (1, 1, 1, 0, "none")
    assert lo["micro_batch"] * lo["grad_accum"] * lo["dp"] == 256
    tiny = estimate(config=WAN_LIKE, **SHAPE, gpu="rtx-4090", num_gpus=8, layout="auto", mfu=0.4).to_dict()
    assert not tiny["fits"] and not tiny["layout"]["recommended"] and tiny["layout"]["plan"]["best"] is None
    assert "none of the" in tiny["assumptions"][-1]
    small = tiny["layout"]["plan"]["smallest"]
    assert small["memory_per_gpu_bytes"] > get_gpu("rtx-4090").memory_bytes and "zero3" in small["describe"]
