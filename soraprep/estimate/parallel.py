"""Parallel layouts (TP, Ulysses/ring SP, PP, DP with ZeRO/FSDP) and the memory per GPU under them.

A :class:`Layout` splits ``num_gpus = tp x sp x pp x dp``. Ranks are placed tensor-parallel innermost,
then sequence-parallel, then pipeline, then data-parallel (Megatron-LM's order), so TP and SP groups stay
inside a node when they fit (:mod:`soraprep.estimate.comm` picks the link from that placement).

Memory per GPU (the busiest one: the first pipeline stage), in the units of :mod:`.memory`:

- **model states**: parameters of the transformer blocks (see :meth:`Geometry.of`) are split
  ``1/(tp x pp)`` (Megatron TP shards every block matmul; norms and biases, replicated in practice, are
  < 0.1 % of a block and split too); the rest (patch/timestep/caption embedders, final layer) is kept
  whole on the first stage. ZeRO/FSDP shards over the ``dp x sp`` ranks that hold the same weights (the
  data- and sequence-parallel group, as DeepSpeed-Ulysses does): stage 1 the AdamW states, 2 also the
  gradients, 3 also the weights and the EMA copy.
- **gathered buffers** (ZeRO-3/FSDP only): the full bf16 weights of two layers (the one computing and the
  one prefetched) and one layer's unsharded gradients before its reduce-scatter.
- **activations**: the :class:`~soraprep.estimate.flops.Activations` of one sample, divided by ``tp``
  (Megatron TP *with* its sequence parallelism, so norms and residuals are sharded too: Korthikanti et al.
  2022, arXiv:2205.05198, Table 2) and by ``sp`` (each SP rank holds ``1/sp`` of the sequence; Ulysses'
  head-sharded q/k/v have the same size). Caption k/v in cross-attention (replicated on every SP rank) are
  divided too: < 2 % of a block's activations at video lengths. With ``pp`` stages each holds ``1/pp`` of
  the layers, but the 1F1B schedule keeps ``min(pp, m)`` micro-batches in flight on the first stage
  (Narayanan et al. 2021, arXiv:2104.04473, Sec. 2.2.1), so PP barely lowers activation memory. Embedding
  and final-layer activations are spread over the stages like the blocks (< 1 % for depth >= 12).

Constraints are checked by :func:`check_layout` with one-line fix-it messages. :func:`evaluate_layout`
adds the step time of :mod:`soraprep.estimate.comm`; :func:`plan_layout` enumerates every valid layout for
a model, GPU and GPU count, and ranks them: those that fit first, then by seconds (= cost) per sample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from soraprep.estimate import hardware, memory
from soraprep.estimate.comm import Links, StepTime, step_time
from soraprep.estimate.flops import RECOMPUTE_MODES, ModelCount

SP_KINDS = ("ulysses", "ring")
#: config fields that count transformer layers (summed; U-ViT is handled apart)
LAYER_FIELDS = ("depth", "depth_double", "depth_single", "num_layers", "num_double_blocks", "num_single_blocks",
                "double_depth", "single_depth")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Layout:
    """How ``tp x sp x pp x dp`` GPUs train one model.

    ``micro_batch`` samples go through the model at once on every pipeline; ``grad_accum`` micro-batches
    make one optimizer step (with ``pp > 1`` they are the pipeline's micro-batches), so the global batch is
    ``dp x micro_batch x grad_accum``. ``zero`` 3 means FSDP full shard.
    """

    tp: int = 1
    sp: int = 1
    sp_kind: str = "ulysses"
    pp: int = 1
    dp: int = 1
    zero: int = 0
    recompute: str = "none"
    micro_batch: int = 1
    grad_accum: int = 1

    @property
    def num_gpus(self) -> int:
        return self.tp * self.sp * self.pp * self.dp

    @property
    def zero_group(self) -> int:
        """Ranks that hold the same weights and shard ZeRO states between them."""
        return self.dp * self.sp

    @property
    def samples_per_step(self) -> int:
        return self.dp * self.micro_batch * self.grad_accum

    @property
    def in_flight(self) -> int:
        """Micro-batches whose activations the first pipeline stage holds at once (1F1B)."""
        return min(self.pp, self.grad_accum)

    def describe(self) -> str:
        sp = f"sp{self.sp}-{self.sp_kind}" if self.sp > 1 else "sp1"
        return (f"tp{self.tp} {sp} pp{self.pp} dp{self.dp} zero{self.zero} recompute={self.recompute} "
                f"micro-batch {self.micro_batch} x {self.grad_accum}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(num_gpus=self.num_gpus, samples_per_step=self.samples_per_step, describe=self.describe())
        return d


@dataclass(frozen=True)
class Geometry:
    """What parallelism needs to know about a counted model (``None`` where the model has no such thing)."""

    layers: int | None
    heads: int | None
    hidden: int | None
    tokens: int
    layer_params: int
    layer_trainable: int
    other_params: int
    other_trainable: int
    self_attention: float  # self-attention sub-layers per block (sequence-parallel communication)
    sublayers: float  # attention + cross-attention + MLP sub-layers per block (TP all-reduces)
    self_attention_macs: int  # forward MACs of self-attention scores + weighted sums, per sample

    @classmethod
    def of(cls, count: ModelCount) -> Geometry:
        """Read the geometry off a count. Blocks are recognised by name: the groups that hold the attention
        terms (``blocks``, ``blocks[spatial]``, ``double``, ``single``, ...) plus anything named ``*blocks*``;
        self-/cross-attention sub-layers per block = attention terms / block groups (each counter emits one
        term per attention kind per group of identical blocks, with the repeat folded in)."""
        cfg = count.config
        fields = cfg.to_dict() if hasattr(cfg, "to_dict") else {}
        layers: int | None = getattr(cfg, "sequential_blocks", None) or \
            sum(int(v) for k, v in fields.items() if k in LAYER_FIELDS and isinstance(v, int))
        heads = fields.get("num_heads") or fields.get("num_attention_heads")
        hidden = getattr(cfg, "hidden_size", None)
        attn = [t for t in count.terms if t.component == "attention"]
        groups = {_group(t.name) for t in attn} or {"blocks"}
        families = {_family(g) for g in groups} | {"blocks"}
        in_block = [p for p in count.params if _family(_group(p.name)) in families or "blocks" in p.name]
        lp = sum(p.count for p in in_block)
        lt = sum(p.count for p in in_block if p.trainable)
        self_attn = [t for t in attn if "cross" not in t.name.split(".", 1)[-1]]  # not the group's name
        return cls(
            layers=layers or None, heads=heads, hidden=hidden, tokens=count.tokens,
            layer_params=lp, layer_trainable=lt, other_params=count.params_total - lp,
            other_trainable=count.params_trainable - lt, self_attention=len(self_attn) / len(groups),
            sublayers=len(attn) / len(groups) + 1, self_attention_macs=sum(t.macs for t in self_attn),
        )

    def params_per_gpu(self, layout: Layout) -> tuple[int, int]:
        """(all, trainable) parameters held by one GPU of the first stage before ZeRO sharding."""
        split = layout.tp * layout.pp
        if split == 1:
            return self.layer_params + self.other_params, self.layer_trainable + self.other_trainable
        return (_ceil_div(self.layer_params, split) + self.other_params,
                _ceil_div(self.layer_trainable, split) + self.other_trainable)


def _group(name: str) -> str:
    """'blocks[spatial].attn.core' -> 'blocks[spatial]' (one group of identical blocks)."""
    return name.split(".", 1)[0]


def _family(group: str) -> str:
    """'blocks[spatial]' -> 'blocks', 'double[-1]' -> 'double'."""
    return group.split("[", 1)[0]


def _divisors(n: int, limit: int | None = None) -> list[int]:
    return [k for k in range(1, (limit or n) + 1) if n % k == 0]


def _choices(values: list[int]) -> str:
    return ", ".join(str(v) for v in values[:8]) + (" ..." if len(values) > 8 else "")


def check_layout(geo: Geometry, layout: Layout, *, num_gpus: int, gpus_per_node: int = 8) -> None:
    """Raise a ValueError with a one-line fix if ``layout`` cannot train this model on ``num_gpus``."""
    lo = layout
    for name, v in (("--tp", lo.tp), ("--sp", lo.sp), ("--pp", lo.pp), ("data-parallel size", lo.dp),
                    ("--micro-batch", lo.micro_batch), ("gradient accumulation", lo.grad_accum),
                    ("--gpus-per-node", gpus_per_node)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if lo.sp_kind not in SP_KINDS:
        raise ValueError(f"--sp-kind must be one of {', '.join(SP_KINDS)}, got {lo.sp_kind!r}")
    if lo.recompute not in RECOMPUTE_MODES:
        raise ValueError(f"--recompute must be one of {', '.join(RECOMPUTE_MODES)}, got {lo.recompute!r}")
    if lo.zero not in memory.ZERO_STAGES:
        raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, got {lo.zero}")
    mp = lo.tp * lo.sp * lo.pp
    if num_gpus % mp:
        raise ValueError(f"tp x sp x pp = {mp} does not divide --num-gpus {num_gpus}: use degrees whose product "
                         f"divides it (e.g. {_choices(_divisors(num_gpus))})")
    if lo.num_gpus != num_gpus:
        raise ValueError(f"tp x sp x pp x dp = {lo.num_gpus} but --num-gpus is {num_gpus}: use dp = {num_gpus // mp}")
    if (lo.tp > 1 or lo.sp > 1) and not geo.heads:
        raise ValueError("this model has no attention heads to split: use --tp 1 --sp 1")
    if lo.tp > 1:
        if geo.heads % lo.tp:
            raise ValueError(f"--tp {lo.tp} must divide the {geo.heads} attention heads: use --tp "
                             f"{_choices(_divisors(geo.heads, gpus_per_node))}")
        if lo.tp > gpus_per_node:
            raise ValueError(f"--tp {lo.tp} spans nodes ({gpus_per_node} GPUs per node): tensor parallelism "
                             f"all-reduces every layer and needs NVLink; use --tp <= {gpus_per_node} and --sp/--pp")
    if lo.sp > 1:
        if lo.sp_kind == "ulysses" and (geo.heads // lo.tp) % lo.sp:
            per = geo.heads // lo.tp
            raise ValueError(f"Ulysses --sp {lo.sp} must divide the {per} heads per tensor-parallel rank: use --sp "
                             f"{_choices(_divisors(per))} or --sp-kind ring")
        if geo.tokens % lo.sp:
            raise ValueError(f"the sequence of {geo.tokens} tokens is not divisible by --sp {lo.sp}: use --sp "
                             f"{_choices([k for k in _divisors(geo.tokens, 64) if k > 1])} or change frames/size")
    if lo.pp > 1:
        if not geo.layers:
            raise ValueError("cannot find this model's layer count for pipeline stages: use --pp 1")
        if geo.layers % lo.pp:
            raise ValueError(f"--pp {lo.pp} must divide the {geo.layers} layers: use --pp "
                             f"{_choices(_divisors(geo.layers))}")
        if lo.zero >= 2:
            raise ValueError(f"pipeline parallelism works with ZeRO stage 0 or 1 only (DeepSpeed and Megatron-LM "
                             f"do not shard gradients across micro-batches): use --zero 1, or --pp 1 with --zero {lo.zero}")


def layout_memory(count: ModelCount, layout: Layout, *, capacity_bytes: int, precision: str = "bf16",
                  ema: bool = True, overhead_bytes: int = 2 * memory.GIB, geometry: Geometry | None = None,
                  ) -> memory.MemoryEstimate:
    """Per-GPU memory (first pipeline stage) of training ``count`` under ``layout``.

    With ``tp = sp = pp = 1`` this is exactly :func:`soraprep.estimate.memory.estimate_memory` with
    ``num_gpus = dp``, plus the ZeRO-3 gathered buffers.
    """
    geo = geometry or Geometry.of(count)
    lo = layout
    memory.check_training_options(precision=precision, zero=lo.zero, num_gpus=lo.num_gpus,
                                  micro_batch=lo.micro_batch)
    w_b, g_b, o_b, e_b = memory.STATE_BYTES[precision]
    params, trainable = geo.params_per_gpu(lo)
    g = lo.zero_group
    weights = params * w_b / (g if lo.zero >= 3 else 1)
    grads = trainable * g_b / (g if lo.zero >= 2 else 1)
    optim = trainable * o_b / (g if lo.zero >= 1 else 1)
    ema_bytes = (params * e_b / (g if lo.zero >= 3 else 1)) if ema else 0
    gathered = 0
    if lo.zero >= 3 and g > 1:
        unit = _ceil_div(geo.layer_params, (geo.layers or 1) * lo.tp)  # one block, TP-sharded
        gathered = unit * (2 * w_b + g_b)  # 2 blocks' weights in flight + one block's unsharded gradients
    act = count.activations
    shard = lo.tp * lo.sp
    if lo.recompute == "full":
        elems = _ceil_div(act.full_stored * lo.in_flight, lo.pp * shard) + _ceil_div(act.full_working, shard)
    else:
        elems = _ceil_div(act.elements(lo.recompute) * lo.in_flight, lo.pp * shard)
    per_sample = elems * memory.ACT_BYTES[precision]
    static = int(weights) + int(grads) + int(optim) + int(ema_bytes) + overhead_bytes + gathered
    max_mb = max(0, (capacity_bytes - static) // per_sample) if per_sample else 0
    return memory.MemoryEstimate(
        weights=int(weights), gradients=int(grads), optimizer=int(optim), ema=int(ema_bytes),
        activations=per_sample * lo.micro_batch, overhead=overhead_bytes, capacity=capacity_bytes,
        micro_batch=lo.micro_batch, activation_per_sample=per_sample, max_micro_batch=int(max_mb),
        gathered=gathered,
    )


# ------------------------------------------------------------------------------------------------
# Evaluation and recommendation
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayoutEval:
    """One layout: its memory per GPU, step time and cost per sample."""

    layout: Layout
    memory: memory.MemoryEstimate
    time: StepTime
    price_per_hour: float

    @property
    def fits(self) -> bool:
        return self.memory.fits

    @property
    def seconds_per_sample(self) -> float:
        return self.time.step_s / self.layout.samples_per_step

    @property
    def cost_per_sample(self) -> float:
        return self.seconds_per_sample * self.layout.num_gpus * self.price_per_hour / 3600

    def to_dict(self) -> dict[str, Any]:
        return {"layout": self.layout.to_dict(), "fits": self.fits, "memory_per_gpu_bytes": self.memory.total,
                "memory": self.memory.to_dict(), "time": self.time.to_dict(),
                "seconds_per_sample": self.seconds_per_sample, "cost_per_sample": self.cost_per_sample}


def evaluate_layout(count: ModelCount, layout: Layout, *, gpu: hardware.GPU, links: Links, mfu: float = 0.4,
                    precision: str = "bf16", ema: bool = True, overhead_bytes: int = 2 * memory.GIB,
                    geometry: Geometry | None = None) -> LayoutEval:
    """Check ``layout`` (ValueError with a fix if invalid), then its memory per GPU and step time."""
    geo = geometry or Geometry.of(count)
    check_layout(geo, layout, num_gpus=layout.num_gpus, gpus_per_node=links.gpus_per_node)
    mem = layout_memory(count, layout, capacity_bytes=gpu.memory_bytes, precision=precision, ema=ema,
                        overhead_bytes=overhead_bytes, geometry=geo)
    t = step_time(count, layout, geo, peak_flops=gpu.peak_flops(precision), mfu=mfu, links=links,
                  precision=precision)
    return LayoutEval(layout, mem, t, gpu.price_per_hour)


@dataclass(frozen=True)
class LayoutPlan:
    """Every valid layout evaluated, best first: those that fit, by seconds per sample; the first is the
    simplest of those within :data:`TIE` of the fastest."""

    candidates: tuple[LayoutEval, ...]
    links: Links
    batch: int

    @property
    def fitting(self) -> list[LayoutEval]:
        return [c for c in self.candidates if c.fits]

    @property
    def best(self) -> LayoutEval | None:
        """The cheapest layout that fits (None: nothing fits)."""
        return self.candidates[0] if self.candidates and self.candidates[0].fits else None

    @property
    def smallest(self) -> LayoutEval | None:
        """The layout with the least memory per GPU (how far from fitting, when nothing fits)."""
        return min(self.candidates, key=lambda c: c.memory.total, default=None)

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        small = self.smallest
        return {"considered": len(self.candidates), "fitting": len(self.fitting), "batch": self.batch,
                "best": self.best.to_dict() if self.best else None,
                "smallest": {"describe": small.layout.describe(), "memory_per_gpu_bytes": small.memory.total}
                if small else None,
                "top": [c.to_dict() for c in self.fitting[:top]], "links": self.links.to_dict()}


def _powers_of_two(limit: int) -> list[int]:
    out, v = [], 1
    while v <= max(1, limit):
        out.append(v)
        v *= 2
    return out


def plan_layout(count: ModelCount, *, gpu: str | hardware.GPU, num_gpus: int, gpus_per_node: int = 8,
                interconnect: str | None = None, batch: int | None = None, mfu: float = 0.4,
                precision: str = "bf16", ema: bool = True, overhead_bytes: int = 2 * memory.GIB,
                tp: int | None = None, sp: int | None = None, sp_kind: str | None = None, pp: int | None = None,
                zero: int | None = None, recompute: str | None = None, micro_batch: int | None = None,
                ) -> LayoutPlan:
    """Enumerate layouts of ``num_gpus`` GPUs for ``count`` (one shape) and rank them.

    ``batch`` is the global batch per optimizer step (default ``num_gpus``); each layout runs it as
    ``dp x micro_batch x grad_accum`` (rounded up). Any of ``tp, sp, sp_kind, pp, zero, recompute,
    micro_batch`` given is held fixed; the rest is searched: tp over the head count's divisors up to a
    node, sp (both kinds) and pp over divisors, ZeRO 0-3 (0-1 with pp), the three recompute modes and
    power-of-two micro-batches.
    """
    spec = gpu if isinstance(gpu, hardware.GPU) else hardware.get_gpu(gpu)
    if num_gpus < 1 or gpus_per_node < 1:
        raise ValueError(f"--num-gpus and --gpus-per-node must be >= 1, got {num_gpus} and {gpus_per_node}")
    intra, inter = hardware.get_links(spec.name, interconnect)
    links = Links(intra, inter, gpus_per_node)
    batch = batch or num_gpus
    geo = Geometry.of(count)
    heads = geo.heads or 1
    tps = [tp] if tp else [t for t in _divisors(heads, gpus_per_node) if num_gpus % t == 0]
    out = []
    for t in tps:
        for s in [sp] if sp else _divisors(num_gpus // t) if num_gpus % t == 0 else []:
            kinds = [sp_kind] if sp_kind else (SP_KINDS if s > 1 else SP_KINDS[:1])
            rest = num_gpus // (t * s) if num_gpus % (t * s) == 0 else 0
            for p in [pp] if pp else [k for k in _divisors(rest) if k == 1 or (geo.layers and geo.layers % k == 0)]:
                if not rest or rest % p:
                    continue
                dp = rest // p
                zeros = [zero] if zero is not None else ([0, 1] if p > 1 else [0, 1, 2, 3])
                mbs = [micro_batch] if micro_batch else _powers_of_two(_ceil_div(batch, dp))
                for kind in kinds:
                    for z in zeros:
                        for rc in [recompute] if recompute else RECOMPUTE_MODES:
                            for mb in mbs:
                                lo = Layout(t, s, kind, p, dp, z, rc, mb, _ceil_div(batch, dp * mb))
                                try:
                                    out.append(evaluate_layout(count, lo, gpu=spec, links=links, mfu=mfu,
                                                               precision=precision, ema=ema,
                                                               overhead_bytes=overhead_bytes, geometry=geo))
                                except ValueError:
                                    continue
    out.sort(key=lambda c: (not c.fits, c.seconds_per_sample, _simplicity(c.layout)))
    if out and out[0].fits:  # near-ties (within TIE of the fastest) go to the simplest layout
        near = [c for c in out if c.fits and c.seconds_per_sample <= out[0].seconds_per_sample * (1 + TIE)]
        pick = min(near, key=lambda c: _simplicity(c.layout))
        out.remove(pick)
        out.insert(0, pick)
    return LayoutPlan(tuple(out), links, batch)


#: Layouts within 1 % of the fastest are ties: the model is not that precise (kernel efficiency, which it
#: does not model, differs more between them), so the simplest wins.
TIE = 0.01


def _simplicity(lo: Layout) -> tuple:
    """Fewer model-parallel GPUs, Ulysses before ring (one kernel over the whole sequence; what
    Wan2.1 and HunyuanVideo use), fewer stages, lower ZeRO stage, less recompute, larger micro-batch."""
    return (lo.tp * lo.sp * lo.pp, lo.sp_kind != "ulysses", lo.pp, lo.zero, RECOMPUTE_MODES.index(lo.recompute),
            -lo.micro_batch)
