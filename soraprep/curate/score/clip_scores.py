"""CLIP-based scorer stages: ``aesthetic`` (LAION-style aesthetic predictor) and ``text_match``.

Both are model-based scorer stages (``phase = "score"``): they never decode. ``analyze`` keeps an RGB
JPEG every ``samples_every_s`` seconds of the one decode pass; each clip row carries its share as
``row["_samples"]``; these stages embed up to ``frames`` of them with a CLIP (or SigLIP) image tower
loaded through transformers, once per worker in ``setup()``.

    aesthetic    mean over the sampled frames of the aesthetic MLP's score of the L2-normalised image
                 embedding (about 1-10; LAION's "aesthetic" subsets used >= 5, >= 6 for the strict ones)
    text_match   mean over the sampled frames of cos(image embedding, embedding of the row's ``text``);
                 null when the row has no text (e.g. before captioning, or a dataset without captions)

Weights are never downloaded by soraprep: ``model`` is a local folder saved with ``save_pretrained`` or
a hub id already in the Hugging Face cache (``huggingface-cli download openai/clip-vit-large-patch14``);
``head`` is a local file with the aesthetic MLP's state dict (``sac+logos+ava1-l14-linearMSE.pth`` from
christophschuhmann/improved-aesthetic-predictor, which expects ``openai/clip-vit-large-patch14``), read
with ``torch.load(..., weights_only=True)`` or safetensors. Install: ``pip install torch==2.13.0`` then
``pip install 'soraprep[caption]'`` (transformers).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from soraprep.curate.score.ocr import decode_sample, pick_samples
from soraprep.stages import Resources, Row, error_dict, failed, register

VERSION = "1"
DTYPES = ("float32", "float16", "bfloat16")


def build_aesthetic_head(in_dim: int = 768):
    """The LAION improved-aesthetic-predictor MLP; its state-dict keys are ``layers.{0,2,4,6,7}.*``."""
    import torch.nn as nn

    head = nn.Module()
    head.layers = nn.Sequential(
        nn.Linear(in_dim, 1024), nn.Dropout(0.2),   # (N, D) -> (N, 1024)
        nn.Linear(1024, 128), nn.Dropout(0.2),      # -> (N, 128)
        nn.Linear(128, 64), nn.Dropout(0.1),        # -> (N, 64)
        nn.Linear(64, 16),                          # -> (N, 16)
        nn.Linear(16, 1),                           # -> (N, 1): the score
    )
    return head.eval()


def load_aesthetic_head(path: str | Path):
    """Read a head saved with ``torch.save(state_dict)`` (.pth/.pt) or safetensors; never unpickles code."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a Lightning checkpoint
    state = {(k if k.startswith("layers.") else f"layers.{k}"): v for k, v in state.items()}
    if "layers.0.weight" not in state:
        raise ValueError(f"{path}: not an aesthetic-predictor state dict (no 'layers.0.weight'; keys: "
                         f"{sorted(state)[:6]})")
    head = build_aesthetic_head(int(state["layers.0.weight"].shape[1]))
    head.load_state_dict(state, strict=True)
    return head


def _check_model(key: str, model: str) -> None:
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"{key}: give a CLIP/SigLIP model as a local folder (save_pretrained) or a hub id "
                         "already in the Hugging Face cache, e.g. model: openai/clip-vit-large-patch14")
    local = Path(model).expanduser()
    if model.startswith(("/", "./", "../", "~")) and not local.exists():
        raise ValueError(f"{key}: {model!r} does not exist; give a folder saved with save_pretrained "
                         "or a hub id like openai/clip-vit-large-patch14")
    if local.is_dir() and not (local / "config.json").is_file():
        raise ValueError(f"{key}: {model!r} has no config.json: give the folder save_pretrained wrote "
                         "(e.g. huggingface-cli download openai/clip-vit-large-patch14 --local-dir DIR)")
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"{key}: needs {' and '.join(missing)}: pip install torch==2.13.0 && "
                         "pip install 'soraprep[caption]'")


def _features(out):
    """transformers 4 returns a tensor from get_*_features, transformers 5 an output whose pooler is it."""
    return out if hasattr(out, "shape") else out.pooler_output


@dataclass
class _ClipScorer:
    """Shared plumbing: config checks, lazy model loading once per worker, batched image embeddings."""

    model: str = ""
    frames: int = 4             # at most this many sampled frames per clip (spread evenly)
    device: str = "cpu"         # cpu | cuda | cuda:N
    dtype: str = "float32"      # float32 | float16 | bfloat16 (half precision on GPU only)
    images_per_batch: int = 64  # forward-pass size (frames from several clips share a batch)
    torch_threads: int = 1      # intra-op threads per worker on CPU (workers are processes already)
    phase = "score"
    samples_every_s = 1.0
    batch_size = 16
    columns = ()               # output columns (set by each stage)

    def __post_init__(self) -> None:
        _check_model(f"{self.name}.model", self.model)
        if not 1 <= self.frames <= 64:
            raise ValueError(f"{self.name}.frames must be between 1 and 64 sampled frames per clip, got {self.frames}")
        if not (self.device == "cpu" or self.device == "mps" or self.device.startswith("cuda")):
            raise ValueError(f"{self.name}.device must be cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"{self.name}.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.images_per_batch < 1 or self.torch_threads < 1:
            raise ValueError(f"{self.name}.images_per_batch and {self.name}.torch_threads must be >= 1")
        self._m: dict[str, Any] = {}

    @property
    def resources(self) -> Resources:
        return Resources(cpus=1, gpus=0.0 if self.device in ("cpu", "mps") else 1.0, memory_gb=3.0)

    def __getstate__(self) -> dict[str, Any]:  # ship the config, never loaded weights
        return {**self.__dict__, "_m": {}}

    def setup(self) -> None:
        """Load the weights once per worker. A failure (corrupt weights, a hub id not in the cache, a head
        that does not fit the model) raises: the runner stops the run with the reason before any work."""
        if self._m:
            return
        import torch
        from transformers import AutoModel, AutoProcessor

        if self.device == "cpu":
            torch.set_num_threads(self.torch_threads)
        path = str(Path(self.model).expanduser()) if Path(self.model).expanduser().exists() else self.model
        kw = {} if self.dtype == "float32" else {"dtype": getattr(torch, self.dtype)}
        model = AutoModel.from_pretrained(path, **kw).to(self.device).eval()
        if not hasattr(model, "get_image_features") or not hasattr(model, "get_text_features"):
            raise ValueError(f"{self.name}.model {self.model!r} is a {type(model).__name__}, not a CLIP/SigLIP "
                             "dual encoder (CLIPModel, SiglipModel)")
        loaded = dict(torch=torch, model=model, processor=AutoProcessor.from_pretrained(path))
        loaded.update(self._setup_extra(loaded))
        self._m = loaded  # only a complete load counts as set up

    def _setup_extra(self, loaded: dict[str, Any]) -> dict[str, Any]:
        return {}

    def embed_images(self, images: list[np.ndarray]):
        """RGB uint8 images -> L2-normalised embeddings, a float32 tensor (N, D) on the CPU."""
        self.setup()
        torch, model, proc = self._m["torch"], self._m["model"], self._m["processor"]
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), self.images_per_batch):
                px = proc(images=images[i:i + self.images_per_batch], return_tensors="pt")["pixel_values"]
                f = _features(model.get_image_features(pixel_values=px.to(self.device, model.dtype)))  # (n, D)
                out.append(torch.nn.functional.normalize(f.float(), dim=-1).cpu())
        return torch.cat(out)

    def embed_texts(self, texts: list[str]):
        """Strings -> L2-normalised text embeddings (N, D), truncated to the model's context length."""
        self.setup()
        torch, model, proc = self._m["torch"], self._m["model"], self._m["processor"]
        # SigLIP was trained on max_length-padded text; CLIP pools at the EOS token, padding is harmless
        padding = "max_length" if model.config.model_type.startswith("siglip") else True
        with torch.inference_mode():
            tok = proc(text=texts, return_tensors="pt", padding=padding, truncation=True)
            tok = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
            f = _features(model.get_text_features(**tok))  # (N, D)
        return torch.nn.functional.normalize(f.float(), dim=-1).cpu()

    def provenance(self) -> dict[str, Any]:
        params = {k: v for k, v in asdict(self).items() if k not in ("images_per_batch", "torch_threads")}
        return {"by": f"soraprep.{self.name}@{VERSION}", "params": params}

    def score(self, rows: list[Row], embeddings: list[np.ndarray]) -> None:
        """Write the columns; ``embeddings[i]`` holds row i's L2-normalised frame embeddings (n_i, D)."""
        raise NotImplementedError

    def __call__(self, batch: list[Row]) -> list[Row]:
        # Stages with the same model, frames and dtype (aesthetic + text_match) embed each frame once:
        # the first leaves the embeddings on the row under a private key, which never reaches the manifest.
        key = f"{self.model}|{self.frames}|{self.dtype}"
        todo, need, images = [], [], []
        for row in batch:
            if failed(row):
                continue
            if not row.get("_samples"):
                row["error"] = error_dict(self.name, "no_samples", f"no sampled frames on the row: the "
                                          f"{self.name} stage must run inside a curation recipe")
                continue
            if (row.get("_clip_embeddings") or {}).get(key) is None:
                try:
                    imgs = [decode_sample(j)[:, :, ::-1] for _, j in pick_samples(row["_samples"], self.frames)]
                except ValueError as exc:
                    row["error"] = error_dict(self.name, "bad_sample", str(exc))
                    continue
                need.append((row, len(images), len(images) + len(imgs)))
                images += imgs
            todo.append(row)
        if not todo:
            return batch
        self.setup()
        try:
            if images:
                emb = self.embed_images(images).numpy()  # (N_images, D)
                for row, a, b in need:
                    row.setdefault("_clip_embeddings", {})[key] = emb[a:b]
            self.score(todo, [row["_clip_embeddings"][key] for row in todo])
        except Exception as exc:  # e.g. CUDA OOM on this batch: the rows record it, the run goes on
            for row in todo:
                row["error"] = error_dict(self.name, type(exc).__name__, str(exc))
            return batch
        prov = self.provenance()
        for row in todo:
            p = json.loads(row.get("provenance") or "{}")
            for col in self.columns:
                p[col] = prov
            row["provenance"] = json.dumps(p, sort_keys=True)
        return batch


@register("aesthetic")
@dataclass
class AestheticStage(_ClipScorer):
    """Aesthetic score per clip: LAION's MLP head on the CLIP image embedding, averaged over samples."""

    head: str = ""              # local .pth / .pt / .safetensors state dict of the aesthetic MLP
    name = "aesthetic"
    columns = ("aesthetic",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.head:
            raise ValueError("aesthetic.head: give the local path of the aesthetic MLP weights, e.g. "
                             "head: weights/sac+logos+ava1-l14-linearMSE.pth (improved-aesthetic-predictor)")
        p = Path(self.head).expanduser()
        if p.suffix not in (".pth", ".pt", ".safetensors"):
            raise ValueError(f"aesthetic.head must be a .pth/.pt (torch.save of a state dict) or .safetensors "
                             f"file, got {self.head!r}")
        if not p.is_file():
            raise ValueError(f"aesthetic.head: {self.head!r} does not exist (download "
                             "sac+logos+ava1-l14-linearMSE.pth from christophschuhmann/improved-aesthetic-predictor)")

    def _setup_extra(self, loaded: dict[str, Any]) -> dict[str, Any]:
        p = Path(self.head).expanduser()
        head = load_aesthetic_head(p)
        dim = head.layers[0].in_features
        proj = getattr(loaded["model"].config, "projection_dim", None)
        if proj is not None and proj != dim:
            raise ValueError(f"aesthetic.head {p.name} expects {dim}-d embeddings but {self.model} gives {proj}-d; "
                             "sac+logos+ava1-l14-linearMSE.pth goes with openai/clip-vit-large-patch14")
        return {"head": head, "head_sha256": hashlib.sha256(p.read_bytes()).hexdigest()[:16]}

    def provenance(self) -> dict[str, Any]:
        prov = super().provenance()
        prov["params"]["head_sha256"] = self._m.get("head_sha256")
        return prov

    def score(self, rows, embeddings) -> None:
        torch = self._m["torch"]
        with torch.inference_mode():
            x = torch.from_numpy(np.concatenate(embeddings))           # (N_images, D)
            s = self._m["head"].layers(x).squeeze(-1).numpy()          # (N_images,)
        ends = np.cumsum([len(e) for e in embeddings])
        for row, a, b in zip(rows, ends - [len(e) for e in embeddings], ends):
            row["aesthetic"] = round(float(s[a:b].mean()), 6)


@register("text_match")
@dataclass
class TextMatchStage(_ClipScorer):
    """Cosine similarity between the clip's ``text`` and its sampled frames (CLIP/SigLIP), mean over samples."""

    name = "text_match"
    columns = ("text_match",)

    def score(self, rows, embeddings) -> None:
        texts = [r.get("text") if isinstance(r.get("text"), str) and r.get("text").strip() else None for r in rows]
        with_text = [i for i, t in enumerate(texts) if t]
        t_emb = self.embed_texts([texts[i] for i in with_text]).numpy() if with_text else None  # (N_text, D)
        for row in rows:
            row["text_match"] = None
        for k, i in enumerate(with_text):
            sims = embeddings[i] @ t_emb[k]  # (n_frames,)
            rows[i]["text_match"] = round(float(sims.mean()), 6)
