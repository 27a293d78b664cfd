"""VideoGPT VQ-VAE: shapes, encode/decode, EMA codebook restarts, learning on generated clips."""

import pytest

torch = pytest.importorskip("torch")

from soraprep.models import MODELS  # noqa: E402
from soraprep.models.vqvae import Codebook  # noqa: E402

TINY = dict(n_hiddens=32, n_res_layers=1, embedding_dim=16, n_codes=32, downsample=(2, 4, 4))
PALETTE = torch.tensor([[-.5, -.5, -.5], [.5, .5, .5], [.5, -.5, -.5], [-.5, .5, -.5], [-.5, -.5, .5]])


def moving_squares(n, gen, frames=8, size=16, side=6):
    """Clips in [-0.5, 0.5]: a square of one palette colour moving straight over another colour."""
    video = torch.empty(n, 3, frames, size, size)
    for i in range(n):
        bg, fg = PALETTE[torch.randperm(5, generator=gen)[:2]]
        video[i] = bg[:, None, None, None]
        x0, y0 = torch.randint(0, size - side, (2,), generator=gen).tolist()
        dx, dy = torch.randint(-1, 2, (2,), generator=gen).tolist()
        for t in range(frames):
            x, y = min(max(x0 + dx * t, 0), size - side), min(max(y0 + dy * t, 0), size - side)
            video[i, :, t, y:y + side, x:x + side] = fg[:, None, None]
    return video


@pytest.mark.parametrize("downsample,size", [((2, 4, 4), (8, 16, 24)), ((4, 2, 2), (8, 8, 12)), ((1, 2, 4), (3, 6, 8))])
def test_shapes_encode_decode(downsample, size):
    model = MODELS["VQVAE-videogpt"](**{**TINY, "downsample": downsample}).eval()
    x = torch.rand(2, 3, *size) - 0.5
    codes = model.encode(x)
    assert codes.shape == (2, *(s // d for s, d in zip(size, downsample, strict=True))) and codes.dtype == torch.long
    assert model.decode(codes).shape == x.shape
    out = model(x)
    assert out["recon"].shape == x.shape and torch.equal(out["encodings"], codes)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.rand(1, 3, size[0], size[1] + 1, size[2]))


@pytest.mark.parametrize("threshold,expect_min,expect_max", [(1.0, 0.5, 1.0), (0.0, 0.0, 0.25)])
def test_dead_codes_are_restarted_from_encoder_outputs(threshold, expect_min, expect_max):
    gen = torch.Generator().manual_seed(0)
    book = Codebook(16, 4, decay=0.99, restart_threshold=threshold).train()
    z = torch.randn(4, 4, 4, 4, 4, generator=gen)  # (N, D, T, H, W): 256 vectors
    book(z)  # first batch initialises the codes from encoder outputs
    with torch.no_grad():  # kill 12 of 16 codes: far away and unused
        book.embeddings[4:] = 100.0
        book.z_avg[4:] = 100.0
        book.N[4:] = 0.0
    book(z)  # one training step: restart (or not)
    usage = book.eval()(z)["usage"].item()
    assert expect_min <= usage <= expect_max


def test_ema_update_moves_codes_to_the_mean_of_their_vectors():
    book = Codebook(2, 3, decay=0.0, restart_threshold=0.0).train()  # decay 0: codes = current batch means
    z = torch.tensor([[1.0, 1.1, -1.0, -1.2], [0.0, 0.1, 2.0, 2.2], [0.0, 0.0, 0.0, 0.0]]).reshape(1, 3, 4, 1, 1)
    book(z)
    book(z)
    codes = sorted(book.embeddings.tolist())
    assert codes[0] == pytest.approx([-1.1, 2.1, 0.0], abs=1e-4) and codes[1] == pytest.approx([1.05, 0.05, 0.0], abs=1e-4)
    assert book.embeddings.requires_grad is False and not list(book.parameters())


def test_reconstruction_falls_on_generated_clips_with_codebook_usage_above_half():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = MODELS["VQVAE-videogpt"](**TINY)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        out = model(moving_squares(8, gen))
        opt.zero_grad()
        (out["recon_loss"] + out["commitment_loss"]).backward()
        opt.step()
        losses.append(out["recon_loss"].item())
    assert sum(losses[-10:]) / 10 < 0.7 * losses[0], (losses[0], losses[-10:])  # measured: 4.50 -> 2.32
    with torch.no_grad():
        usage = model.eval()(moving_squares(8, torch.Generator().manual_seed(99)))["usage"].item()
    assert usage > 0.5
    assert bool(model.codebook.initialized)
