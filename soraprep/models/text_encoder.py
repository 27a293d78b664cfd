"""Pluggable caption encoder for the video DiT: a T5 encoder or a CLIP text tower, loaded from a local
path (or hub id) with transformers. Nothing is downloaded by soraprep itself; supply the weights, e.g.
``google/t5-v1_1-xxl`` (4096-d, as PixArt-alpha / Open-Sora 1.x) or ``openai/clip-vit-large-patch14``
(768-d, 77 tokens).

Example::

    enc = TextEncoder.from_pretrained("/models/t5-v1_1-xxl", max_length=120)
    emb, mask = enc.encode(["a red car drives along a coast road"])   # (1, 120, 4096), (1, 120) bool
    model = MODELS["STDiT-XL/2"](text_dim=enc.dim, text_len=enc.max_length)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def _require_transformers():
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the text encoder needs transformers: pip install 'soraprep[caption]'") from e
    return transformers


class TextEncoder:
    """Tokenizer + frozen text encoder -> (embeddings (N, S, dim), mask (N, S) bool)."""

    def __init__(self, tokenizer: Any, model: Any, *, max_length: int, kind: str):
        self.tokenizer, self.model, self.max_length, self.kind = tokenizer, model, max_length, kind
        self.model.eval().requires_grad_(False)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, kind: str = "auto", max_length: int | None = None,
                        device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> TextEncoder:
        """Load a T5 (``T5EncoderModel``) or CLIP (``CLIPTextModel``) text encoder and its tokenizer.

        ``kind``: ``"t5"`` | ``"clip"`` | ``"auto"`` (from the config's ``model_type``). ``max_length``
        defaults to 120 for T5 and 77 (the position table) for CLIP.
        """
        tf = _require_transformers()
        config = tf.AutoConfig.from_pretrained(str(path))
        if kind == "auto":
            kind = "clip" if "clip" in config.model_type else "t5" if "t5" in config.model_type else config.model_type
        if kind == "t5":
            model = tf.T5EncoderModel.from_pretrained(str(path), torch_dtype=dtype)
            max_length = max_length or 120
        elif kind == "clip":
            model = tf.CLIPTextModel.from_pretrained(str(path), torch_dtype=dtype)
            max_length = max_length or model.config.max_position_embeddings
        else:
            raise ValueError(f"text encoder kind must be 't5' or 'clip' (got model_type {kind!r} at {path})")
        tokenizer = tf.AutoTokenizer.from_pretrained(str(path))
        return cls(tokenizer, model.to(device), max_length=max_length, kind=kind)

    @property
    def dim(self) -> int:
        """Embedding width (the video DiT's ``text_dim``)."""
        cfg = self.model.config
        return int(getattr(cfg, "d_model", None) or cfg.hidden_size)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> (N, max_length, dim) last hidden states and (N, max_length) attention mask."""
        device = next(self.model.parameters()).device
        tok = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        ids, mask = tok["input_ids"].to(device), tok["attention_mask"].to(device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (N, S, dim)
        return hidden, mask.bool()
