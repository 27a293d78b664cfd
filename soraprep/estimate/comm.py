"""Communication time of one training step under a :class:`~soraprep.estimate.parallel.Layout`.

Collectives use the bandwidth-only ring model of NCCL's performance notes (nccl-tests ``doc/PERFORMANCE.md``:
bus bandwidth = algorithm bandwidth x ``2(n-1)/n`` for all-reduce, ``(n-1)/n`` for all-gather and
reduce-scatter); latency terms are ignored (messages here are MBs to GBs). ``bytes`` is the size of the
full tensor on one rank, ``bw`` the achieved per-direction bandwidth of the slowest link in the group
(:meth:`soraprep.estimate.hardware.Interconnect.bandwidth`)::

    all-reduce        2 (n-1)/n x bytes / bw
    all-gather,
    reduce-scatter      (n-1)/n x bytes / bw      (bytes = the gathered, full tensor)
    all-to-all          (n-1)/n x bytes / bw      (bytes = what one rank holds before the exchange)
    send/recv                     bytes / bw

Per step (``m`` = micro-batches per step, ``L`` = layers on the stage, ``passes`` = 2, or 3 with full
recompute, which repeats the forward and its collectives):

- **TP** (Megatron, with its sequence parallelism): one all-reduce-equivalent (all-gather +
  reduce-scatter) of the sub-layer output ``mb x N/sp x D`` per sub-layer (self-attention, each
  cross-attention, MLP) per pass. Not overlapped (on the critical path).
- **SP Ulysses** (Jacobs et al. 2023, arXiv:2309.14509, Sec. 3, communication analysis): four all-to-alls (q, k, v in, output
  out) of ``mb x N/sp x D/tp`` per self-attention per pass. Not overlapped.
- **SP ring attention** (Liu et al. 2023, arXiv:2310.01889): ``sp - 1`` rounds passing K and V chunks
  (``2 x mb x N/sp x D/tp``) in the forward, K, V, dK, dV (twice that) in the backward; overlapped with the
  attention compute, so only the excess is exposed.
- **PP**: one activation send and one gradient send of ``mb x N/sp x D/tp`` per micro-batch per stage
  boundary (Megatron's scatter/gather), exposed; plus the 1F1B bubble ``(pp-1)/m`` of the compute time
  (Narayanan et al. 2021, arXiv:2104.04473, Sec. 2.2.1).
- **DP / ZeRO** over the ``dp x sp`` group, on the ``P`` parameters one GPU holds. ZeRO 0 all-reduces
  the gradients once per step, overlapped with the backward of the last micro-batch (DDP's bucketed
  overlap; accumulation runs without sync). ZeRO 1 reduce-scatters them once (overlapped the same way)
  and all-gathers the updated weights after the optimizer step (exposed): the same volume as the
  all-reduce (ZeRO paper, Rajbhandari et al. 2020, arXiv:1910.02054, Sec. 7.2.1). ZeRO 2 keeps only a gradient shard, so it
  reduce-scatters every micro-batch (overlapped with that micro-batch's backward), then all-gathers the
  weights once. ZeRO-3/FSDP gathers the weights in the forward and again in the backward and
  reduce-scatters the gradients every micro-batch (1.5x the all-reduce volume, ZeRO paper Sec. 7.2.2),
  prefetched so that it overlaps the whole compute.

``compute_s`` is the step's FLOPs on one GPU at ``peak x mfu``; ``step_s = compute_s + bubble_s +
exposed comm``. The ``mfu`` stays the utilisation of the compute itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from soraprep.estimate import memory
from soraprep.estimate.hardware import Interconnect

if TYPE_CHECKING:  # parallel imports this module
    from soraprep.estimate.flops import ModelCount
    from soraprep.estimate.parallel import Geometry, Layout


def all_reduce_s(nbytes: float, n: int, bw: float) -> float:
    return 2 * (n - 1) / n * nbytes / bw if n > 1 else 0.0


def all_gather_s(nbytes: float, n: int, bw: float) -> float:
    """Also reduce-scatter; ``nbytes`` is the full (gathered) tensor."""
    return (n - 1) / n * nbytes / bw if n > 1 else 0.0


def all_to_all_s(nbytes: float, n: int, bw: float) -> float:
    """``nbytes`` held by one rank; it keeps 1/n and exchanges the rest."""
    return (n - 1) / n * nbytes / bw if n > 1 else 0.0


@dataclass(frozen=True)
class Links:
    """Intra- and inter-node links and how many GPUs share a node."""

    intra: Interconnect
    inter: Interconnect
    gpus_per_node: int = 8

    def bandwidth(self, span: int) -> float:
        """Achieved bytes/s of a group whose ranks lie within ``span`` consecutive GPUs."""
        return (self.intra if span <= self.gpus_per_node else self.inter).bandwidth()

    def to_dict(self) -> dict[str, Any]:
        return {"intra_node": self.intra.to_dict(), "inter_node": self.inter.to_dict(),
                "gpus_per_node": self.gpus_per_node}


@dataclass(frozen=True)
class StepTime:
    """Seconds per optimizer step on one GPU: compute, pipeline bubble, and communication by kind."""

    compute_s: float
    bubble_s: float
    comm_s: dict[str, float] = field(default_factory=dict)  # tp, sp, pp, dp: total time on the wire
    exposed_s: dict[str, float] = field(default_factory=dict)  # the part not hidden behind compute
    bytes_per_gpu: dict[str, float] = field(default_factory=dict)  # bytes each GPU sends per step, by kind

    @property
    def comm_total_s(self) -> float:
        return sum(self.comm_s.values())

    @property
    def exposed_total_s(self) -> float:
        return sum(self.exposed_s.values())

    @property
    def step_s(self) -> float:
        return self.compute_s + self.bubble_s + self.exposed_total_s

    def to_dict(self) -> dict[str, Any]:
        return {"compute_s": self.compute_s, "bubble_s": self.bubble_s, "comm_s": dict(self.comm_s),
                "comm_total_s": self.comm_total_s, "exposed_comm_s": dict(self.exposed_s),
                "exposed_comm_total_s": self.exposed_total_s, "step_s": self.step_s,
                "bytes_per_gpu": dict(self.bytes_per_gpu)}


def step_time(count: ModelCount, layout: Layout, geo: Geometry, *, peak_flops: float, mfu: float, links: Links,
              precision: str = "bf16") -> StepTime:
    """Compute, bubble and communication seconds of one optimizer step (see the module docstring);
    ``geo`` is ``Geometry.of(count)``."""
    lo = layout
    m, mb = lo.grad_accum, lo.micro_batch
    full = lo.recompute == "full"
    factor = 4 if full else 3  # forward 1 + backward 2 (+ recompute 1)
    rate = peak_flops * mfu
    compute = factor * count.forward_flops * lo.samples_per_step / lo.num_gpus / rate
    bubble = (lo.pp - 1) / m * compute
    act_b = memory.ACT_BYTES[precision]
    passes = 3 if full else 2
    layers = (geo.layers or 1) // lo.pp
    hidden = geo.hidden or 0
    # one sub-layer's output on one GPU: mb x (N / sp) x D elements
    msg = mb * geo.tokens / lo.sp * hidden * act_b
    comm: dict[str, float] = {}
    exposed: dict[str, float] = {}
    sent: dict[str, float] = {}

    # tensor parallel: contiguous ranks
    if lo.tp > 1:
        n_ops = passes * m * layers * geo.sublayers
        comm["tp"] = n_ops * all_reduce_s(msg, lo.tp, links.bandwidth(lo.tp))
        exposed["tp"] = comm["tp"]
        sent["tp"] = n_ops * 2 * (lo.tp - 1) / lo.tp * msg
    # sequence parallel: stride tp, spans tp x sp GPUs
    if lo.sp > 1:
        bw = links.bandwidth(lo.tp * lo.sp)
        shard = msg / lo.tp
        if lo.sp_kind == "ulysses":
            n_ops = passes * m * layers * geo.self_attention * 4
            comm["sp"] = n_ops * all_to_all_s(shard, lo.sp, bw)
            exposed["sp"] = comm["sp"]
            sent["sp"] = n_ops * (lo.sp - 1) / lo.sp * shard
        else:
            forwards = passes - 1
            volume = m * layers * geo.self_attention * (lo.sp - 1) * shard * (2 * forwards + 4)
            comm["sp"] = volume / bw
            attn = 2 * geo.self_attention_macs * (forwards + 2) * lo.samples_per_step / lo.num_gpus / rate
            exposed["sp"] = max(0.0, comm["sp"] - attn)
            sent["sp"] = volume
    # pipeline: neighbouring stages are tp x sp ranks apart
    if lo.pp > 1:
        volume = 2 * m * msg / lo.tp
        comm["pp"] = volume / links.bandwidth(lo.tp * lo.sp * lo.pp)
        exposed["pp"] = comm["pp"]
        sent["pp"] = volume
    # data parallel + ZeRO over dp x sp
    n = lo.zero_group
    if n > 1:
        w_b, g_b, _, _ = memory.STATE_BYTES[precision]
        params, trainable = geo.params_per_gpu(lo)
        bw = links.bandwidth(lo.num_gpus if lo.dp > 1 else lo.tp * lo.sp)
        if lo.zero >= 3:
            per_mb = 2 * all_gather_s(params * w_b, n, bw) + all_gather_s(trainable * g_b, n, bw)
            comm["dp"] = m * per_mb
            exposed["dp"] = max(0.0, comm["dp"] - compute)
            sent["dp"] = m * (n - 1) / n * (2 * params * w_b + trainable * g_b)
        else:
            backward = compute / m * (factor - 1) / factor  # of one micro-batch
            gather = all_gather_s(trainable * w_b, n, bw)  # ZeRO 1-2: updated weights after the step
            if lo.zero == 2:  # gradients are reduce-scattered every micro-batch (only a shard is kept)
                reduce = all_gather_s(trainable * g_b, n, bw)
                comm["dp"] = m * reduce + gather
                exposed["dp"] = m * max(0.0, reduce - backward) + gather
                sent["dp"] = (n - 1) / n * trainable * (m * g_b + w_b)
            else:  # ZeRO 0: one all-reduce; ZeRO 1: reduce-scatter + all-gather, the same volume
                reduce = all_reduce_s(trainable * g_b, n, bw) if lo.zero == 0 else all_gather_s(trainable * g_b, n, bw)
                comm["dp"] = reduce + (gather if lo.zero == 1 else 0.0)
                exposed["dp"] = max(0.0, reduce - backward) + (gather if lo.zero == 1 else 0.0)
                sent["dp"] = 2 * (n - 1) / n * trainable * g_b
    return StepTime(compute, bubble, comm, exposed, sent)
