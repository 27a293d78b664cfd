"""Autoencoders that turn clips into diffusion latents and back, behind one small interface.

``load_autoencoder(spec)`` takes:

* a soraprep VQ-VAE checkpoint (``.pt`` holding ``{"config": VQVAEConfig.to_dict(), "model": state_dict}``,
  as written by ``torch.save`` in docs/models.md): the latents are the quantised codebook vectors
  (continuous, ``embedding_dim`` channels); decoding snaps them to the nearest code first;
* a local diffusers folder (``config.json`` with ``_class_name`` ``AutoencoderKL`` or a video VAE such as
  ``AutoencoderKLCogVideoX``); needs ``pip install diffusers``. 2D VAEs run frame by frame;
* ``none``: pixels are the latents (3 channels, no compression), for tiny experiments.

Videos are ``(N, 3, T, H, W)`` floats in [-1, 1]. Latents are returned unscaled; the loader multiplies
them by the ``latent_scale`` that ``soraprep encode`` stores in the index.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


class Autoencoder:
    """Interface: ``encode(video) -> latents``, ``decode(latents) -> video``, compression and cost."""

    kind = "base"
    spec = ""
    latent_channels = 3
    compression: tuple[int, int, int] = (1, 1, 1)  # (t, h, w)
    scaling_factor: float | None = None  # fixed latent scale (SD VAE: 0.18215); None -> measured by encode

    def to(self, device: str | torch.device) -> Autoencoder:
        return self

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        t, h, w = self.compression
        return -(-frames // t), height // h, width // w

    def encode_macs(self, frames: int, height: int, width: int) -> int | None:
        """The compute estimator's MACs to encode one clip (None when it has no model of this encoder)."""
        return None

    def shape_problem(self, frames: int, height: int, width: int) -> str | None:
        """Why a (frames, height, width) clip cannot be encoded, or None."""
        t, h, w = self.compression
        if height % h or width % w:
            return f"size {height}x{width} is not a multiple of the autoencoder's spatial factor {h}x{w}"
        if self.kind == "vqvae" and frames % t:  # causal video VAEs take 1 + k * t frames; the VQ-VAE k * t
            return f"{frames} frames is not a multiple of the autoencoder's temporal factor {t}"
        return None


class IdentityAutoencoder(Autoencoder):
    kind, spec = "none", "none"

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return video.clone()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.clone()

    def encode_macs(self, frames: int, height: int, width: int) -> int:
        return 0


class VQVAEAutoencoder(Autoencoder):
    """soraprep's VideoGPT VQ-VAE (trained on videos in [-0.5, 0.5], hence the factor 1/2)."""

    kind = "vqvae"

    def __init__(self, model: Any, spec: str):
        self.model = model.eval().requires_grad_(False)
        self.spec = spec
        self.latent_channels = model.config.embedding_dim
        self.compression = tuple(model.config.downsample)

    @classmethod
    def load(cls, path: str | Path) -> VQVAEAutoencoder:
        from soraprep.models import build_model, config_from_dict

        ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or "config" not in ckpt:
            raise ValueError(f"{path}: a VQ-VAE checkpoint must be a dict with 'config' (VQVAEConfig.to_dict()) "
                             "and 'model' (state_dict)")
        model = build_model(config_from_dict(ckpt["config"]))
        model.load_state_dict(ckpt.get("ema") or ckpt["model"])
        return cls(model, str(Path(path).resolve()))

    def to(self, device):
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        _, quantised = self.model.encode(video * 0.5, include_embeddings=True)  # (N, D, T', H', W')
        return quantised

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        cb = self.model.codebook.embeddings  # (K, D)
        flat = latents.movedim(1, -1).reshape(-1, latents.shape[1])  # (M, D)
        codes = torch.cdist(flat.to(cb.dtype), cb).argmin(1).view(latents.shape[0], *latents.shape[2:])
        return (self.model.decode(codes) * 2.0).clamp(-1, 1)  # (N, 3, T, H, W)

    def encode_macs(self, frames: int, height: int, width: int) -> int:
        from soraprep.estimate.vae import vqvae_encode_macs

        return vqvae_encode_macs(self.model.config, frames=frames, height=height, width=width)


class DiffusersAutoencoder(Autoencoder):
    """A diffusers VAE from a local folder. Image VAEs (``AutoencoderKL``) are applied per frame."""

    kind = "diffusers"

    def __init__(self, path: str | Path):
        try:
            import diffusers
        except ImportError as exc:
            raise ImportError(f"{path} is a diffusers VAE: pip install diffusers (soraprep does not list it)") from exc
        cfg = json.loads((Path(path) / "config.json").read_text())
        cls_name = cfg["_class_name"]
        self.model = getattr(diffusers, cls_name).from_pretrained(str(path)).eval().requires_grad_(False)
        self.spec = str(Path(path).resolve())
        self.per_frame = cls_name == "AutoencoderKL"
        spatial = 2 ** (len(cfg.get("block_out_channels", [0] * 4)) - 1)
        self.compression = (1 if self.per_frame else int(cfg.get("temporal_compression_ratio", 4)), spatial, spatial)
        self.latent_channels = int(cfg.get("latent_channels", 4))
        self.scaling_factor = float(cfg.get("scaling_factor", 0.18215))
        self._image_cfg = cfg

    def to(self, device):
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        video = video.to(self.model.dtype)
        if self.per_frame:
            n, c, t, h, w = video.shape
            frames = video.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w)
            z = self.model.encode(frames).latent_dist.mode()  # (N*T, C', H', W')
            return z.reshape(n, t, *z.shape[1:]).permute(0, 2, 1, 3, 4).float()
        return self.model.encode(video).latent_dist.mode().float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        latents = latents.to(self.model.dtype)
        if self.per_frame:
            n, c, t, h, w = latents.shape
            x = self.model.decode(latents.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w)).sample
            return x.reshape(n, t, *x.shape[1:]).permute(0, 2, 1, 3, 4).float().clamp(-1, 1)
        return self.model.decode(latents).sample.float().clamp(-1, 1)

    def encode_macs(self, frames: int, height: int, width: int) -> int | None:
        if not self.per_frame:
            return None
        from soraprep.estimate.vae import ldm_encoder_macs

        c = self._image_cfg
        mult = tuple(b // c["block_out_channels"][0] for b in c["block_out_channels"])
        return frames * ldm_encoder_macs(height, width, ch=c["block_out_channels"][0], ch_mult=mult,
                                         num_res_blocks=c.get("layers_per_block", 2),
                                         z_channels=self.latent_channels)


def load_autoencoder(spec: str | Path) -> Autoencoder:
    """``none`` | path to a soraprep VQ-VAE ``.pt`` | path to a diffusers VAE folder."""
    if str(spec) == "none":
        return IdentityAutoencoder()
    p = Path(spec)
    if p.is_dir() and (p / "config.json").is_file():
        return DiffusersAutoencoder(p)
    if p.is_file():
        return VQVAEAutoencoder.load(p)
    raise ValueError(f"--vae {spec!r}: not found. Give 'none', a soraprep VQ-VAE checkpoint (.pt with config + "
                     "model), or a local diffusers VAE folder (e.g. a download of stabilityai/sd-vae-ft-ema)")
