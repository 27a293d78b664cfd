"""Fixtures for the training tests: synthetic latent folders and a tiny real pipeline (curate -> encode)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_helpers import CAPTIONS, make_text_encoder, make_vqvae


@pytest.fixture(autouse=True)
def _one_thread():
    """Two busy cores: one torch thread is much faster than oversubscribing them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> dict[str, Path]:
    """Two generated 256x144 videos with one cut each, curated (4 clips of 30 frames), captioned by hand."""
    from soraprep.curate.pipeline import curate
    from soraprep.manifest import read_manifest, write_manifest
    from soraprep.video.synth import Shot, make_video

    root = tmp_path_factory.mktemp("pipeline")
    src = root / "videos"
    make_video(src / "a.mp4", [Shot(30, speed=3), Shot(30, speed=-2)], width=256, height=144)
    make_video(src / "b.mp4", [Shot(30, speed=2), Shot(30, speed=4)], width=256, height=144)
    result = curate([str(src)], root / "curated", report=False)
    assert result.kept == 4, [r.get("filter_reason") for r in result.rows]
    rows = read_manifest(result.manifest)
    for r, caption in zip(rows, CAPTIONS):
        r["text"] = caption  # what `soraprep caption` would add
    write_manifest(result.manifest, rows)
    from soraprep.train.latents import load_clip

    clips = torch.stack([torch.from_numpy(load_clip(r, str(result.manifest), (8, 32, 32))) for r in rows])
    clips = clips.permute(0, 4, 1, 2, 3).float() / 255.0 - 0.5  # (4, 3, 8, 32, 32)
    return {"root": root, "manifest": result.manifest, "vae": make_vqvae(root / "vqvae.pt", clips),
            "text_encoder": make_text_encoder(root / "t5")}
