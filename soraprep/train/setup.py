"""What the training loop builds from a :class:`TrainConfig` and the encoded data: the model config (sizes
and conditioning taken from the latents), the objective, the FLOP counts for MFU, initialisation from a
released checkpoint, and activation checkpointing. Torch is imported by the functions that need it."""

from __future__ import annotations

from typing import Any

from soraprep.train.config import ConfigError, TrainConfig


def model_config_for(cfg: TrainConfig, data: Any) -> Any:
    """The preset's config with ``model_args`` applied and latent channels / size / conditioning set from
    the data (``data``: a :class:`~soraprep.train.data.LatentData`). What the data sets is the config's own
    business (``ModelConfig.fit_data``); this function only names the preset and words the errors."""
    from soraprep.models.config import get_config

    base = get_config(cfg.model)
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.model_args.items()}  # YAML lists
    args = base._renamed(args)  # old field names (e.g. U-ViT's img_size) still work in model_args

    def fixed(name: str, value: Any) -> None:
        if name in args and args[name] != value and not (isinstance(value, tuple) and tuple(args[name]) == value):
            raise ConfigError(f"model_args.{name}={args[name]!r} does not match the encoded data ({value!r}); "
                              f"remove it (it is set from {cfg.data}/index.json)")
        args[name] = value

    try:
        return base.fit_data(args, data, cfg.caption_dropout, fixed)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"model {cfg.model}: {exc}") from exc


def has_null_condition(model_config: Any) -> bool:
    """Whether the model can be trained with caption/label dropout (and sampled with CFG)."""
    return bool(getattr(model_config, "null_condition", False))


def learns_sigma(model_config: Any) -> bool:
    """The model's forward returns 2C channels (noise + variance interpolation)."""
    return bool(getattr(model_config, "learns_sigma", False))


def make_objective(objective: str, args: dict[str, Any], model_config: Any):
    """GaussianDiffusion (``ddpm``) or Transport (``transport``) from the config's keyword arguments."""
    try:
        if objective == "ddpm":
            from soraprep.diffusion.gaussian import create_diffusion

            args = dict(args)
            if args.pop("learn_sigma", learns_sigma(model_config)) != learns_sigma(model_config):
                raise ConfigError("diffusion_args.learn_sigma must match the model's learn_sigma")
            return create_diffusion(learn_sigma=learns_sigma(model_config), **args)
        from soraprep.diffusion.transport import Transport

        return Transport(**args)
    except (TypeError, ValueError) as exc:  # unknown key, bad value (e.g. noise_schedule: foo)
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{'diffusion_args' if objective == 'ddpm' else 'transport_args'}: {exc}") from exc


def timesteps_from_uniform(objective: Any, u: Any) -> Any:
    """Map uniform draws u in [0, 1) to the objective's training times (int steps or float t)."""
    import torch

    from soraprep.diffusion.gaussian import GaussianDiffusion

    if isinstance(objective, GaussianDiffusion):
        return (u * objective.num_timesteps).long().clamp(max=objective.num_timesteps - 1)
    t0, t1 = objective.interval(train=True)
    return (u * (t1 - t0) + t0).to(torch.float32)


def flops_per_sample(model_config: Any, latent_shape: tuple[int, ...]) -> tuple[float, int]:
    """(training FLOPs per sample = 3 x forward, visual tokens per sample) from the compute estimator,
    for latents of shape (C, T', H', W'). Recomputation is not counted (model FLOPs, as MFU wants)."""
    from soraprep.estimate.flops import count_model

    _, t, h, w = latent_shape
    count = count_model(model_config.with_latent(t, h, w))
    return 3.0 * count.forward_flops, count.tokens


def peak_flops(cfg: TrainConfig, device: Any, bf16: bool) -> float | None:
    """Peak FLOP/s of one device for MFU: ``peak_tflops``, else the ``gpu`` preset or the CUDA device name."""
    if cfg.peak_tflops:
        return cfg.peak_tflops * 1e12
    if device.type != "cuda" and not cfg.gpu:
        return None
    from soraprep.estimate.hardware import get_gpu

    name = cfg.gpu
    if name is None:
        import torch

        dev = torch.cuda.get_device_name(device).lower()
        for key, preset in (("h200", "h200"), ("h100 pcie", "h100-pcie"), ("h100", "h100-sxm"), ("h800", "h800"),
                            ("a100", "a100-80gb"), ("a800", "a800"), ("l40s", "l40s"), ("4090", "rtx-4090")):
            if key in dev:
                name = preset
                break
        else:
            return None
    return get_gpu(name).peak_flops("bf16" if bf16 else "fp32")


def load_init(model: Any, path: str) -> dict[str, list[str]]:
    """Initialise from a released DiT / SiT (bare state dict) or a soraprep checkpoint (``ema`` preferred).
    Tensors whose name and shape match are copied; the rest (e.g. a label table of another size, the
    fixed positions of another resolution) keep their fresh init. Returns what was skipped."""
    import torch

    from soraprep.models.dit import load_state_dict_file

    sd = load_state_dict_file(path)
    own = model.state_dict()
    loaded, mismatched = [], []
    with torch.no_grad():
        for k, v in sd.items():
            if k in own and own[k].shape == v.shape:
                own[k].copy_(v)
                loaded.append(k)
            elif k in own:
                mismatched.append(k)
    unexpected = sorted(set(sd) - set(own))
    if not loaded:
        raise ConfigError(f"init_from {path}: no tensor matches the model (is it a checkpoint of {type(model).__name__}?)")
    return {"loaded": loaded, "shape_mismatch": mismatched, "unexpected": unexpected,
            "missing": sorted(set(own) - set(sd))}


def enable_activation_checkpointing(model: Any) -> int:
    """Recompute every transformer block in backward (``torch.utils.checkpoint``, non-reentrant). The
    blocks' ``forward`` is wrapped in place, so state-dict names do not change. Returns the block count."""
    from torch.utils.checkpoint import checkpoint

    blocks = list(getattr(model, "blocks", [])) + list(getattr(model, "in_blocks", []))
    blocks += ([model.mid_block] if hasattr(model, "mid_block") else []) + list(getattr(model, "out_blocks", []))
    for blk in blocks:
        fwd = blk.forward

        def forward(*args, _fwd=fwd, _blk=blk, **kwargs):
            if _blk.training:
                return checkpoint(_fwd, *args, use_reentrant=False, **kwargs)
            return _fwd(*args, **kwargs)

        blk.forward = forward
    return len(blocks)
