"""Caption a manifest file: read, caption, write atomically, and report a summary."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from soraprep import manifest_dataset as mds
from soraprep.caption.pipeline import Captioning, CaptionSettings, CaptionSummary
from soraprep.manifest import read_manifest, read_metadata, rows_to_table, write_jsonl, write_manifest
from soraprep.manifest_parts import write_rows_dataset
from soraprep.manifest_store import ManifestRef, iter_rows, locate, read_meta, resolve, write_rows
from soraprep.storage.store import is_remote, join, split_url

CACHE_ENV = "SORAPREP_CAPTION_CACHE"


def default_cache_path(out: str | os.PathLike) -> Path:
    """``$SORAPREP_CAPTION_CACHE`` if set, else ``.soraprep-cache/captions.sqlite`` beside the output manifest
    (so a rerun into the same folder, or a resume after a crash, finds every committed caption)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path(out).resolve().parent / ".soraprep-cache" / "captions.sqlite"


def caption_manifest(manifest: str | os.PathLike, *, settings: CaptionSettings, out: str | os.PathLike | None = None,
                     progress: Callable[[int, int], None] | None = None) -> CaptionSummary:
    """Caption ``manifest`` into ``out`` (default: in place). Writes ``<out>.caption-summary.json`` too.

    ``manifest`` and ``out`` may be store URLs (``s3://bucket/runs/r1/manifest.parquet``; fsspec options in
    ``settings.storage_options``): clips are staged to local scratch one at a time for frame reading, and the
    captioned manifest is uploaded whole. The default cache then lives on this machine
    (``~/.cache/soraprep/captions/<hash of out>.sqlite``, or ``$SORAPREP_CAPTION_CACHE``).

    ``manifest`` may also be a ``manifest/`` dataset or a curate output folder (see ``manifest_dataset.locate``);
    a local dataset captioned in place is rewritten as a dataset."""
    if is_remote(str(manifest)) or (out is not None and is_remote(str(out))):
        return _caption_store(str(manifest), settings=settings, out=None if out is None else str(out),
                              progress=progress)
    source = mds.locate(manifest)
    in_place_dataset = out is None and source.kind == "dataset"
    manifest = Path(manifest)
    out = Path(out) if out is not None else Path(source.url if in_place_dataset else source.name)
    if settings.cache_path is None:
        settings = dataclasses.replace(settings, cache_path=str(default_cache_path(out)))
    job = Captioning(settings)       # validates before any work
    rows = read_manifest(manifest)
    meta = read_metadata(manifest)
    try:
        new_rows, summary = job.caption_rows(rows, manifest_path=manifest, progress=progress)
    finally:
        job.close()
    base_in, base_out = Path(mds.manifest_base(str(manifest))), Path(mds.manifest_base(str(out)))
    if base_out != base_in:   # keep relative paths pointing at the same files
        for r in new_rows:
            p = r.get("path")
            if p and "://" not in p and not os.path.isabs(p):
                r["path"] = os.path.relpath(base_in / p, base_out)
    meta["soraprep.caption"] = _caption_meta(job, settings, summary)
    if in_place_dataset:
        write_rows_dataset(source.store, rows_to_table(new_rows, meta), prefix=source.key)
    elif out.suffix == ".jsonl":
        write_jsonl(out, rows_to_table(new_rows, meta).to_pylist())
    else:
        write_manifest(out, new_rows, metadata=meta)
    Path(str(out) + ".caption-summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary


def _caption_meta(job: Captioning, settings: CaptionSettings, summary: CaptionSummary) -> str:
    return json.dumps({
        "backend": settings.backend, "model": job.model_label, "mode": job.mode, "frames": job.frames,
        "lang": settings.lang, "profile": job.profile.name, "prompt_hash": job.prompt_hash,
        "summary": summary.to_dict()}, ensure_ascii=False)


def _read(ref: ManifestRef) -> tuple[list[dict], dict[str, str]]:
    """The rows and metadata of a manifest on a store (one place to swap in the streaming reader)."""
    return list(iter_rows(ref)), read_meta(ref)


def _caption_store(manifest: str, *, settings: CaptionSettings, out: str | None,
                   progress: Callable[[int, int], None] | None) -> CaptionSummary:
    """caption_manifest when the manifest or the output is a store URL."""
    opts = settings.storage_options
    ref = locate(manifest, opts)
    if out is None:
        if ref.kind == "dataset":
            raise ValueError(f"{manifest} is a manifest dataset: give -o OUT_MANIFEST (a .parquet file) to write")
        out = ref.url
    out_store, out_name = split_url(out, opts)
    if settings.cache_path is None and not os.environ.get(CACHE_ENV):
        digest = hashlib.sha1(out.encode()).hexdigest()[:16]
        settings = dataclasses.replace(settings, cache_path=str(Path.home() / ".cache" / "soraprep" / "captions" /
                                                                f"{digest}.sqlite"))
    elif settings.cache_path is None:
        settings = dataclasses.replace(settings, cache_path=os.environ[CACHE_ENV])
    job = Captioning(settings)       # validates before any work
    rows, meta = _read(ref)
    try:
        new_rows, summary = job.caption_rows(rows, manifest_path=join(ref.base, "manifest"), progress=progress)
    finally:
        job.close()
    if out_store.url("").rstrip("/") != ref.base.rstrip("/"):   # another folder: paths become absolute / URLs
        for r in new_rows:
            if r.get("path"):
                r["path"] = resolve(ref.base, r["path"])
    meta["soraprep.caption"] = _caption_meta(job, settings, summary)
    write_rows(out, new_rows, metadata=meta, storage_options=opts)
    out_store.write_text(out_name + ".caption-summary.json", json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary
