"""End-to-end budget: model + input shapes + training amount + hardware -> FLOPs, memory, time, cost.

:func:`estimate` is the library front door behind ``soraprep estimate``. It resolves a model config
(a preset of :data:`soraprep.models.config.PRESETS` or a config file), puts the requested pixel shapes
through the VAE's compression into latent shapes, counts each shape with :mod:`.flops`, and adds:

- training: ``train_flops = k x forward_flops x samples`` with ``k = 3`` (forward + backward, backward
  = 2 x forward) or ``k = 4`` with full recompute (one more forward); ``gpu_hours = (train_flops +
  online encoder FLOPs) / (peak x utilisation)``. The utilisation is ``mfu`` when given, else the
  calibrated model of :mod:`.efficiency` (fitted to published runs), which also gives a range.
- memory per GPU (:mod:`.memory`, :mod:`.parallel`) for the largest shape under the parallel layout
  (default: pure data parallelism with the given ZeRO stage), and the largest micro-batch that fits;
- the layout's step time with communication (:mod:`.comm`), or, with ``layout="auto"``, the cheapest
  layout that fits (:func:`soraprep.estimate.parallel.plan_layout`);
- data preparation, each under its own key: VAE encoding (once per clip; latents are cached), text
  encoding (once per clip), captioning (a VLM over sampled frames) and curation (CPU decode hours).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soraprep.estimate import efficiency, hardware, memory, parallel
from soraprep.estimate.flops import RECOMPUTE_MODES, ModelCount, count_model
from soraprep.estimate.vae import vae_encode_cost

#: T5-v1.1-XXL encoder parameters (the text encoder of PixArt-alpha and Open-Sora 1.x).
T5_XXL_ENCODER_PARAMS = 4_762_310_656
#: Image presets default to the SD VAE of their papers: 8x spatial, 4 latent channels.
SD_VAE_COMPRESSION = (1, 8, 8)
#: Frames per CPU-core-second of the whole default curation (decode-once analysis + the default cut) at
#: 720p H.264: ~208 (25 fps / 0.120 CPU-s per video-second) measured by benchmarks/scale_model.py (BENCHMARKS.md,
#: "Cluster scale model"; ~89 at 1080p). Bare decoding alone is ~2-3x faster; per stage: estimate/cluster.py.
CURATION_FPS_PER_CORE = 200.0
#: Default captioning VLM size (a 7B video VLM such as LLaVA-NeXT-Video-7B or Qwen2-VL-7B).
DEFAULT_CAPTION_PARAMS = 7e9


@dataclass(frozen=True)
class Shape:
    """One input shape in pixels, its latent shape, and the share of training samples it gets."""

    frames: int
    height: int
    width: int
    weight: float  # fraction of training samples with this shape
    count: ModelCount

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames, "height": self.height, "width": self.width, "weight": self.weight,
            "latent_shape": list(self.count.latent), "tokens": self.count.tokens,
            "forward_macs": self.count.forward_macs, "forward_flops": self.count.forward_flops,
        }


# ------------------------------------------------------------------------------------------------
# Model and shapes
# ------------------------------------------------------------------------------------------------


def load_config(*, model: str | None = None, config_path: str | None = None) -> tuple[str, Any]:
    """(name, config) from a preset name or a YAML/JSON file holding ``config.to_dict()`` output,
    or ``{preset: NAME, <field>: <value>, ...}`` (a preset with overrides)."""
    from soraprep.models.config import PRESETS, config_from_dict, get_config

    if (model is None) == (config_path is None):
        raise ValueError("give exactly one of --model NAME or --config FILE")
    if model is not None:
        if model not in PRESETS:
            raise ValueError(f"unknown model {model!r}: use one of {', '.join(sorted(PRESETS))}, or --config FILE")
        return model, PRESETS[model]
    path = Path(config_path)  # type: ignore[arg-type]
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config fields")
    try:
        if "preset" in data:
            data = dict(data)
            name = data.pop("preset")
            return f"{name} ({path.name})", get_config(name, **data)
        return path.stem, config_from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc.args[0] if exc.args else exc}") from None


def _family(cfg) -> str:
    """The config's latent layout (``ModelConfig.latent_layout``): image, video, or vqvae (pixels)."""
    layout = cfg.latent_layout
    return "vqvae" if layout == "pixels" else layout


def _suggest(value: int, multiple: int) -> str:
    lo = value // multiple * multiple
    return f"{lo} or {lo + multiple}" if lo > 0 else f"{multiple}"


def default_pixels(cfg, compression: tuple[int, int, int]) -> tuple[int, int, int]:
    """The pixel shape (frames, height, width) that a config's default latent size corresponds to."""
    fam = _family(cfg)
    if fam == "vqvae":
        return tuple(cfg.input_size)  # type: ignore[return-value]
    t, s_h, s_w = compression
    if fam == "video":
        lt, lh, lw = cfg.input_size
        return (lt if t == 1 else 1 + (lt - 1) * t, lh * s_h, lw * s_w)
    side = cfg.input_size
    return (1, side * s_h, side * s_w)


def shaped_config(cfg, *, frames: int, height: int, width: int, compression: tuple[int, int, int],
                  latent_channels: int | None = None):
    """The config with its input size set for a (frames, height, width) pixel clip; clear errors if not."""
    fam = _family(cfg)
    for name, v in (("frames", frames), ("height", height), ("width", width)):
        if v < 1:
            raise ValueError(f"--{name} must be >= 1, got {v}")
    if fam == "vqvae":
        for name, v, d in zip(("frames", "height", "width"), (frames, height, width), cfg.downsample, strict=True):
            if v % d:
                raise ValueError(f"--{name} {v} is not a multiple of the VQ-VAE downsample {d}: use {_suggest(v, d)}")
        return cfg.replace(input_size=(frames, height, width))
    t, s_h, s_w = compression
    for name, v, s in (("height", height, s_h), ("width", width, s_w)):
        if v % s:
            raise ValueError(f"--{name} {v} is not a multiple of the VAE's spatial factor {s}: use {_suggest(v, s)}")
    lh, lw = height // s_h, width // s_w
    lt = -(-frames // t)  # causal video VAEs: 1 + 4k frames -> 1 + k latents; ceil(F / t) agrees
    if fam == "image":
        if frames != 1:
            raise ValueError(f"{type(cfg).__name__} is an image model: use --frames 1, or a VideoDiT/STDiT preset")
        if lh != lw:
            raise ValueError(f"{type(cfg).__name__} takes square inputs: use --height = --width, "
                             "or a VideoDiT preset for other aspect ratios")
        p = cfg.patch_size
        if lh % p:
            raise ValueError(f"latent side {lh} (= {height} px / {s_h}) is not divisible by patch size {p}: "
                             f"use a height/width that is a multiple of {p * s_h} (e.g. {_suggest(height, p * s_h)})")
        return cfg.with_latent(1, lh, lw, channels=latent_channels)
    pt, ph, pw = cfg.patch_size
    for name, n, p, px, s in (("frames", lt, pt, frames, t), ("height", lh, ph, height, s_h),
                              ("width", lw, pw, width, s_w)):
        if n % p and name == "frames":
            raise ValueError(f"latent frames {n} (= ceil({px} / VAE factor {s})) is not divisible by the "
                             f"temporal patch size {p}: choose --frames so that ceil(frames / {s}) is a multiple of {p}")
        if n % p:
            raise ValueError(f"latent {name} {n} (= {px} px / {s}) is not divisible by patch size {p}: use a "
                             f"--{name} that is a multiple of {p * s} (e.g. {_suggest(px, p * s)})")
    return cfg.with_latent(lt, lh, lw, channels=latent_channels)


def read_buckets(manifest: str) -> list[tuple[int, int, int, int]]:
    """(frames, height, width, clips) per training bucket of a manifest's kept rows.

    Uses ``bucket_frames/height/width`` when set, else the clip's own ``num_frames/height/width``.
    """
    from soraprep.manifest import read_manifest

    rows = read_manifest(manifest)
    counter: Counter[tuple[int, int, int]] = Counter()
    for r in rows:
        if r.get("keep") is False or r.get("error"):
            continue
        f = r.get("bucket_frames") or r.get("num_frames")
        h = r.get("bucket_height") or r.get("height")
        w = r.get("bucket_width") or r.get("width")
        if f and h and w:
            counter[(int(f), int(h), int(w))] += 1
    if not counter:
        raise ValueError(f"{manifest}: no kept rows with bucket_frames/height/width (or num_frames/height/width)")
    return [(f, h, w, n) for (f, h, w), n in sorted(counter.items())]


# ------------------------------------------------------------------------------------------------
# The estimate
# ------------------------------------------------------------------------------------------------


@dataclass
class Estimate:
    """Result of :func:`estimate`; ``to_dict()`` is what ``--json`` prints."""

    model: str
    shapes: list[Shape]
    gpu: hardware.GPU
    settings: dict[str, Any]
    samples: float | None
    train_flops: float | None
    gpu_hours: float | None
    memory: memory.MemoryEstimate
    data_prep: dict[str, Any] | None
    assumptions: list[str] = field(default_factory=list)
    layout: parallel.LayoutEval | None = None
    layout_plan: parallel.LayoutPlan | None = None
    online_flops: float | None = None  # VAE + text encoder forward FLOPs run inside training (online_encoders)
    utilisation: efficiency.Utilisation | None = None  # the mfu used: central value and range
    features: efficiency.Features | None = None  # what the efficiency model saw

    @property
    def compute_flops(self) -> float | None:
        """All counted work of the run: denoiser training plus online encoders."""
        return None if self.train_flops is None else self.train_flops + (self.online_flops or 0.0)

    def _hours_at(self, util: float) -> float | None:
        flops = self.compute_flops
        return None if flops is None else flops / (self.settings["peak_flops_per_gpu"] * util) / 3600

    @property
    def gpu_hours_range(self) -> tuple[float, float] | None:
        """(low, high) GPU-hours from the utilisation range; None when ``mfu`` was given."""
        u = self.utilisation
        if u is None or self.gpu_hours is None or u.source == "user":
            return None
        return self._hours_at(u.high), self._hours_at(u.low)  # type: ignore[return-value]

    @property
    def largest(self) -> Shape:
        return max(self.shapes, key=lambda s: s.count.activations.elements(self.settings["recompute"]))

    @property
    def forward_macs(self) -> float:
        """Per sample, averaged over the shapes by their share of samples."""
        return sum(s.weight * s.count.forward_macs for s in self.shapes)

    @property
    def wall_hours(self) -> float | None:
        return None if self.gpu_hours is None else self.gpu_hours / self.settings["num_gpus"]

    @property
    def cost(self) -> float | None:
        return None if self.gpu_hours is None else self.gpu_hours * self.gpu.price_per_hour

    def _range_dict(self) -> dict[str, Any]:
        rng = self.gpu_hours_range
        n, price = self.settings["num_gpus"], self.gpu.price_per_hour
        u = self.utilisation
        return {
            "gpu_hours_range": list(rng) if rng else None,
            "wall_hours_range": [h / n for h in rng] if rng else None,
            "cost_range": [h * price for h in rng] if rng else None,
            "mfu_range": [u.low, u.high] if u and u.source != "user" else None,
            "mfu_source": u.source if u else None,
            "efficiency_features": self.features.to_dict() if self.features else None,
        }

    def to_dict(self) -> dict[str, Any]:
        big = self.largest.count
        by_kind = big.params_by_kind()
        comp: dict[str, float] = {}
        for s in self.shapes:
            for k, v in s.count.macs_by_component().items():
                comp[k] = comp.get(k, 0) + s.weight * v
        single = len(self.shapes) == 1
        fwd = round(self.forward_macs) if single else self.forward_macs
        prep_cost = (self.data_prep or {}).get("cost") or 0.0
        return {
            "model": self.model,
            "params": big.params_total,
            "params_trainable": big.params_trainable,
            "params_per_token": by_kind["per_token"],
            "params_per_sample": by_kind["per_sample"],
            "params_by_kind": by_kind,
            "tokens": big.tokens if single else sum(s.weight * s.count.tokens for s in self.shapes),
            "forward_macs": fwd,
            "forward_flops": 2 * fwd,
            "flops_per_mac": 2,
            "forward_macs_by_component": {k: (round(v) if single else v) for k, v in comp.items()},
            "samples": self.samples,
            "train_flops_factor": self.settings["train_flops_factor"],
            "train_flops": self.train_flops,
            "online_encoder_flops": self.online_flops,
            "compute_flops": self.compute_flops,
            "gpu_hours": self.gpu_hours,
            "wall_hours": self.wall_hours,
            "cost": self.cost,
            **self._range_dict(),
            "memory_per_gpu_bytes": self.memory.total,
            "fits": self.memory.fits,
            "max_micro_batch": self.memory.max_micro_batch,
            "memory": self.memory.to_dict(),
            "gpu": self.gpu.to_dict(),
            "settings": self.settings,
            "shapes": [s.to_dict() for s in self.shapes],
            "model_detail": big.to_dict(),
            "naive_6nd_train_flops_per_sample": big.naive_6nd_flops(),
            "data_prep": self.data_prep,
            "total_cost": (self.cost or 0.0) + prep_cost if self.cost is not None or prep_cost else None,
            "assumptions": self.assumptions,
            "layout": self.layout_dict(),
        }

    def layout_dict(self) -> dict[str, Any] | None:
        """The ``layout`` block: the layout, its step time with communication, and (auto) the ranking."""
        if self.layout is None:
            return None
        ev = self.layout
        d = ev.to_dict()
        steps = None if self.samples is None else self.samples / ev.layout.samples_per_step
        gpu_h = None if steps is None else steps * ev.time.step_s * ev.layout.num_gpus / 3600
        d.update(
            steps=steps, gpu_hours_with_comm=gpu_h,
            wall_hours_with_comm=None if gpu_h is None else gpu_h / ev.layout.num_gpus,
            cost_with_comm=None if gpu_h is None else gpu_h * self.gpu.price_per_hour,
            links=(self.layout_plan.links.to_dict() if self.layout_plan else self.settings.get("links")),
            recommended=self.layout_plan is not None and self.layout_plan.best is not None,
            plan=self.layout_plan.to_dict() if self.layout_plan else None,
        )
        return d


def estimate(
    *,
    model: str | None = None,
    config_path: str | None = None,
    config: Any = None,
    frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    buckets: str | list[tuple[int, int, int, int]] | None = None,
    vae_compression: tuple[int, int, int] | None = None,
    latent_channels: int | None = None,
    clips: int | None = None,
    epochs: float = 1.0,
    steps: int | None = None,
    batch: int | None = None,
    micro_batch: int | None = None,
    gpu: str = "h100",
    num_gpus: int = 8,
    mfu: float | None = None,
    online_encoders: bool = False,
    text_tokens: int | None = None,
    price_per_hour: float | None = None,
    peak_tflops: float | None = None,
    gpu_memory_gib: float | None = None,
    precision: str = "bf16",
    recompute: str = "none",
    zero: int = 0,
    ema: bool = True,
    overhead_gib: float = 2.0,
    vae: str = "sd",
    vae_macs_per_pixel: float | None = None,
    prep_mfu: float = 0.3,
    text_encoder_params: float | None = None,
    caption_params: float | None = None,
    caption_frames: int = 8,
    caption_tokens_per_frame: int = 256,
    caption_output_tokens: int = 150,
    caption_mfu: float = 0.1,
    caption_throughput: float | None = None,
    source_hours: float | None = None,
    fps: float = 24.0,
    decode_fps: float = CURATION_FPS_PER_CORE,
    cpu_price_per_hour: float = 0.0446,
    tp: int | None = None,
    sp: int | None = None,
    sp_kind: str | None = None,
    pp: int | None = None,
    layout: str | None = None,
    gpus_per_node: int = 8,
    interconnect: str | None = None,
) -> Estimate:
    """Estimate FLOPs, memory, GPU-hours and cost of training one model (and preparing its data).

    Say how much training with ``clips`` (x ``epochs``) or ``steps`` x ``batch`` (global batch);
    without either, the per-sample numbers and memory are still computed and the totals are ``None``.
    ``mfu=None`` (default) uses the utilisation calibrated on published runs (:mod:`.efficiency`) and
    reports a range; a number overrides it. ``online_encoders`` counts the VAE and text encoder
    forward passes inside training (as runs that do not cache latents do) instead of under data_prep.

    Parallelism: ``tp``, ``sp`` (``sp_kind`` ulysses|ring) and ``pp`` (default 1 each; data parallelism
    takes the remaining GPUs), or ``layout="auto"`` to search tp/sp/pp, ZeRO stage, recompute and
    micro-batch (any of tp, sp, sp_kind, pp, micro_batch given stays fixed) for the cheapest layout that
    fits. ``gpus_per_node`` and ``interconnect`` (see :data:`soraprep.estimate.hardware.INTERCONNECTS`)
    set the links of the communication time.
    """
    # ---- validate the knobs first (configs fail loud, before any work) --------------------------
    for name, v in (("--mfu", mfu), ("--prep-mfu", prep_mfu), ("--caption-mfu", caption_mfu)):
        if v is not None and not (0 < v <= 1):
            raise ValueError(f"{name} must be in (0, 1] (a fraction of peak, e.g. 0.4), got {v}")
    if recompute not in RECOMPUTE_MODES:
        raise ValueError(f"--recompute must be one of {', '.join(RECOMPUTE_MODES)}, got {recompute!r}")
    if epochs <= 0:
        raise ValueError(f"--epochs must be > 0, got {epochs}")
    for name, v in (("--clips", clips), ("--steps", steps), ("--batch", batch)):
        if v is not None and v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if (steps is None) != (batch is None):
        raise ValueError("--steps and --batch go together (samples seen = steps x global batch)")
    if decode_fps <= 0 or fps <= 0:
        raise ValueError("--decode-fps and --fps must be > 0")
    if caption_throughput is not None and caption_throughput <= 0:
        raise ValueError(f"--caption-throughput must be > 0 clips/s per GPU, got {caption_throughput}")
    gpu_spec = hardware.get_gpu(gpu, peak_tflops=peak_tflops, memory_gib=gpu_memory_gib,
                                price_per_hour=price_per_hour)
    if layout not in (None, "auto", "manual"):
        raise ValueError(f"--layout must be 'auto' (search for the cheapest layout that fits), got {layout!r}")
    if gpus_per_node < 1:
        raise ValueError(f"--gpus-per-node must be >= 1, got {gpus_per_node}")
    links = parallel.Links(*hardware.get_links(gpu_spec.name, interconnect), gpus_per_node)
    fixed_mb = micro_batch
    tp_, sp_, pp_ = tp or 1, sp or 1, pp or 1
    if num_gpus >= 1 and num_gpus % (tp_ * sp_ * pp_):
        raise ValueError(f"tp x sp x pp = {tp_ * sp_ * pp_} does not divide --num-gpus {num_gpus}: use degrees "
                         "whose product divides it")
    dp = max(1, num_gpus // (tp_ * sp_ * pp_))
    if micro_batch is None:
        micro_batch = (max(1, -(-batch // dp)) if batch else 1) if pp_ == 1 else 1
    grad_accum = max(1, -(-batch // (dp * micro_batch))) if batch else pp_
    memory.check_training_options(precision=precision, zero=zero, num_gpus=num_gpus, micro_batch=micro_batch)
    peak = gpu_spec.peak_flops(precision)

    # ---- model and shapes ----------------------------------------------------------------------
    if config is not None:
        name, cfg = type(config).__name__, config
    else:
        name, cfg = load_config(model=model, config_path=config_path)
    fam = _family(cfg)
    if vae_compression is not None:
        if len(vae_compression) != 3 or min(vae_compression) < 1:
            raise ValueError(f"--vae-compression must be T,H,W positive integers, got {vae_compression}")
        compression = tuple(int(x) for x in vae_compression)
    else:
        compression = SD_VAE_COMPRESSION
    if fam == "vqvae":
        compression = (1, 1, 1)  # the VQ-VAE works on pixels
    if buckets is not None:
        if frames or height or width:
            raise ValueError("give either --buckets MANIFEST or --frames/--height/--width, not both")
        table = read_buckets(buckets) if isinstance(buckets, str) else list(buckets)
    else:
        f0, h0, w0 = default_pixels(cfg, compression)
        table = [(frames or f0, height or h0, width or w0, 1)]
    total = sum(n for *_, n in table)
    shapes = []
    for f, h, w, n in table:
        c = shaped_config(cfg, frames=f, height=h, width=w, compression=compression,
                          latent_channels=latent_channels)
        shapes.append(Shape(f, h, w, n / total, count_model(c, name=name)))

    # ---- training amount, FLOPs, time ------------------------------------------------------------
    if steps is not None:
        samples: float | None = float(steps * batch)  # type: ignore[operator]
    elif clips is not None:
        samples = clips * epochs
    elif isinstance(buckets, str):
        samples = total * epochs
        clips = total
    else:
        samples = None
    enc_per_sample, text_tokens, text_encoder_params = _encode_flops_per_sample(
        cfg, shapes, fam=fam, vae=vae, vae_macs_per_pixel=vae_macs_per_pixel, text_tokens=text_tokens,
        text_encoder_params=text_encoder_params)

    local_batch = batch / num_gpus if batch else float(micro_batch or 1)  # samples per GPU per step

    def utilisation(rec: str) -> tuple[efficiency.Utilisation, efficiency.Features]:
        """The given mfu, or the calibrated one for this run's features (recompute as chosen)."""
        fwd_ = 2 * sum(s.weight * s.count.forward_macs for s in shapes)
        work_ = (4 if rec == "full" else 3) * fwd_ + (enc_per_sample if online_encoders else 0.0)
        f = efficiency.Features(
            width=float(getattr(cfg, "hidden_size", None) or 1152),
            tokens=sum(s.weight * s.count.forward_macs * s.count.tokens for s in shapes)
            / max(1, sum(s.weight * s.count.forward_macs for s in shapes)),
            hopper=gpu_spec.name in efficiency.HOPPER, recompute_full=rec == "full",
            online_share=(enc_per_sample / work_ if online_encoders and work_ else 0.0), num_gpus=num_gpus,
            step_seconds=work_ * local_batch / peak)
        if mfu is None:
            return efficiency.predict_utilisation(f), f
        return efficiency.Utilisation(mfu, mfu, mfu, "user"), f

    layout_mfu = utilisation(recompute)[0].central  # the step-time model of the layout search needs a rate
    # ---- parallel layout, memory (largest shape) ------------------------------------------------
    big = max(shapes, key=lambda s: s.count.activations.elements(recompute))
    overhead = int(overhead_gib * memory.GIB)
    plan = None
    if layout == "auto":
        plan = parallel.plan_layout(big.count, gpu=gpu_spec, num_gpus=num_gpus, gpus_per_node=gpus_per_node,
                                    interconnect=interconnect, batch=batch, mfu=layout_mfu, precision=precision, ema=ema,
                                    overhead_bytes=overhead, tp=tp, sp=sp, sp_kind=sp_kind, pp=pp,
                                    micro_batch=fixed_mb)
    if plan is not None and plan.best is not None:
        chosen = plan.best
        lo = chosen.layout
        recompute, zero, micro_batch = lo.recompute, lo.zero, lo.micro_batch
        big = max(shapes, key=lambda s: s.count.activations.elements(recompute))
    else:
        lo = parallel.Layout(tp_, sp_, sp_kind or "ulysses", pp_, dp, zero, recompute, micro_batch, grad_accum)
        chosen = parallel.evaluate_layout(big.count, lo, gpu=gpu_spec, links=links, mfu=layout_mfu, precision=precision,
                                          ema=ema, overhead_bytes=overhead)
    mem = chosen.memory

    factor = 4 if recompute == "full" else 3
    fwd_flops = 2 * sum(s.weight * s.count.forward_macs for s in shapes)
    train_flops = factor * fwd_flops * samples if samples is not None else None
    online_flops = enc_per_sample * samples if online_encoders and samples is not None else None
    util, feats = utilisation(recompute)
    if abs(util.central - layout_mfu) > 1e-9 * util.central:  # the layout changed recompute: its step time too
        chosen = parallel.evaluate_layout(big.count, chosen.layout, gpu=gpu_spec, links=links, mfu=util.central,
                                          precision=precision, ema=ema, overhead_bytes=overhead)
    compute = None if train_flops is None else train_flops + (online_flops or 0.0)
    gpu_hours = compute / (peak * util.central) / 3600 if compute is not None else None

    settings = {
        "frames": shapes[0].frames if len(shapes) == 1 else None,
        "height": shapes[0].height if len(shapes) == 1 else None,
        "width": shapes[0].width if len(shapes) == 1 else None,
        "vae_compression": list(compression), "gpu": gpu_spec.name, "num_gpus": num_gpus, "mfu": util.central,
        "online_encoders": online_encoders, "text_tokens": text_tokens,
        "precision": precision, "recompute": recompute, "zero": zero, "ema": ema, "micro_batch": micro_batch,
        "clips": clips, "epochs": epochs, "steps": steps, "batch": batch, "train_flops_factor": factor,
        "peak_flops_per_gpu": peak, "tp": lo.tp, "sp": lo.sp, "sp_kind": lo.sp_kind, "pp": lo.pp, "dp": lo.dp,
        "gpus_per_node": gpus_per_node, "links": links.to_dict(),
    }
    assumptions = [
        "FLOPs = 2 x MACs; only matmul-like work (linear, attention, conv) is counted",
        f"training FLOPs = {factor} x forward x samples "
        + ("(forward + backward + full recompute)" if factor == 4 else "(forward + 2 x forward for backward)"),
        ("gpu_hours = counted FLOPs / (peak dense throughput x mfu); mfu given by the user" if util.source == "user"
         else f"gpu_hours = counted FLOPs / (peak dense throughput x utilisation {util.central:.3f}); utilisation "
              f"{util.source}: range {util.low:.3f}-{util.high:.3f}"),
        "memory: AdamW, ZeRO-style mixed precision (16 B/param) + fp32 EMA; flash attention (no N x N scores)",
        ("online encoders: VAE and text encoder forward passes run every step and are counted in gpu_hours"
         if online_encoders else
         "denoiser only: VAE, text encoder and captioning costs are under data_prep (latents/text cached once)"),
        f"layout {lo.describe()}: gpu_hours assume perfect scaling; layout.gpu_hours_with_comm adds the "
        "exposed communication and pipeline bubble (docs/estimate-parallel.md)",
    ]
    if plan is not None and plan.best is None:
        assumptions.append(f"--layout auto: none of the {len(plan.candidates)} layouts fits; showing {lo.describe()}")
    prep = None
    if clips is not None and fam != "vqvae":
        prep = _data_prep(cfg, shapes, clips=clips, gpu=gpu_spec, peak=peak, vae=vae,
                          vae_macs_per_pixel=vae_macs_per_pixel, prep_mfu=prep_mfu,
                          text_encoder_params=text_encoder_params, caption_params=caption_params,
                          caption_frames=caption_frames, caption_tokens_per_frame=caption_tokens_per_frame,
                          caption_output_tokens=caption_output_tokens, caption_mfu=caption_mfu,
                          caption_throughput=caption_throughput, source_hours=source_hours, fps=fps,
                          decode_fps=decode_fps, cpu_price_per_hour=cpu_price_per_hour, online=online_encoders)
        if vae == "sd" and vae_macs_per_pixel is None and compression[0] > 1:
            assumptions.append("VAE encode cost: SD VAE per frame (the temporal compression stage is not counted; "
                               "--vae hunyuan-video-vae|cogvideox-vae|wan2.1-vae|opensora-1.2-vae for a 3D VAE)")
    return Estimate(name, shapes, gpu_spec, settings, samples, train_flops, gpu_hours, mem, prep, assumptions,
                    chosen, plan, online_flops=online_flops, utilisation=util, features=feats)


def _encode_flops_per_sample(cfg, shapes: list[Shape], *, fam: str, vae: str, vae_macs_per_pixel,
                             text_tokens: int | None, text_encoder_params) -> tuple[float, int, float]:
    """(VAE + text encoder forward FLOPs per training sample, text tokens, text encoder params).

    Text tokens default to the config's caption length for text-conditioned models; the text
    encoder defaults to T5-v1.1-XXL's encoder when there are tokens.
    """
    if fam == "vqvae":
        return 0.0, 0, 0.0
    if text_tokens is None:
        text_tokens = getattr(cfg, "text_len", 0) if getattr(cfg, "conditioning", "") == "text" else 0
    if text_encoder_params is None:
        text_encoder_params = T5_XXL_ENCODER_PARAMS if text_tokens else 0
    vae_flops = sum(s.weight * 2 * vae_encode_cost(vae, frames=s.frames, height=s.height, width=s.width,
                                                   macs_per_pixel=vae_macs_per_pixel).macs_per_clip for s in shapes)
    return vae_flops + 2 * float(text_encoder_params) * text_tokens, int(text_tokens), float(text_encoder_params)


def _data_prep(cfg, shapes: list[Shape], *, clips: int, gpu: hardware.GPU, peak: float, vae: str,
               vae_macs_per_pixel, prep_mfu: float, text_encoder_params, caption_params: float | None,
               caption_frames: int, caption_tokens_per_frame: int, caption_output_tokens: int,
               caption_mfu: float, caption_throughput, source_hours, fps: float, decode_fps: float,
               cpu_price_per_hour: float, online: bool = False) -> dict[str, Any]:
    """Once-per-clip costs of preparing the data: curation, captioning, text and VAE encoding."""

    def gpu_part(flops: float, util: float, source: str, **extra) -> dict[str, Any]:
        hours = flops / (peak * util) / 3600
        return {"flops": flops, "gpu_hours": hours, "cost": hours * gpu.price_per_hour, "mfu": util,
                "source": source, **extra}

    vae_flops = 0.0
    src = ""
    for s in shapes:
        vc = vae_encode_cost(vae, frames=s.frames, height=s.height, width=s.width, macs_per_pixel=vae_macs_per_pixel)
        vae_flops += s.weight * clips * 2 * vc.macs_per_clip
        src = vc.source
    out: dict[str, Any] = {"clips": clips}
    if online:  # encoded every training step instead: counted in the training gpu_hours
        vae_flops, src = 0.0, "online during training (counted in gpu_hours)"
    out["vae_encode"] = gpu_part(vae_flops, prep_mfu, src, vae=vae)

    text_len = getattr(cfg, "text_len", 0) if getattr(cfg, "conditioning", "") == "text" else 0
    if text_encoder_params is None:
        text_encoder_params = T5_XXL_ENCODER_PARAMS if text_len else 0
    out["text_encode"] = gpu_part(0.0 if online else 2 * text_encoder_params * text_len * clips, prep_mfu,
                                  "online during training (counted in gpu_hours)" if online
                                  else "2 x encoder params x caption tokens per clip",
                                  params=text_encoder_params, tokens_per_clip=text_len)

    if caption_params is None:  # caption only what a text-conditioned model needs captions for
        caption_params = DEFAULT_CAPTION_PARAMS if text_len else 0
    cap_tokens = caption_frames * caption_tokens_per_frame + caption_output_tokens
    cap_flops = 2 * caption_params * cap_tokens * clips
    if caption_throughput:
        hours = clips / caption_throughput / 3600
        out["captioning"] = {"flops": cap_flops, "gpu_hours": hours, "cost": hours * gpu.price_per_hour,
                             "source": f"measured throughput {caption_throughput:g} clips/s per GPU"}
    else:
        out["captioning"] = gpu_part(cap_flops, caption_mfu,
                                     "2 x VLM params x (frames x tokens/frame + output tokens) per clip",
                                     params=caption_params, tokens_per_clip=cap_tokens)

    mean_frames = sum(s.weight * s.frames for s in shapes)
    derived = source_hours is None
    hours_video = clips * mean_frames / fps / 3600 if derived else float(source_hours)
    core_hours = hours_video * 3600 * fps / decode_fps / 3600
    out["curation"] = {
        "source_video_hours": hours_video, "decoded_frames": hours_video * 3600 * fps,
        "cpu_core_hours": core_hours, "cost": core_hours * cpu_price_per_hour,
        "decode_fps_per_core": decode_fps, "cpu_price_per_core_hour": cpu_price_per_hour,
        "source": ("kept clip duration only (a lower bound; pass --source-hours)" if derived
                   else "given source hours") + ", one decode pass + the default cut",
    }
    gpu_keys = ("vae_encode", "text_encode", "captioning")
    out["gpu_hours"] = sum(out[k]["gpu_hours"] for k in gpu_keys)
    out["cost"] = sum(out[k]["cost"] for k in (*gpu_keys, "curation"))
    return out


def fmt_si(x: float | None, unit: str = "") -> str:
    """1.23e15 -> '1.23 P' (+unit)."""
    if x is None:
        return "-"
    for factor, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def fmt_bytes(n: float) -> str:
    return f"{n / memory.GIB:.2f} GiB"


def fmt_hours(h: float | None) -> str:
    if h is None:
        return "-"
    if h >= 48:
        return f"{h:,.0f} h ({h / 24:,.1f} days)"
    return f"{h:,.2f} h"
