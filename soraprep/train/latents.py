"""Encode a curated manifest once: clips -> autoencoder latents, captions -> text embeddings, in shards.

``encode(manifest, out, vae=..., text_encoder=...)`` decodes each kept clip once (``soraprep.video.io``),
takes ``frames`` consecutive frames from its middle, resizes so the target is covered and centre-crops to
the clip's bucket (``bucket_frames`` x ``bucket_height`` x ``bucket_width``, or ``frames`` / ``size`` for
every clip), encodes it, and writes:

    OUT/shard-<F>x<H>x<W>-00000.pt    {"latents" (n, C, T', H', W'), "clip_ids", ["text" (n, S, D), "mask"
                                       (n, S)], ["labels" (n,)]}; loadable with torch.load(weights_only=True)
    OUT/shard-...-00000.json           what the shard holds (clip ids, sums for the latent scale, timings)
    OUT/index.json                     every shard, the autoencoder / text encoder used, the latent scale,
                                       skipped rows and errors, estimated vs measured encoding cost

Resumable: a shard is committed atomically (temp file + rename) with its ``.json``; a rerun skips shards
whose clip ids match. Rows fail soft (decode errors are listed in the index), configs fail loud.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from soraprep.manifest import read_manifest, resolve_path
from soraprep.manifest_store import iter_rows, locate, resolve
from soraprep.storage.files import atomic_write
from soraprep.storage.store import LOCAL_SCHEMES, Store, is_remote, join, local_copy, url_scheme
from soraprep.train.autoencoder import Autoencoder, load_autoencoder

INDEX = "index.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class EncodeResult:
    out: Path
    index: dict[str, Any]
    encoded: int = 0  # clips encoded by this run
    reused: int = 0  # clips found in committed shards
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.index["errors"] else 0


def _atomic_save(obj: Any, path: Path, *, as_json: bool = False) -> None:
    atomic_write(path, json.dumps(obj, indent=1) if as_json else lambda tmp: torch.save(obj, tmp))


def _target(row: dict[str, Any], frames: int | None, size: tuple[int, int] | None) -> tuple[int, int, int] | None:
    f = frames or row.get("bucket_frames")
    h, w = size if size else (row.get("bucket_height"), row.get("bucket_width"))
    return (int(f), int(h), int(w)) if f and h and w else None


def _span(row: dict[str, Any], manifest: str) -> tuple[str, int, int | None]:
    """(file, first frame, end frame) of the clip: a cut clip file holds only the clip."""
    if is_remote(manifest):  # a manifest on a store: relative paths are relative to its folder
        path = resolve(manifest.rstrip("/").rsplit("/", 1)[0], row.get("path") or row["source"])
    else:
        path = resolve_path(manifest, row.get("path") or row["source"])
    if row.get("cut_mode") in ("copy", "keyframe", "exact") or row.get("start_frame") is None:
        return path, 0, row.get("num_frames")
    return path, int(row["start_frame"]), row.get("end_frame")


def load_clip(row: dict[str, Any], manifest: str, shape: tuple[int, int, int],
              storage_options: dict[str, Any] | None = None) -> np.ndarray:
    """(F, H, W, 3) uint8: ``F`` consecutive frames from the middle of the clip, resized to cover (H, W) and
    centre-cropped. Raises ``VideoError`` / ``ValueError`` for clips that cannot give them. A clip on an
    object store is staged to local scratch while it is decoded."""
    path, start, end = _span(row, manifest)
    if url_scheme(path) not in (None, "http", "https", *LOCAL_SCHEMES):
        with local_copy(path, storage_options) as local:
            return _load_local(row, str(local), start, end, shape)
    return _load_local(row, path, start, end, shape)


def _load_local(row: dict[str, Any], path: str, start: int, end: int | None, shape: tuple[int, int, int]) -> np.ndarray:
    import cv2

    from soraprep.video.io import decode

    f, th, tw = shape
    n = (int(end) - start) if end is not None else None
    if n is not None:
        if n < f:
            raise ValueError(f"clip has {n} frames, the bucket needs {f}")
        start += (n - f) // 2
    size = None
    if row.get("width") and row.get("height"):  # resize while decoding (cheaper than full-size frames)
        s = max(th / row["height"], tw / row["width"])
        size = (max(tw, math.ceil(row["width"] * s)), max(th, math.ceil(row["height"] * s)))
    # upright: the manifest's width/height are display sizes, and a phone clip must not be trained sideways
    frames = [fr.array for fr in decode(path, start_frame=start, end_frame=start + f, size=size,
                                        interpolation="AREA", upright=True)]
    if len(frames) < f:
        raise ValueError(f"decoded {len(frames)} frames, the bucket needs {f}")
    out = []
    for img in frames:
        h, w = img.shape[:2]
        if h < th or w < tw:
            s = max(th / h, tw / w)
            img = cv2.resize(img, (max(tw, math.ceil(w * s)), max(th, math.ceil(h * s))), interpolation=cv2.INTER_AREA)
            h, w = img.shape[:2]
        y, x = (h - th) // 2, (w - tw) // 2
        out.append(img[y:y + th, x:x + tw])
    return np.stack(out)


def _plan(rows: list[dict[str, Any]], frames, size, shard_size: int):
    """Shards to write: [(name, shape, rows)], plus {reason: count} of rows that were not eligible."""
    groups: dict[tuple[int, int, int], list[dict[str, Any]]] = {}
    skipped: dict[str, int] = {}
    for r in rows:
        if r.get("error"):
            skipped["error_in_manifest"] = skipped.get("error_in_manifest", 0) + 1
        elif not r.get("keep", True):
            skipped["not_kept"] = skipped.get("not_kept", 0) + 1
        elif (shape := _target(r, frames, size)) is None:
            skipped["no_bucket"] = skipped.get("no_bucket", 0) + 1
        else:
            groups.setdefault(shape, []).append(r)
    plan = []
    for shape in sorted(groups):
        g = groups[shape]
        for i in range(0, len(g), shard_size):
            plan.append((f"shard-{shape[0]}x{shape[1]}x{shape[2]}-{i // shard_size:05d}", shape, g[i:i + shard_size]))
    return plan, skipped


def _clip_id(r: dict[str, Any]) -> str:
    return str(r.get("clip_id") or r.get("path"))


def encode(manifest: str | Path, out: str | Path, *, vae: str | Autoencoder, text_encoder: str | Any | None = None,
           frames: int | None = None, size: tuple[int, int] | None = None, shard_size: int = 64,
           batch_size: int = 4, label_column: str | None = None, dtype: str = "float32",
           device: str = "auto", text_max_length: int | None = None,
           progress: Callable[[int, int], None] | None = None,
           storage_options: dict[str, Any] | None = None) -> EncodeResult:
    """Encode every kept row of ``manifest`` into ``out`` (see the module docstring); resumes ``out``.

    ``manifest`` and ``out`` may be store URLs (``storage_options``: fsspec options): clips are staged to
    local scratch one at a time for decoding; each shard is written locally, then uploaded (``.pt`` first,
    its ``.json`` after it, so a listed ``.json`` always has its shard), ``index.json`` last."""
    if is_remote(str(out)):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="soraprep-encode-") as work:
            return _encode(str(manifest), Store(out, storage_options), Path(work), vae=vae, text_encoder=text_encoder,
                           frames=frames, size=size, shard_size=shard_size, batch_size=batch_size,
                           label_column=label_column, dtype=dtype, device=device, text_max_length=text_max_length,
                           progress=progress, storage_options=storage_options)
    return _encode(str(manifest), Store(out), Path(out), vae=vae, text_encoder=text_encoder, frames=frames, size=size,
                   shard_size=shard_size, batch_size=batch_size, label_column=label_column, dtype=dtype,
                   device=device, text_max_length=text_max_length, progress=progress, storage_options=storage_options)


def _read_rows(manifest: str, storage_options: dict[str, Any] | None) -> tuple[list[dict[str, Any]], str]:
    """The manifest's rows and the name relative paths resolve against (one place to swap the reader)."""
    if not is_remote(manifest):
        return read_manifest(manifest), manifest
    ref = locate(manifest, storage_options)
    return list(iter_rows(ref)), join(ref.base, "manifest")


def _encode(manifest: str, store: Store, out: Path, *, vae, text_encoder, frames, size, shard_size, batch_size,
            label_column, dtype, device, text_max_length, progress, storage_options) -> EncodeResult:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if frames is not None and frames < 1:
        raise ValueError(f"--frames must be >= 1, got {frames}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"--size takes HxW with positive numbers, got {size}")
    rows, paths_from = _read_rows(manifest, storage_options)
    if label_column and rows and not any(label_column in r for r in rows):
        raise ValueError(f"--label-column {label_column!r} is not a column of {manifest}")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    ae = load_autoencoder(vae) if isinstance(vae, str | Path) else vae
    ae.to(dev)
    enc = None
    if text_encoder is not None:
        from soraprep.models.text_encoder import TextEncoder

        enc = text_encoder if isinstance(text_encoder, TextEncoder) else \
            TextEncoder.from_pretrained(text_encoder, max_length=text_max_length, device=dev)
    plan, skipped = _plan(rows, frames, size, shard_size)
    for shape in sorted({shape for _, shape, _ in plan}):  # configs fail loud, before any work
        problem = ae.shape_problem(*shape)
        if problem:
            where = "--frames/--size" if frames or size else "the manifest's buckets"
            raise ValueError(f"{problem} (from {where}): pass --frames F --size HxW that fit it")
    out.mkdir(parents=True, exist_ok=True)
    result = EncodeResult(out if not store.remote else store.url(""), {})
    total = sum(len(r) for _, _, r in plan)
    done = 0
    metas = []
    settings = {"vae": ae.spec, "text_encoder": None if enc is None else str(getattr(enc.model, "name_or_path", "")),
                "text_len": None if enc is None else enc.max_length, "label_column": label_column, "dtype": dtype}
    for name, shape, shard_rows in plan:
        ids = [_clip_id(r) for r in shard_rows]
        meta_path = out / f"{name}.json"
        if store.isfile(f"{name}.json") and store.isfile(f"{name}.pt"):
            meta = json.loads(store.read_text(f"{name}.json"))
            if meta.get("planned") == ids and meta.get("settings") == settings:  # same rows, same encoders
                metas.append(meta)
                result.reused += meta["count"]
                done += len(ids)
                if progress:
                    progress(done, total)
                continue
        meta = _encode_shard(name, shape, shard_rows, ids, paths_from, ae, enc, batch_size, label_column,
                             DTYPES[dtype], dev, out, progress=lambda k, d=done: progress and progress(d + k, total),
                             storage_options=storage_options)
        meta["settings"] = settings
        _atomic_save(meta, meta_path, as_json=True)
        if store.remote:  # the shard first, then the .json that marks it committed
            for f in (f"{name}.pt", f"{name}.json"):
                store.put_file(out / f, f)
                (out / f).unlink()
        done += len(ids)
        metas.append(meta)
        result.encoded += meta["count"]
    result.index = _write_index(out, metas, skipped, manifest, ae, enc, frames, size, label_column)
    if store.remote:
        store.put_file(out / INDEX, INDEX)
    result.errors = result.index["errors"]
    return result


def _encode_shard(name, shape, rows, ids, manifest, ae: Autoencoder, enc, batch_size, label_column, dtype, dev,
                  out: Path, progress, storage_options=None) -> dict[str, Any]:
    lat, texts, masks, labels, kept, errors = [], [], [], [], [], []
    uncaptioned = 0
    stats = {"sum": 0.0, "sumsq": 0.0, "n": 0}
    t_decode = t_vae = t_text = 0.0
    for b in range(0, len(rows), batch_size):
        batch, clips = [], []
        t0 = time.perf_counter()
        for r in rows[b:b + batch_size]:
            try:
                clips.append(load_clip(r, manifest, shape, storage_options))
                batch.append(r)
            except Exception as exc:  # noqa: BLE001 - rows fail soft: recorded, the run goes on
                errors.append({"clip_id": _clip_id(r), "stage": "encode", "kind": getattr(exc, "kind", type(exc).__name__),
                               "message": str(exc)[:500]})
        t_decode += time.perf_counter() - t0
        if batch:
            video = torch.from_numpy(np.stack(clips)).to(dev).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
            t0 = time.perf_counter()
            z = ae.encode(video).float()  # (n, C, T', H', W')
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t_vae += time.perf_counter() - t0
            stats["sum"] += float(z.double().sum())
            stats["sumsq"] += float((z.double() ** 2).sum())
            stats["n"] += z.numel()
            lat.append(z.to(dtype).cpu())
            if enc is not None:
                t0 = time.perf_counter()
                captions = [str(r.get("text") or r.get("caption") or "") for r in batch]
                uncaptioned += sum(1 for c in captions if not c.strip())
                emb, mask = enc.encode(captions)
                t_text += time.perf_counter() - t0
                texts.append(emb.to(dtype).cpu())
                masks.append(mask.cpu())
            if label_column:
                labels += [int(r[label_column]) for r in batch]
            kept += [_clip_id(r) for r in batch]
        progress(b + len(rows[b:b + batch_size]))
    shard: dict[str, Any] = {"clip_ids": kept, "shape": list(shape)}
    if kept:
        shard["latents"] = torch.cat(lat)
        if enc is not None:
            shard["text"], shard["mask"] = torch.cat(texts), torch.cat(masks)
        if label_column:
            shard["labels"] = torch.tensor(labels, dtype=torch.long)
        _atomic_save(shard, out / f"{name}.pt")
    else:
        (out / f"{name}.pt").write_bytes(b"")  # nothing to load; the meta says count 0
    meta = {"name": name, "file": f"{name}.pt", "shape": list(shape), "planned": ids, "clip_ids": kept,
            "count": len(kept), "latent_shape": list(shard["latents"].shape[1:]) if kept else None,
            "errors": errors, "stats": stats, "seconds": {"decode": t_decode, "autoencoder": t_vae, "text": t_text},
            "uncaptioned": uncaptioned,
            "labels_max": max(labels) if labels else None}
    return meta


def _write_index(out: Path, metas, skipped, manifest, ae: Autoencoder, enc, frames, size, label_column):
    n = sum(m["stats"]["n"] for m in metas)
    mean = sum(m["stats"]["sum"] for m in metas) / n if n else 0.0
    var = sum(m["stats"]["sumsq"] for m in metas) / n - mean**2 if n else 1.0
    std = math.sqrt(max(var, 1e-12))
    scale = ae.scaling_factor if ae.scaling_factor is not None else 1.0 / std
    shapes: dict[str, dict[str, Any]] = {}
    for m in metas:
        if not m["count"]:
            continue
        key = "x".join(map(str, m["shape"]))
        s = shapes.setdefault(key, {"shape": m["shape"], "clips": 0, "seconds": 0.0,
                                    "macs_per_clip": ae.encode_macs(*m["shape"])})
        s["clips"] += m["count"]
        s["seconds"] += m["seconds"]["autoencoder"]
    est = sum((s["macs_per_clip"] or 0) * s["clips"] for s in shapes.values())
    secs = sum(s["seconds"] for s in shapes.values())
    cost = {"estimated_flops": 2 * est if all(s["macs_per_clip"] is not None for s in shapes.values()) else None,
            "measured_autoencoder_s": secs,
            "decode_s": sum(m["seconds"]["decode"] for m in metas),
            "text_s": sum(m["seconds"]["text"] for m in metas), "by_shape": shapes}
    cost["implied_flops_per_s"] = cost["estimated_flops"] / secs if cost["estimated_flops"] and secs else None
    labels_max = [m["labels_max"] for m in metas if m["labels_max"] is not None]
    index = {
        "version": 1,
        "manifest": manifest if is_remote(manifest) else str(Path(manifest).resolve()),
        "autoencoder": {"kind": ae.kind, "spec": ae.spec, "latent_channels": ae.latent_channels,
                        "compression": list(ae.compression)},
        "text_encoder": None if enc is None else {"spec": str(getattr(enc.model, "name_or_path", "")),
                                                  "kind": enc.kind, "dim": enc.dim, "max_length": enc.max_length},
        "frames": frames, "size": list(size) if size else None, "label_column": label_column,
        "num_classes": (max(labels_max) + 1) if labels_max else 0,
        "latent_mean": mean, "latent_std": std, "latent_scale": scale,
        "shards": [{k: m[k] for k in ("file", "shape", "latent_shape", "count", "clip_ids")} for m in metas
                   if m["count"]],
        "num_samples": sum(m["count"] for m in metas),
        "skipped": skipped,
        "errors": [e for m in metas for e in m["errors"]],
        "captions_missing": sum(m.get("uncaptioned", 0) for m in metas) if enc is not None else None,
        "cost": cost,
    }
    _atomic_save(index, out / INDEX, as_json=True)
    return index


def read_index(folder: str | Path) -> dict[str, Any]:
    p = Path(folder) / INDEX
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: run `soraprep encode MANIFEST -o {folder} --vae ...` first")
    try:
        index = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as exc:  # a cut-short copy, another tool's file
        from soraprep.train.config import ConfigError

        raise ConfigError(f"{p} is not valid JSON ({exc}): re-run `soraprep encode` into {folder}") from exc
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
        from soraprep.train.config import ConfigError

        raise ConfigError(f"{p} is not a `soraprep encode` index (no 'shards' list)")
    return index
