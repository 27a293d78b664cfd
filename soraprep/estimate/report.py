"""Human-readable rendering of an :class:`~soraprep.estimate.plan.Estimate` as rich tables."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from soraprep.estimate.plan import Estimate, fmt_bytes, fmt_hours, fmt_si


def _table(title: str) -> Table:
    t = Table(title=escape(title), title_justify="left", show_header=False, box=None, pad_edge=False)
    t.add_column("what", style="bold")
    t.add_column("value", justify="right")
    t.add_column("note", style="dim")
    return t


def _money(x: float | None) -> str:
    return "-" if x is None else f"${x:,.0f}" if x >= 100 else f"${x:,.2f}"


def render(est: Estimate, console: Console) -> None:
    """Print model, compute, time/cost, memory and data-preparation tables."""
    d = est.to_dict()
    big = est.largest.count
    kinds = d["params_by_kind"]

    t = _table(f"Model {est.model}")
    t.add_row("parameters", f"{d['params']:,}", f"{fmt_si(d['params'])}; trainable {d['params_trainable']:,}")
    t.add_row("  per token", f"{kinds['per_token']:,}", "act on every visual token")
    t.add_row("  per sample", f"{kinds['per_sample']:,}", "adaLN / timestep MLP: once per sample")
    if kinds["text"]:
        t.add_row("  per text token", f"{kinds['text']:,}", "caption projection")
    t.add_row("  lookup + positional", f"{kinds['lookup'] + kinds['positional']:,}", "embedding tables, pos_embed")
    for s in est.shapes:
        c, lt, lh, lw = s.count.latent
        share = f"{s.weight:.1%} of samples; " if len(est.shapes) > 1 else ""
        t.add_row(f"shape {s.frames}x{s.height}x{s.width}", f"{s.count.tokens:,} tokens",
                  f"{share}latent {c}x{lt}x{lh}x{lw}")
    console.print(t)

    t = _table("Compute per sample (forward; FLOPs = 2 x MACs)")
    total = d["forward_macs"] or 1
    for k, v in d["forward_macs_by_component"].items():
        t.add_row(f"  {k}", fmt_si(v, "MAC"), f"{v / total:.1%}")
    t.add_row("forward", fmt_si(d["forward_macs"], "MAC"), f"= {fmt_si(d['forward_flops'], 'FLOP')}")
    ratio = d["naive_6nd_train_flops_per_sample"] / (6 * big.forward_macs) if big.forward_macs else 0
    t.add_row("6·N·D check", f"{ratio:.2f} x", "what the LLM rule would overestimate by")
    console.print(t)

    s = d["settings"]
    t = _table(f"Training on {s['num_gpus']} x {est.gpu.description}")
    t.add_row("samples seen", fmt_si(d["samples"]) if d["samples"] else "-",
              "give --clips [--epochs] or --steps --batch" if d["samples"] is None else "")
    t.add_row("train FLOPs", fmt_si(d["train_flops"], "FLOP"), f"{d['train_flops_factor']} x forward x samples")
    if d["online_encoder_flops"]:
        t.add_row("online encoder FLOPs", fmt_si(d["online_encoder_flops"], "FLOP"), "VAE + text encoder every step")
    rng = d["mfu_range"]
    t.add_row("peak x MFU", fmt_si(s["peak_flops_per_gpu"] * s["mfu"], "FLOP/s"),
              f"{fmt_si(s['peak_flops_per_gpu'], 'FLOP/s')} {s['precision']} x {s['mfu']:.3g}"
              + (f" (range {rng[0]:.3g}-{rng[1]:.3g}; {escape(d['mfu_source'])})" if rng else " (--mfu)"))
    hr, wr, cr = d["gpu_hours_range"], d["wall_hours_range"], d["cost_range"]
    t.add_row("GPU-hours", fmt_hours(d["gpu_hours"]),
              f"range {fmt_hours(hr[0])} .. {fmt_hours(hr[1])}" if hr else "")
    t.add_row("wall time", fmt_hours(d["wall_hours"]), f"on {s['num_gpus']} GPUs, perfect scaling"
              + (f"; range {fmt_hours(wr[0])} .. {fmt_hours(wr[1])}" if wr else ""))
    t.add_row("cost", _money(d["cost"]), escape(f"${est.gpu.price_per_hour}/GPU-h ({est.gpu.price_source})"
                                                + (f"; range {_money(cr[0])} .. {_money(cr[1])}" if cr else "")))
    console.print(t)

    m = est.memory
    t = _table(f"Memory per GPU (largest shape, micro-batch {m.micro_batch}, ZeRO {s['zero']}, "
               f"recompute {s['recompute']})")
    for name in ("weights", "gradients", "optimizer", "ema", "activations", "overhead"):
        t.add_row(f"  {name}", fmt_bytes(getattr(m, name)), "")
    if m.gathered:
        t.add_row("  gathered (ZeRO-3)", fmt_bytes(m.gathered), "2 layers' full weights + 1 layer's gradients")
    verdict = "[green]fits[/]" if m.fits else "[red]does not fit[/]"
    t.add_row("total", fmt_bytes(m.total), f"of {fmt_bytes(m.capacity)}: {verdict}")
    t.add_row("largest micro-batch", str(m.max_micro_batch), f"{fmt_bytes(m.activation_per_sample)} activations per sample")
    console.print(t)
    if not m.fits:
        console.print("[yellow]does not fit:[/] try --layout auto, --recompute full, --zero 3 with more GPUs, "
                      "--sp/--tp, a smaller --micro-batch, or a GPU with more memory")
    _render_layout(d["layout"], console)

    p = d["data_prep"]
    if p:
        t = _table(f"Data preparation ({p['clips']:,} clips, once)")
        for k in ("vae_encode", "text_encode", "captioning"):
            t.add_row(f"  {k}", fmt_hours(p[k]["gpu_hours"]) + " GPU", escape(f"{_money(p[k]['cost'])}; {p[k]['source']}"))
        cur = p["curation"]
        t.add_row("  curation (decode)", fmt_hours(cur["cpu_core_hours"]) + " CPU",
                  escape(f"{_money(cur['cost'])}; {cur['source_video_hours']:,.0f} video hours, {cur['source']}"))
        t.add_row("total", _money(p["cost"]), "")
        console.print(t)
    if d["total_cost"] is not None:
        console.print(f"[bold]total cost[/] (training + data preparation): {_money(d['total_cost'])}")
    for a in d["assumptions"]:
        console.print(f"[dim]· {escape(str(a))}[/]", highlight=False)


def _render_layout(lay: dict | None, console: Console) -> None:
    """The parallel layout, its step time with communication, and (--layout auto) the best few."""
    if lay is None:
        return
    lo, tm = lay["layout"], lay["time"]
    links = lay["links"] or {}
    intra, inter = links.get("intra_node", {}), links.get("inter_node", {})
    how = ("recommended by --layout auto" if lay["recommended"]
           else "--layout auto: nothing fits, showing" if lay.get("plan") else "as given")
    t = _table(f"Parallel layout ({how}): {lo['describe']}")
    t.add_row("links", escape(f"{intra.get('name')} / {inter.get('name')}"),
              f"{links.get('gpus_per_node')} GPUs per node; {intra.get('bus_gbytes_per_s', 0):.0f} / "
              f"{inter.get('bus_gbytes_per_s', 0):.0f} GB/s achieved")
    t.add_row("step", f"{lo['samples_per_step']} samples", f"dp {lo['dp']} x micro-batch {lo['micro_batch']} x "
              f"{lo['grad_accum']} accumulation")
    t.add_row("  compute", f"{tm['compute_s']:.3g} s", "at peak x mfu")
    if tm["bubble_s"]:
        t.add_row("  pipeline bubble", f"{tm['bubble_s']:.3g} s", "(pp - 1) / micro-batches of compute")
    for k, v in tm["comm_s"].items():
        t.add_row(f"  {k} communication", f"{v:.3g} s", f"{tm['exposed_comm_s'][k]:.3g} s exposed")
    t.add_row("step time", f"{tm['step_s']:.3g} s", f"{lay['seconds_per_sample']:.3g} s per sample on "
              f"{lo['num_gpus']} GPUs")
    if lay["gpu_hours_with_comm"] is not None:
        t.add_row("GPU-hours with comm", fmt_hours(lay["gpu_hours_with_comm"]),
                  f"{_money(lay['cost_with_comm'])}; wall {fmt_hours(lay['wall_hours_with_comm'])}")
    console.print(t)
    plan = lay.get("plan")
    if plan:
        if not plan["fitting"] and plan["smallest"]:
            small = plan["smallest"]
            console.print(f"none of {plan['considered']} layouts fits; the smallest, {escape(small['describe'])}, "
                          f"needs {fmt_bytes(small['memory_per_gpu_bytes'])} per GPU", highlight=False)
            return
        console.print(f"{plan['fitting']} of {plan['considered']} layouts fit; best first (near-ties go to the "
                      "simplest):", highlight=False)
        for c in plan["top"][:5]:
            console.print(f"  {escape(c['layout']['describe'])}: {c['time']['step_s']:.3g} s/step, "
                          f"{fmt_bytes(c['memory_per_gpu_bytes'])}", highlight=False)
