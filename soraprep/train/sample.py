"""Sample from a training checkpoint: rebuild the model from the checkpoint's saved config, classifier-free
guidance, DDPM / DDIM (``objective: ddpm``) or ODE / SDE (``objective: transport``), decode the latents with
the autoencoder the data was encoded with, write one mp4 per sample (PyAV, H.264) and a PNG grid.

    from soraprep.train.sample import sample
    res = sample("runs/x/checkpoints/step-0020000.pt", "samples/", prompts=["a red car on a coast road"],
                 steps=50, cfg_scale=4.0, sampler="ddim")
    res.videos        # [Path("samples/sample-000.mp4")], res.grid -> Path("samples/grid.png")
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

SAMPLERS = ("ddim", "ddpm", "ode", "sde")


@dataclass
class SampleResult:
    out: Path
    videos: list[Path] = field(default_factory=list)
    grid: Path | None = None
    frames: np.ndarray | None = None  # (N, T, H, W, 3) uint8


def _cfg_wrapper(model, cfg_scale: float):
    """``fn(x, t, **kw)`` over a batch [conditional; unconditional] whose halves share x (DiT's convention);
    guides the first C channels, passes the learned-variance channels through."""

    def fn(x: torch.Tensor, t: torch.Tensor, **kw) -> torch.Tensor:
        half = x[: len(x) // 2]
        out = model(torch.cat([half, half]), t, **kw)  # (2N, C or 2C, ...)
        c = half.shape[1]
        cond, uncond = out[:, :c].chunk(2)
        guided = uncond + cfg_scale * (cond - uncond)
        return torch.cat([torch.cat([guided, guided]), out[:, c:]], dim=1)

    return fn


def _conditions(model, mc, data: dict[str, Any], *, prompts, class_labels, num_samples, text_encoder, device):
    """(n, conditional kwargs, unconditional kwargs or None). The config says what conditions its model:
    ``conditioning`` / ``text_input`` / ``label_classes`` / ``null_condition`` (``ModelConfig`` hooks)."""
    from soraprep.models.layers import pool_text

    if mc.conditioning == "text":
        if not prompts:
            raise ValueError("this model is text-conditioned: give --prompt TEXT (one or more)")
        if class_labels:
            raise ValueError("this model is text-conditioned: use --prompt, not --class-label")
        from soraprep.models.text_encoder import TextEncoder

        saved = data.get("text_encoder") or {}
        spec = text_encoder or saved.get("spec")
        if not spec:
            raise ValueError("the checkpoint names no text encoder: pass --text-encoder PATH")
        enc = TextEncoder.from_pretrained(spec, max_length=saved.get("max_length"), device=device)
        emb, mask = enc.encode(list(prompts))  # (N, S, D), (N, S)
        n = len(prompts)
        if mc.text_input == "pooled":
            return n, {"y": pool_text(emb.float(), mask)}, {"y": model.null_condition(n)}
        null_y, null_mask = model.null_condition(n, emb.shape[1])
        return n, {"y": emb.float(), "mask": mask}, {"y": null_y, "mask": null_mask}
    if prompts:
        raise ValueError("this model is not text-conditioned: use --class-label K (or nothing)")
    num_classes = mc.label_classes  # labels 0..K-1; K is the null label (DiT: the extra row; U-ViT: the last)
    if mc.conditioning == "none" or num_classes <= 0:
        if class_labels:
            raise ValueError("this model is unconditional: drop --class-label")
        return num_samples or 1, {}, None
    labels = list(class_labels) if class_labels else [i % num_classes for i in range(num_samples or 1)]
    bad = [k for k in labels if not 0 <= k < num_classes]
    if bad:
        raise ValueError(f"class labels {bad} are outside 0..{num_classes - 1}")
    n = len(labels)
    y = torch.tensor(labels, dtype=torch.long, device=device)
    null = torch.full_like(y, num_classes)
    return n, {"y": y}, ({"y": null} if mc.null_condition else None)


def _cat_kwargs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {k: torch.cat([a[k], b[k].to(a[k].device, a[k].dtype)]) for k in a}


def write_mp4(path: Path, frames: np.ndarray, fps: Fraction | int = 8) -> Path:
    """Write (T, H, W, 3) uint8 frames as H.264 (yuv420p; odd sizes are cropped by one pixel)."""
    import av

    t, h, w, _ = frames.shape
    frames = frames[:, : h - h % 2, : w - w % 2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "18"}
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_grid(path: Path, frames: np.ndarray, columns: int = 8) -> Path:
    """One row per sample, up to ``columns`` evenly spaced frames per row, as a PNG."""
    import cv2

    n, t = frames.shape[:2]
    pick = np.unique(np.linspace(0, t - 1, min(t, columns)).round().astype(int))
    rows = [np.concatenate([frames[i, j] for j in pick], axis=1) for i in range(n)]
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
    return path


@torch.no_grad()
def sample(checkpoint: str | Path, out: str | Path, *, prompts: list[str] | None = None,
           class_labels: list[int] | None = None, num_samples: int | None = None, steps: int = 50,
           cfg_scale: float = 4.0, sampler: str = "ddim", seed: int = 0, weights: str = "ema",
           vae: str | None = None, text_encoder: str | None = None, frames: int | None = None,
           size: tuple[int, int] | None = None, fps: int = 8, device: str = "auto") -> SampleResult:
    """Generate clips from ``checkpoint`` into ``out`` (see the module docstring).

    ``frames`` / ``size`` (pixels) change the latent size for models that accept any size (video DiTs);
    the default is the largest bucket the model was trained on.
    """
    from soraprep.diffusion.gaussian import GaussianDiffusion, create_diffusion
    from soraprep.diffusion.transport import Sampler, Transport
    from soraprep.models import build_model, config_from_dict
    from soraprep.train.autoencoder import load_autoencoder
    from soraprep.train.setup import make_objective

    if sampler not in SAMPLERS:
        raise ValueError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} not found")
    try:
        ckpt = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as exc:  # truncated, empty, or not a torch file
        raise ValueError(f"{checkpoint} cannot be loaded ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                         "a run killed while saving leaves a truncated file: pick an older step-*.pt") from exc
    if not isinstance(ckpt, dict) or "model_config" not in ckpt:
        raise ValueError(f"{checkpoint} is not a soraprep training checkpoint (no model_config)")
    mc = config_from_dict(ckpt["model_config"])
    model = build_model(mc)
    model.load_state_dict(ckpt[weights])
    model.to(dev).eval()
    tc = ckpt["config"]
    objective = make_objective(tc["objective"], tc["transport_args"] if tc["objective"] == "transport"
                               else tc["diffusion_args"], mc)
    if isinstance(objective, GaussianDiffusion) and sampler not in ("ddim", "ddpm"):
        raise ValueError(f"this model was trained with objective 'ddpm': use --sampler ddim or ddpm, not {sampler}")
    if isinstance(objective, Transport) and sampler not in ("ode", "sde"):
        raise ValueError(f"this model was trained with objective 'transport': use --sampler ode or sde, not {sampler}")

    data = ckpt["data"]
    ae = load_autoencoder(vae or data["autoencoder"]["spec"]).to(dev)
    c, t, h, w = data["latent_shapes"][0]
    if frames is not None or size is not None:
        if mc.latent_layout != "video":
            raise ValueError("--frames/--size need a video DiT (image DiT / U-ViT sample at their trained size)")
        t2, h2, w2 = ae.latent_shape(frames or t * ae.compression[0], *(size or (h * ae.compression[1],
                                                                                 w * ae.compression[2])))
        t, h, w = t2, h2, w2
    n, cond, uncond = _conditions(model, mc, data, prompts=prompts, class_labels=class_labels,
                                  num_samples=num_samples, text_encoder=text_encoder, device=dev)
    video = mc.latent_layout == "video"
    shape = (n, c, t, h, w) if video else (n, c, h, w)
    g = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(shape, generator=g).to(dev)
    guided = uncond is not None and cfg_scale != 1.0
    fn, kw = model, cond
    if guided:
        fn, kw, z = _cfg_wrapper(model, cfg_scale), _cat_kwargs(cond, uncond), torch.cat([z, z])
    if isinstance(objective, GaussianDiffusion):
        dargs = {k: v for k, v in tc["diffusion_args"].items() if k != "learn_sigma"}
        from soraprep.train.setup import learns_sigma

        try:
            sch = create_diffusion(f"ddim{steps}" if sampler == "ddim" else str(steps),
                                   learn_sigma=learns_sigma(mc), **dargs)
        except ValueError:  # "ddimN" needs a stride that gives exactly N steps; spread evenly instead
            sch = create_diffusion(str(steps), learn_sigma=learns_sigma(mc), **dargs)
        loop = sch.ddim_sample_loop if sampler == "ddim" else sch.p_sample_loop
        x = loop(fn, tuple(z.shape), noise=z, model_kwargs=kw, generator=g if dev.type == "cpu" else None,
                 device=dev)
    else:
        s = Sampler(objective)
        run = s.sample_ode(method="heun", num_steps=steps) if sampler == "ode" else \
            s.sample_sde(num_steps=steps, generator=g if dev.type == "cpu" else None)
        x = run(z, fn, **kw)
    x = x[:n] / float(data["latent_scale"])  # (N, C, [T,] H, W) unscaled latents
    if not video:
        x = x.unsqueeze(2)
    pixels = ae.decode(x.float())  # (N, 3, T, H, W) in [-1, 1]
    frames_u8 = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res = SampleResult(out, frames=frames_u8)
    for i in range(n):
        res.videos.append(write_mp4(out / f"sample-{i:03d}.mp4", frames_u8[i], fps=fps))
    res.grid = write_grid(out / "grid.png", frames_u8)
    (out / "samples.json").write_text(json.dumps({
        "checkpoint": str(Path(checkpoint).resolve()), "step": ckpt["step"], "weights": weights,
        "prompts": prompts, "class_labels": cond["y"].tolist() if "y" in cond and cond["y"].ndim == 1 else None,
        "sampler": sampler, "steps": steps, "cfg_scale": cfg_scale if guided else 1.0, "seed": seed,
        "latent_shape": list(shape[1:]), "videos": [p.name for p in res.videos], "grid": res.grid.name}, indent=1))
    return res
