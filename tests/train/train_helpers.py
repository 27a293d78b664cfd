"""Helpers for the training tests: synthetic latent folders, a tiny text encoder and a tiny VQ-VAE."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def make_latents(folder: Path, shapes: dict[tuple[int, ...], int], *, text: tuple[int, int] | None = (6, 8),
                 labels: int = 0, seed: int = 0) -> Path:
    """A latents folder as `soraprep encode` writes it: one shard per latent shape (C, T, H, W) with ``n``
    samples, caption embeddings (S, D) with a padding mask, optional labels. Autoencoder: ``none``."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    shards = []
    k = 0
    for j, (shape, n) in enumerate(shapes.items()):
        shard = {"latents": torch.randn((n, *shape), generator=g), "clip_ids": [f"c{k + i}" for i in range(n)],
                 "shape": list(shape[1:])}
        if text:
            shard["text"] = torch.randn((n, *text), generator=g)
            lengths = torch.randint(1, text[0] + 1, (n,), generator=g)
            shard["mask"] = torch.arange(text[0])[None] < lengths[:, None]
        if labels:
            shard["labels"] = torch.randint(0, labels, (n,), generator=g)
        name = f"shard-{j:05d}.pt"
        torch.save(shard, folder / name)
        shards.append({"file": name, "shape": list(shape[1:]), "latent_shape": list(shape), "count": n,
                       "clip_ids": shard["clip_ids"]})
        k += n
    index = {"version": 1, "manifest": "synthetic", "autoencoder": {"kind": "none", "spec": "none",
                                                                    "latent_channels": 3, "compression": [1, 1, 1]},
             "text_encoder": {"spec": "", "kind": "t5", "dim": text[1], "max_length": text[0]} if text else None,
             "num_classes": labels, "latent_scale": 1.0, "latent_std": 1.0, "latent_mean": 0.0, "shards": shards,
             "num_samples": k, "skipped": {}, "errors": []}
    (folder / "index.json").write_text(json.dumps(index))
    return folder


WORDS = "a red car drives along the coast road at sunset dog runs in park blue sky".split()
CAPTIONS = ["a red car drives along the coast road", "dog runs in park", "a red dog at sunset",
            "the blue sky at sunset"]


def make_text_encoder(path: Path) -> Path:
    """A tiny random T5 encoder + word-level tokenizer saved with save_pretrained (no download)."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(dict.fromkeys(WORDS))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                                unk_token="<unk>")
    fast.save_pretrained(path)
    cfg = transformers.T5Config(vocab_size=len(vocab), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                                pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    torch.manual_seed(0)
    transformers.T5EncoderModel(cfg).save_pretrained(path)
    return path


def make_vqvae(path: Path, clips: torch.Tensor | None = None) -> Path:
    """A tiny random VideoGPT VQ-VAE (stride 4x4x4, 4-d codes) saved as {config, model}. With ``clips``
    (N, 3, 8, 32, 32) in [-0.5, 0.5], one training-mode pass starts the codebook at their encoder outputs
    (as VideoGPT's first batch does), so different clips get different codes."""
    from soraprep.models import MODELS

    torch.manual_seed(0)
    vq = MODELS["VQVAE-videogpt"](n_hiddens=16, n_res_layers=1, downsample=(4, 4, 4), embedding_dim=4, n_codes=32,
                                  input_size=(8, 32, 32))
    if clips is not None:
        vq.eval().codebook.train()  # BatchNorm as at encode time; only the codebook learns
        with torch.no_grad():
            vq(clips)
    torch.save({"config": vq.config.to_dict(), "model": vq.state_dict()}, path)
    return path
