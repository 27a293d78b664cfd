"""Run a dataset parser and write its rows as a clip manifest, with a summary of what happened.

``ingest(dataset=..., path=..., out=...)`` is what ``soraprep ingest`` calls. The split rule: a dataset
whose records carry a split (MSR-VTT) is *filtered* by ``split``; for the others the whole file is one
split, so ``split`` labels the rows (default: guessed from the file name, e.g. ``panda70m_validation.csv``
-> ``val``). ``limit`` keeps the first N rows (error rows included, so a bad file cannot hide behind
the limit). Clip ids must be unique: a repeated one becomes a ``duplicate_clip`` error row.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from soraprep.datasets.common import SPLITS, MetadataError, ParseContext, split_from_filename
from soraprep.datasets.registry import get_spec
from soraprep.manifest import write_manifest
from soraprep.types import RowError, fps_fraction


@dataclass
class IngestReport:
    """Rows read / clips produced / errors by kind, for the CLI and for tests."""

    dataset: str
    metadata: str
    records_read: int = 0
    clips: int = 0
    errors: Counter = field(default_factory=Counter)
    filtered_by_split: int = 0
    limited: bool = False
    output: str | None = None

    @property
    def num_errors(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "metadata": self.metadata, "records_read": self.records_read,
                "clips": self.clips, "errors": dict(self.errors), "filtered_by_split": self.filtered_by_split,
                "limited": self.limited, "output": self.output}


def _check_args(split: str | None, limit: int | None, fps: Any) -> Fraction | None:
    if split is not None and split not in SPLITS:
        raise MetadataError(f"--split {split!r} is not one of {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise MetadataError(f"--limit must be at least 1, got {limit}")
    if fps is None:
        return None
    try:
        rate = fps_fraction(fps)
    except (ValueError, ZeroDivisionError):
        raise MetadataError(f"--fps {fps!r} is not a frame rate (try 30, 29.97 or 30000/1001)") from None
    if rate is None or rate <= 0:
        raise MetadataError(f"--fps must be positive, got {fps!r}")
    return rate


def ingest_rows(*, dataset: str, path: str | os.PathLike, split: str | None = None, limit: int | None = None,
                fps: Any = None) -> tuple[list[dict[str, Any]], IngestReport]:
    """Parse ``path`` with the ``dataset`` parser; return (manifest rows, report). Raises MetadataError."""
    rate = _check_args(split, limit, fps)
    try:
        spec = get_spec(dataset)
    except KeyError as exc:
        raise MetadataError(str(exc.args[0])) from None
    path = Path(path)
    if not path.exists():
        raise MetadataError(f"{path} does not exist")
    if dataset != "folder" and path.is_dir():
        raise MetadataError(f"{path} is a folder; --dataset {dataset} reads a metadata file "
                            "(use --dataset folder for a folder of videos)")
    ctx = ParseContext(path=path, dataset=dataset, fps=rate, license=spec.license)
    report = IngestReport(dataset=dataset, metadata=str(path))
    file_split = split_from_filename(path) if path.is_file() else None
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for row in spec.parse(ctx):
        row_split = row.get("split")
        if split is not None and row_split is not None and row_split != split and row.get("error") is None:
            report.filtered_by_split += 1
            continue
        if row_split is None and row.get("error") is None:
            row["split"] = split or file_split
        cid = row.get("clip_id")
        if cid in seen:
            seen[cid] += 1
            first = row.get("meta_line")
            row = dict(row, clip_id=f"{cid}-dup{seen[cid]}",
                       error=RowError("ingest", "duplicate_clip",
                                      f"{path}:{first}: clip {cid!r} appears more than once").to_dict())
        else:
            seen[cid] = 0
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            report.limited = True
            break
    report.records_read = ctx.records_read
    for r in rows:
        if r.get("error"):
            report.errors[r["error"]["kind"]] += 1
        else:
            report.clips += 1
    return rows, report


def ingest(*, dataset: str, path: str | os.PathLike, out: str | os.PathLike, split: str | None = None,
           limit: int | None = None, fps: Any = None) -> IngestReport:
    """Parse ``path`` and write the manifest ``out`` (Parquet). Returns the report."""
    out = Path(out)
    if out.suffix.lower() != ".parquet":
        raise MetadataError(f"-o {out} must be a .parquet path")
    rows, report = ingest_rows(dataset=dataset, path=path, split=split, limit=limit, fps=fps)
    params = {"dataset": dataset, "metadata": str(path), "split": split, "limit": limit,
              "fps": None if fps is None else str(fps)}
    write_manifest(out, rows, metadata={"soraprep.ingest": json.dumps(params)})
    report.output = str(out)
    return report
