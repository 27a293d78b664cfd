"""Caption a manifest file: read, caption, write atomically, and report a summary."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

from soraprep.caption.pipeline import Captioning, CaptionSettings, CaptionSummary
from soraprep.manifest import read_manifest, read_metadata, rows_to_table, write_jsonl, write_manifest
from soraprep.manifest_dataset import locate, manifest_base, write_rows_dataset

CACHE_ENV = "SORAPREP_CAPTION_CACHE"


def default_cache_path(out: str | os.PathLike) -> Path:
    """``$SORAPREP_CAPTION_CACHE`` if set, else ``.soraprep-cache/captions.sqlite`` beside the output manifest
    (so a rerun into the same folder, or a resume after a crash, finds every committed caption)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path(out).resolve().parent / ".soraprep-cache" / "captions.sqlite"


def caption_manifest(manifest: str | os.PathLike, *, settings: CaptionSettings, out: str | os.PathLike | None = None,
                     progress: Callable[[int, int], None] | None = None) -> CaptionSummary:
    """Caption ``manifest`` into ``out`` (default: in place). Writes ``<out>.caption-summary.json`` too.

    ``manifest`` may also be a ``manifest/`` dataset or a curate output folder (see ``manifest_dataset.locate``);
    a dataset captioned in place is rewritten as a dataset."""
    source = locate(manifest)
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
    base_in, base_out = Path(manifest_base(str(manifest))), Path(manifest_base(str(out)))
    if base_out != base_in:   # keep relative paths pointing at the same files
        for r in new_rows:
            p = r.get("path")
            if p and "://" not in p and not os.path.isabs(p):
                r["path"] = os.path.relpath(base_in / p, base_out)
    meta["soraprep.caption"] = json.dumps({
        "backend": settings.backend, "model": job.model_label, "mode": job.mode, "frames": job.frames,
        "lang": settings.lang, "profile": job.profile.name, "prompt_hash": job.prompt_hash,
        "summary": summary.to_dict()}, ensure_ascii=False)
    if in_place_dataset:
        write_rows_dataset(source.store, rows_to_table(new_rows, meta), prefix=source.key)
    elif out.suffix == ".jsonl":
        write_jsonl(out, rows_to_table(new_rows, meta).to_pylist())
    else:
        write_manifest(out, new_rows, metadata=meta)
    Path(str(out) + ".caption-summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary
