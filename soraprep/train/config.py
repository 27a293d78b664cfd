"""``TrainConfig``: the training run as one typed, torch-free dataclass; YAML keys are its field names.

Every checkpoint stores ``config.to_dict()`` (plain JSON types), so a run can be inspected, resumed or
sampled from without the YAML file. Unknown keys fail at once with the list of valid ones.

Example ``train.yaml``::

    data: latents/                # folder written by `soraprep encode`
    out: runs/stdit-s             # checkpoints and log.jsonl go here
    model: STDiT-S/2              # any preset of soraprep.models (DiT-*, SiT-*, U-ViT-*, VideoDiT-*, STDiT-*)
    model_args: {depth: 6}        # overrides of the preset's config fields
    objective: ddpm               # ddpm (DDPM/DDIM, soraprep.diffusion.gaussian) | transport (SiT)
    steps: 20000
    batch_size: 64                # global batch per optimizer step (all ranks together)
    micro_batch: 16               # per rank per forward; batch_size / (micro_batch * ranks) accumulation steps
    lr: 1.0e-4
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OBJECTIVES = ("ddpm", "transport")
PRECISIONS = ("auto", "bf16", "fp32")


class ConfigError(ValueError):
    """A training config that cannot work; the message says how to fix it."""


@dataclass(frozen=True)
class TrainConfig:
    data: str  # latents folder from `soraprep encode` (holds index.json)
    out: str  # run folder: checkpoints/, log.jsonl, config.json
    model: str = "DiT-S/2"  # preset name (soraprep.models.PRESETS)
    model_args: dict[str, Any] = field(default_factory=dict)  # preset field overrides, e.g. {depth: 4}
    init_from: str | None = None  # released DiT/SiT checkpoint (or one of ours) to start from
    objective: str = "ddpm"  # ddpm | transport
    diffusion_args: dict[str, Any] = field(default_factory=dict)  # create_diffusion(...) keyword arguments
    transport_args: dict[str, Any] = field(default_factory=dict)  # Transport(...) keyword arguments
    steps: int = 1000  # optimizer steps
    batch_size: int = 8  # global batch per optimizer step
    micro_batch: int | None = None  # per-rank forward batch; None -> batch_size / ranks (no accumulation)
    lr: float = 1e-4
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0  # linear warmup from 0 to lr
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    ema_decay: float = 0.9999  # EMA of the weights (kept in fp32; sampling uses it by default)
    precision: str = "auto"  # auto (bf16 autocast where supported: CUDA with bf16) | bf16 | fp32
    activation_checkpointing: bool = False  # recompute each transformer block in backward
    caption_dropout: float = 0.1  # share of samples trained with the null caption / label (for CFG)
    seed: int = 0  # data order, timesteps, noise and caption dropout all derive from it
    log_every: int = 10
    ckpt_every: int = 500  # also at the last step
    keep_checkpoints: int = 0  # keep only the newest N step-*.pt files; 0 keeps all
    resume: bool = True  # continue from the newest checkpoint in out/checkpoints
    device: str = "auto"  # auto | cpu | cuda
    gpu: str | None = None  # GPU preset for MFU (soraprep.estimate.hardware); None -> detect from the device name
    peak_tflops: float | None = None  # override the peak used for MFU (e.g. a CPU's)
    progress: bool = True  # rich progress bar on rank 0

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        need(self.objective in OBJECTIVES, f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        need(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        need(self.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {self.device!r}")
        need(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.micro_batch is None or self.micro_batch >= 1, "micro_batch must be >= 1 (or null)")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        need(0.0 <= self.caption_dropout < 1.0, f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        need(self.grad_clip >= 0, "grad_clip must be >= 0 (0 disables clipping)")
        need(self.log_every >= 1 and self.ckpt_every >= 1, "log_every and ckpt_every must be >= 1")
        need(self.keep_checkpoints >= 0, "keep_checkpoints must be >= 0 (0 keeps every checkpoint)")
        need(len(self.adam_betas) == 2, "adam_betas takes two numbers, e.g. [0.9, 0.999]")
        from soraprep.models.config import PRESETS

        need(self.model in PRESETS, f"unknown model {self.model!r}; choose one of: {', '.join(sorted(PRESETS))}")
        need(not self.model.startswith("VQVAE"), "a VQ-VAE is the autoencoder, not a diffusion model: pick a "
             "DiT-*, SiT-*, U-ViT-*, VideoDiT-* or STDiT-* preset")
        names = {f.name for f in dataclasses.fields(PRESETS[self.model])}
        unknown = sorted(set(self.model_args) - names)
        need(not unknown, f"model_args {unknown} are not fields of {self.model}; valid: {sorted(names)}")

    def accumulation(self, world_size: int) -> tuple[int, int]:
        """(micro_batch, accumulation steps) for ``world_size`` ranks; fails loud when it does not divide."""
        micro = self.micro_batch or max(1, self.batch_size // world_size)
        if self.batch_size % (micro * world_size):
            raise ConfigError(f"batch_size={self.batch_size} must be a multiple of micro_batch x ranks = "
                              f"{micro} x {world_size}: change batch_size or micro_batch")
        return micro, self.batch_size // (micro * world_size)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown training config key(s) {unknown}; valid keys: {sorted(names)}")
        missing = [k for k in ("data", "out") if k not in d]
        if missing:
            raise ConfigError(f"training config needs {missing} (data: the `soraprep encode` folder, out: run folder)")
        d = dict(d)
        for f in dataclasses.fields(cls):
            if f.name in d:
                d[f.name] = _checked_value(f.name, str(f.type), d[f.name])
        if "adam_betas" in d:
            d["adam_betas"] = tuple(d["adam_betas"])
        for k in ("model_args", "diffusion_args", "transport_args"):
            if d.get(k) is None:
                d[k] = {}
            elif not isinstance(d[k], dict):
                raise ConfigError(f"{k} must be a mapping of name: value, got {d[k]!r}")
        try:
            return cls(**d)
        except TypeError as exc:  # e.g. a list where a number belongs
            raise ConfigError(str(exc)) from exc

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})


def _checked_value(key: str, annotation: str, value: Any) -> Any:
    """``value`` as the field's type, or a ConfigError naming ``key`` (e.g. ``steps=abc``). Strings that
    spell a number are accepted for float fields: YAML 1.1 reads ``lr: 1e-4`` as the string '1e-4'."""
    optional = annotation.endswith("| None")
    base = annotation.removesuffix("| None").strip()
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} needs a value ({base}), got null")
    if base == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if base == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be a whole number, got {value!r} (e.g. {key}=100)")
    if base == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r} (e.g. {key}=0.5)")
    if base == "str":
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be text, got {value!r}")
    if base.startswith("tuple[float"):
        if isinstance(value, (list, tuple)) and all(_is_number(v) for v in value):
            return tuple(float(v) for v in value)
        raise ConfigError(f"{key} takes a list of numbers, e.g. [0.9, 0.999], got {value!r}")
    return value  # mappings are checked in from_dict


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_train_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a YAML (or JSON) training config; relative ``data`` / ``out`` / ``init_from`` stay as written
    (relative to the working directory, like every other path on the command line)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"training config {p} not found")
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{p} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from exc
    if not isinstance(d, dict):
        raise ConfigError(f"{p} must hold a mapping of config keys (data, out, model, ...), got {type(d).__name__}")
    d.update(overrides)
    return TrainConfig.from_dict(d)
