"""VideoGPT-style VQ-VAE (Yan et al., 2021): strided 3D-conv encoder, residual blocks with axial attention
over T, H and W, an EMA codebook (decay 0.99) with dead-code restarts and a commitment loss, and a 3D
transposed-conv decoder.

Module names follow VideoGPT's ``vqvae.py`` (``encoder.convs.*.conv``, ``encoder.res_stack``,
``pre_vq_conv``, ``codebook.embeddings`` / ``N`` / ``z_avg``, ``decoder.convts.*.convt``) so a VideoGPT
checkpoint's weights map one to one; our codebook adds one buffer (``codebook.initialized``), so load
VideoGPT's state dicts with ``strict=False`` and call ``model.codebook.initialized.fill_(1)``.
The codebook and EMA statistics are buffers: ``parameters()`` are the conv / attention weights only
(21,141,619 for the default configuration).

Example::

    model = MODELS["VQVAE-videogpt"]()
    out = model(video)                       # video (N, 3, 16, 64, 64) in [-0.5, 0.5]
    loss = out["recon_loss"] + out["commitment_loss"]
    codes = model.encode(video)              # (N, 4, 16, 16) int64
    recon = model.decode(codes)              # (N, 3, 16, 64, 64)
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from soraprep.models.config import VQVAEConfig
from soraprep.models.layers import attention

# ------------------------------------------------------------------------------------------------
# Same-padding convolutions (output = input / stride, or input * stride for the transpose)
# ------------------------------------------------------------------------------------------------


def _same_pad(kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    pads: list[int] = []
    for k, s in zip(reversed(kernel), reversed(stride), strict=True):  # F.pad starts from the last dim
        p = k - s
        pads += [p // 2 + p % 2, p // 2]
    return tuple(pads)


class SamePadConv3d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: tuple[int, int, int] | int = 1, bias: bool = True):
        super().__init__()
        stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        self.pad = _same_pad((kernel,) * 3, stride)
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


class SamePadConvTranspose3d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: tuple[int, int, int] | int = 1, bias: bool = True):
        super().__init__()
        stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        self.pad = _same_pad((kernel,) * 3, stride)
        self.convt = nn.ConvTranspose3d(cin, cout, kernel, stride=stride, bias=bias, padding=kernel - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convt(F.pad(x, self.pad))


# ------------------------------------------------------------------------------------------------
# Axial attention residual block
# ------------------------------------------------------------------------------------------------


class AxialAttention(nn.Module):
    """Multi-head attention along one axis of a (N, T, H, W, C) tensor (VideoGPT's ``w_qs/w_ks/w_vs/fc``)."""

    def __init__(self, dim: int, n_head: int, axis: int):
        super().__init__()
        self.n_head, self.axis = n_head, axis
        self.w_qs = nn.Linear(dim, dim, bias=False)
        self.w_ks = nn.Linear(dim, dim, bias=False)
        self.w_vs = nn.Linear(dim, dim, bias=False)
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, T, H, W, C); attend along self.axis (1 = T, 2 = H, 3 = W)
        xa = x.movedim(self.axis, -2)  # (N, a, b, S, C), S = the attended axis
        lead, (s, c) = xa.shape[:-2], xa.shape[-2:]
        h = self.n_head

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(-1, s, h, c // h).transpose(1, 2)  # (N*a*b, heads, S, c/h)

        out = attention(heads(self.w_qs(xa)), heads(self.w_ks(xa)), heads(self.w_vs(xa)))  # (B', heads, S, c/h)
        out = self.fc(out.transpose(1, 2).reshape(*lead, s, c))  # (N, a, b, S, C)
        return out.movedim(-2, self.axis)  # (N, T, H, W, C)


class AxialBlock(nn.Module):
    """Sum of attentions along W, H and T."""

    def __init__(self, n_hiddens: int, n_head: int):
        super().__init__()
        self.attn_w = AxialAttention(n_hiddens, n_head, axis=3)
        self.attn_h = AxialAttention(n_hiddens, n_head, axis=2)
        self.attn_t = AxialAttention(n_hiddens, n_head, axis=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.movedim(1, -1)  # (N, C, T, H, W) -> (N, T, H, W, C)
        x = self.attn_w(x) + self.attn_h(x) + self.attn_t(x)
        return x.movedim(-1, 1)  # (N, C, T, H, W)


class AttentionResidualBlock(nn.Module):
    def __init__(self, n_hiddens: int, n_head: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.BatchNorm3d(n_hiddens), nn.ReLU(),
            SamePadConv3d(n_hiddens, n_hiddens // 2, 3, bias=False),
            nn.BatchNorm3d(n_hiddens // 2), nn.ReLU(),
            SamePadConv3d(n_hiddens // 2, n_hiddens, 1, bias=False),
            nn.BatchNorm3d(n_hiddens), nn.ReLU(),
            AxialBlock(n_hiddens, n_head),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


# ------------------------------------------------------------------------------------------------
# Codebook
# ------------------------------------------------------------------------------------------------


class Codebook(nn.Module):
    """EMA vector quantiser. Codes whose EMA usage count drops below ``restart_threshold`` are restarted
    from random encoder outputs of the current batch (VideoGPT's dead-code restart), which keeps the
    codebook in use. All state is buffers (no gradients)."""

    def __init__(self, n_codes: int, embedding_dim: int, *, decay: float, restart_threshold: float):
        super().__init__()
        self.n_codes, self.decay, self.restart_threshold = n_codes, decay, restart_threshold
        self.register_buffer("embeddings", torch.randn(n_codes, embedding_dim))
        self.register_buffer("N", torch.zeros(n_codes))  # EMA of assignment counts
        self.register_buffer("z_avg", self.embeddings.clone())  # EMA of the sum of assigned vectors
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def _random_rows(self, flat: torch.Tensor, n: int) -> torch.Tensor:
        if flat.shape[0] < n:  # tile with a little noise so there are enough distinct vectors
            reps = math.ceil(n / flat.shape[0])
            flat = flat.repeat(reps, 1) + torch.randn_like(flat.repeat(reps, 1)) * 0.01 / math.sqrt(flat.shape[1])
        rows = flat[torch.randperm(flat.shape[0], device=flat.device)[:n]]
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(rows, 0)
        return rows

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, onehot: torch.Tensor) -> None:
        if not bool(self.initialized):  # first batch: codes start at encoder outputs
            rows = self._random_rows(flat, self.n_codes)
            self.embeddings.copy_(rows)
            self.z_avg.copy_(rows)
            self.N.fill_(1.0)
            self.initialized.fill_(True)
        counts, sums = onehot.sum(0), onehot.t() @ flat  # (K,), (K, D)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.N.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.z_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.N.sum()
        weights = (self.N + 1e-7) / (n + self.n_codes * 1e-7) * n  # Laplace-smoothed counts
        self.embeddings.copy_(self.z_avg / weights.unsqueeze(1))
        dead = (self.N < self.restart_threshold).unsqueeze(1).to(flat.dtype)  # (K, 1)
        if bool(dead.any()):
            self.embeddings.mul_(1 - dead).add_(self._random_rows(flat, self.n_codes) * dead)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        # z: (N, D, T, H, W) encoder output after pre_vq_conv
        flat = z.movedim(1, -1).reshape(-1, z.shape[1])  # (M, D)
        dist2 = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embeddings.t()
                 + self.embeddings.pow(2).sum(1)[None])  # (M, K)
        idx = dist2.argmin(1)  # (M,)
        onehot = F.one_hot(idx, self.n_codes).to(flat.dtype)  # (M, K)
        if self.training:
            self._ema_update(flat.detach(), onehot)
        codes = idx.view(z.shape[0], *z.shape[2:])  # (N, T, H, W)
        quant = F.embedding(codes, self.embeddings).movedim(-1, 1)  # (N, D, T, H, W)
        commitment = F.mse_loss(z, quant.detach())
        avg = onehot.mean(0)
        perplexity = torch.exp(-(avg * torch.log(avg + 1e-10)).sum())
        usage = (onehot.sum(0) > 0).float().mean()  # fraction of codes used by this batch
        quant = z + (quant - z).detach()  # straight-through estimator
        return {"embeddings": quant, "encodings": codes, "commitment_loss": commitment,
                "perplexity": perplexity, "usage": usage}


# ------------------------------------------------------------------------------------------------
# Encoder / decoder / VQ-VAE
# ------------------------------------------------------------------------------------------------


class Encoder(nn.Module):
    def __init__(self, n_hiddens: int, n_res_layers: int, downsample: tuple[int, int, int], in_channels: int,
                 n_head: int):
        super().__init__()
        steps = [int(math.log2(d)) for d in downsample]
        self.convs = nn.ModuleList()
        cin = in_channels
        for i in range(max(steps)):  # one stride-2 conv per halving, on the axes that still need it
            stride = tuple(2 if s > i else 1 for s in steps)
            self.convs.append(SamePadConv3d(cin, n_hiddens, 4, stride=stride))
            cin = n_hiddens
        self.conv_last = SamePadConv3d(cin, n_hiddens, 3)
        self.res_stack = nn.Sequential(*[AttentionResidualBlock(n_hiddens, n_head) for _ in range(n_res_layers)],
                                       nn.BatchNorm3d(n_hiddens), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))  # (N, C', T/2^k, H/2^k, W/2^k)
        return self.res_stack(self.conv_last(x))  # (N, n_hiddens, T/dt, H/dh, W/dw)


class Decoder(nn.Module):
    def __init__(self, n_hiddens: int, n_res_layers: int, upsample: tuple[int, int, int], out_channels: int,
                 n_head: int):
        super().__init__()
        self.res_stack = nn.Sequential(*[AttentionResidualBlock(n_hiddens, n_head) for _ in range(n_res_layers)],
                                       nn.BatchNorm3d(n_hiddens), nn.ReLU())
        steps = [int(math.log2(d)) for d in upsample]
        n = max(steps)
        self.convts = nn.ModuleList()
        for i in range(n):
            stride = tuple(2 if s > i else 1 for s in steps)
            self.convts.append(SamePadConvTranspose3d(n_hiddens, out_channels if i == n - 1 else n_hiddens, 4,
                                                      stride=stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res_stack(x)
        for i, convt in enumerate(self.convts):
            x = convt(x)
            if i < len(self.convts) - 1:
                x = F.relu(x)
        return x  # (N, out_channels, T, H, W)


class VQVAE(nn.Module):
    def __init__(self, config: VQVAEConfig | None = None, **kwargs):
        super().__init__()
        config = (config or VQVAEConfig()).replace(**kwargs) if kwargs else (config or VQVAEConfig())
        self.config = config
        c = config
        self.encoder = Encoder(c.n_hiddens, c.n_res_layers, c.downsample, c.in_channels, c.n_head)
        self.decoder = Decoder(c.n_hiddens, c.n_res_layers, c.downsample, c.in_channels, c.n_head)
        self.pre_vq_conv = SamePadConv3d(c.n_hiddens, c.embedding_dim, 1)
        self.post_vq_conv = SamePadConv3d(c.embedding_dim, c.n_hiddens, 1)
        self.codebook = Codebook(c.n_codes, c.embedding_dim, decay=c.ema_decay,
                                 restart_threshold=c.restart_threshold)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """PyTorch defaults for convs; attention projections as VideoGPT: N(0, 1/sqrt(dim)) for q/k/v, fc
        scaled by 1/sqrt(dim * n_res_layers) so the residual stack starts close to the identity."""
        d, layers = self.config.n_hiddens, max(1, self.config.n_res_layers)
        for m in self.modules():
            if isinstance(m, AxialAttention):
                for lin in (m.w_qs, m.w_ks, m.w_vs):
                    nn.init.normal_(lin.weight, std=1.0 / math.sqrt(d))
                nn.init.normal_(m.fc.weight, std=1.0 / math.sqrt(d * layers))
                nn.init.zeros_(m.fc.bias)

    def _check(self, x: torch.Tensor) -> None:
        size = tuple(x.shape[-3:])
        if any(s % d for s, d in zip(size, self.config.downsample, strict=True)):
            raise ValueError(f"video size (T, H, W)={size} must be divisible by downsample={self.config.downsample}")

    def encode(self, x: torch.Tensor, include_embeddings: bool = False):
        """(N, 3, T, H, W) -> codes (N, T/dt, H/dh, W/dw) [and quantised latents (N, D, T', H', W')]."""
        self._check(x)
        vq = self.codebook(self.pre_vq_conv(self.encoder(x)))
        return (vq["encodings"], vq["embeddings"]) if include_embeddings else vq["encodings"]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (N, T', H', W') -> video (N, 3, T, H, W)."""
        h = F.embedding(codes, self.codebook.embeddings).movedim(-1, 1)  # (N, D, T', H', W')
        return self.decoder(self.post_vq_conv(h))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruction and losses: ``recon_loss`` (MSE / 0.06, VideoGPT's normalisation for data in
        [-0.5, 0.5]), ``commitment_loss`` (already weighted), ``perplexity``, ``usage``, ``recon``."""
        self._check(x)
        vq = self.codebook(self.pre_vq_conv(self.encoder(x)))  # quantised (N, D, T', H', W')
        recon = self.decoder(self.post_vq_conv(vq["embeddings"]))  # (N, 3, T, H, W)
        return {"recon": recon, "recon_loss": F.mse_loss(recon, x) / 0.06,
                "commitment_loss": self.config.commitment_cost * vq["commitment_loss"],
                "perplexity": vq["perplexity"], "usage": vq["usage"], "encodings": vq["encodings"]}
