"""WebDataset shards: ``shard-000000.tar`` ... of ``<key>.mp4`` + ``<key>.json`` + ``<key>.txt`` per clip.

``export_webdataset(manifest, out, shard_size=..., shard_samples=...)`` streams the manifest in order and
writes each kept clip (``include="all"``: every row without an error) as one sample:

==============  ====================================================================================
``KEY.mp4``     the clip file's bytes (its own extension when the file is not ``.mp4``, e.g. ``.avi``)
``KEY.json``    the manifest row (ids, span, fps, size, bucket, scores, caption, ...) as JSON
``KEY.txt``     the caption (``text``, else ``caption``) in UTF-8, when the row has one
==============  ====================================================================================

``KEY`` is the clip id made safe for WebDataset, which splits a member name at its first dot: letters,
digits, ``-`` and ``_`` stay, every other byte becomes ``+XX`` (hex; ``+`` itself too), so different ids
give different keys and ``v0-0000`` stays ``v0-0000``. Keys longer than 80 characters keep 60 and add a
hash. A key repeated inside one shard gets ``-dupN`` (soraprep's manifests hold unique clip ids).

Shards follow manifest order and close before the next sample would take them past ``shard_size`` bytes
(the exact tar size: 512-byte headers and padding, the end blocks, the 10 KiB record) or past
``shard_samples`` samples; a sample larger than ``shard_size`` gets a shard of its own. The plan uses
file sizes (a stat or HEAD per clip), so it is the same on every run, and so are the bytes (fixed tar
headers: mtime 0, uid/gid 0, no user names).

Each shard is written whole to local scratch and then moved into place (a local rename, or one upload:
readers never see half a shard), followed by a small marker ``.soraprep/shards/NAME.json`` holding the
shard's plan digest. A rerun into the same output skips a shard whose marker matches the new plan and
whose file has the planned size, rewrites the others, deletes ``shard-*.tar`` beyond the new plan, and
writes ``shards.json`` (names, samples, bytes, totals, rows that failed) last.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from soraprep.export.clips import ClipReader, describe, ordered_map, selected
from soraprep.manifest import PATH_COLUMNS, encode_path
from soraprep.manifest_store import iter_rows, locate
from soraprep.storage.files import publish, temp_path
from soraprep.storage.store import Store

INDEX = "shards.json"
MARKERS = ".soraprep/shards"
SHARD = re.compile(r"^shard-(\d{6})\.tar$")
BLOCK = 512
RECORD = 20 * BLOCK        # tarfile pads an archive to a multiple of its record size
MAX_KEY = 80               # "KEY.json" stays within a plain ustar name (100 bytes): no PAX headers
MAX_ERRORS_LISTED = 100
_SAFE = re.compile(r"[A-Za-z0-9_-]")


def sample_key(clip_id: str) -> str:
    """A WebDataset key for a clip id: no dots or slashes, injective below ``MAX_KEY`` characters."""
    raw = str(clip_id)
    key = "".join(c if _SAFE.fullmatch(c) else "".join(f"+{b:02x}" for b in c.encode("utf-8", "surrogateescape"))
                  for c in raw)
    if len(key) > MAX_KEY:
        key = key[:60] + "-" + hashlib.sha1(raw.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return key or "+"


def member_bytes(size: int) -> int:
    """Bytes one tar member of ``size`` bytes takes: its header and its data padded to 512."""
    return BLOCK + math.ceil(size / BLOCK) * BLOCK


def tar_bytes(members: int) -> int:
    """Size of a tar whose members take ``members`` bytes: + two end blocks, padded to the record size."""
    return math.ceil((members + 2 * BLOCK) / RECORD) * RECORD


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN / inf
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def row_json(row: dict[str, Any]) -> bytes:
    """The row as UTF-8 JSON (file names that are not UTF-8 written as ``fsbytes:`` like the manifest)."""
    row = _json_safe(row)
    try:
        return json.dumps(row, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        fixed = {k: encode_path(v) if k in PATH_COLUMNS else v for k, v in row.items()}
        return json.dumps(fixed, ensure_ascii=True, default=str).encode("utf-8")


@dataclass(frozen=True)
class Sample:
    key: str
    path: str                  # the row's clip path (as the manifest has it)
    ext: str                   # "mp4" (or the file's own extension)
    json: bytes
    txt: bytes | None
    clip_size: int

    @property
    def bytes(self) -> int:
        n = member_bytes(self.clip_size) + member_bytes(len(self.json))
        return n + (member_bytes(len(self.txt)) if self.txt is not None else 0)


@dataclass
class ShardPlan:
    index: int
    samples: list[Sample] = field(default_factory=list)
    members: int = 0

    @property
    def name(self) -> str:
        return f"shard-{self.index:06d}.tar"

    @property
    def bytes(self) -> int:
        return tar_bytes(self.members)

    def digest(self) -> str:
        h = hashlib.sha256()
        for s in self.samples:
            h.update(json.dumps([s.key, s.path, s.ext, s.clip_size]).encode())
            h.update(hashlib.sha256(s.json).digest())
            h.update(hashlib.sha256(s.txt).digest() if s.txt is not None else b"-")
        return h.hexdigest()


@dataclass
class ExportResult:
    out: str
    shards: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 0
    bytes: int = 0
    written: int = 0           # shards written by this run
    reused: int = 0            # shards found complete from an earlier run
    removed: int = 0           # stale shards of an earlier, longer plan
    rows: int = 0              # manifest rows read
    not_selected: int = 0      # rows left out (dropped or failed; --all: failed)
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.error_count else 0


def _ext(path: str) -> str:
    suffix = PurePosixPath(str(path)).suffix.lower().lstrip(".")
    return suffix if suffix and re.fullmatch(r"[a-z0-9]+", suffix) else "mp4"


def _text(row: dict[str, Any]) -> bytes | None:
    text = row.get("text") or row.get("caption")
    if not isinstance(text, str) or not text:
        return None
    return text.encode("utf-8", "backslashreplace")


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _Exporter:
    def __init__(self, manifest, out, *, shard_size: int, shard_samples: int | None, include: str,
                 storage_options, workers: int, progress):
        self.ref = locate(manifest, storage_options)
        self.reader = ClipReader(self.ref.base, storage_options)
        self.out = Store(out, storage_options)
        self.shard_size, self.shard_samples, self.include = shard_size, shard_samples, include
        self.workers = workers
        self.progress = progress
        self.result = ExportResult(out=self.out.url(""))

    # -- planning: rows -> samples (with sizes) -> shards -------------------------------------------------
    def _candidates(self) -> Iterator[dict[str, Any]]:
        for row in iter_rows(self.ref):
            self.result.rows += 1
            if not selected(row, self.include):
                self.result.not_selected += 1
                continue
            if not row.get("path"):
                self._error(row, "missing_path", "row has no path")
                continue
            yield row

    def _error(self, row: dict[str, Any], kind: str, message: str) -> None:
        self.result.error_count += 1
        if len(self.result.errors) < MAX_ERRORS_LISTED:
            self.result.errors.append({"clip_id": row.get("clip_id"), "path": row.get("path"), "kind": kind,
                                       "message": message[:500]})

    def _samples(self, pool: ThreadPoolExecutor) -> Iterator[tuple[dict[str, Any], int]]:
        for row, size in ordered_map(lambda r: self.reader.size(r["path"]), self._candidates(), pool,
                                     window=4 * self.workers):
            if isinstance(size, BaseException):
                self._error(row, "missing_file", describe(size))
                continue
            yield row, size

    def plans(self, pool: ThreadPoolExecutor) -> Iterator[ShardPlan]:
        shard = ShardPlan(0)
        keys: dict[str, int] = {}
        for row, size in self._samples(pool):
            key = sample_key(row.get("clip_id") if row.get("clip_id") is not None else row["path"])
            sample = Sample(key=key, path=row["path"], ext=_ext(row["path"]), json=row_json(row), txt=_text(row),
                            clip_size=size)
            full = shard.samples and (tar_bytes(shard.members + sample.bytes) > self.shard_size
                                      or (self.shard_samples and len(shard.samples) >= self.shard_samples))
            if full:
                yield shard
                shard, keys = ShardPlan(shard.index + 1), {}
            if key in keys:
                keys[key] += 1
                sample = dataclasses.replace(sample, key=f"{key}-dup{keys[key]}")
            else:
                keys[key] = 0
            shard.samples.append(sample)
            shard.members += sample.bytes
        if shard.samples:
            yield shard

    # -- writing --------------------------------------------------------------------------------------
    def _marker(self, name: str) -> str:
        return f"{MARKERS}/{name}.json"

    def _complete(self, plan: ShardPlan, digest: str) -> dict[str, Any] | None:
        try:
            marker = json.loads(self.out.read_text(self._marker(plan.name)))
            if marker.get("digest") == digest and self.out.size(plan.name) == marker.get("bytes"):
                return marker
        except (OSError, ValueError):
            pass
        return None

    def write(self, plan: ShardPlan, pool: ThreadPoolExecutor, scratch: Path) -> dict[str, Any]:
        digest = plan.digest()
        done = self._complete(plan, digest)
        if done is not None:
            self.result.reused += 1
            return done
        local = self.out.local_path(plan.name) if not self.out.remote else scratch / plan.name
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(local)
        samples = 0
        try:
            with open(tmp, "wb") as fh:
                with tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for s, data in ordered_map(lambda s: self.reader.read(s.path), plan.samples, pool,
                                               window=self.workers):
                        if isinstance(data, BaseException):
                            self._error({"clip_id": s.key, "path": s.path}, "read_failed", describe(data))
                            continue
                        tar.addfile(_tarinfo(f"{s.key}.{s.ext}", len(data)), io.BytesIO(data))
                        tar.addfile(_tarinfo(f"{s.key}.json", len(s.json)), io.BytesIO(s.json))
                        if s.txt is not None:
                            tar.addfile(_tarinfo(f"{s.key}.txt", len(s.txt)), io.BytesIO(s.txt))
                        samples += 1
                fh.flush()
                os.fsync(fh.fileno())
            size = tmp.stat().st_size
            if self.out.remote:
                self.out.put_file(tmp, plan.name)   # one upload: the shard appears whole or not at all
            else:
                publish(tmp, local, fsync=False)  # fsynced above
        finally:
            tmp.unlink(missing_ok=True)
        entry = {"name": plan.name, "samples": samples, "bytes": size, "first": plan.samples[0].key,
                 "last": plan.samples[-1].key, "digest": digest}
        if samples == len(plan.samples):   # a shard that lost a sample to a read error is redone next time
            self.out.write_text(self._marker(plan.name), json.dumps(entry))
        else:
            self.out.delete(self._marker(plan.name))
        self.result.written += 1
        return entry

    def run(self) -> ExportResult:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="export") as pool, \
                tempfile.TemporaryDirectory(prefix="soraprep-shards-") as scratch:
            for plan in self.plans(pool):
                entry = self.write(plan, pool, Path(scratch))
                self.result.shards.append({k: entry[k] for k in ("name", "samples", "bytes", "first", "last")})
                self.result.samples += entry["samples"]
                self.result.bytes += entry["bytes"]
                if self.progress:
                    self.progress(self.result.samples, len(self.result.shards))
        self._remove_stale()
        self.result.seconds = time.perf_counter() - t0
        self._write_index()
        return self.result

    def _remove_stale(self) -> None:
        keep = {s["name"] for s in self.result.shards}
        for key in self.out.list(""):
            if "/" not in key and SHARD.match(key) and key not in keep:
                self.out.delete(key)
                self.out.delete(self._marker(key))
                self.result.removed += 1

    def _write_index(self) -> None:
        r = self.result
        n = len(r.shards)
        index = {
            "format": "webdataset", "version": 1, "manifest": self.ref.url,
            "urls": f"shard-{{000000..{n - 1:06d}}}.tar" if n else None,
            "shards": r.shards, "num_shards": n, "num_samples": r.samples, "total_bytes": r.bytes,
            "shard_size": self.shard_size, "shard_samples": self.shard_samples, "include": self.include,
            "rows": r.rows, "not_selected": r.not_selected, "error_count": r.error_count, "errors": r.errors,
        }
        self.out.write_text(INDEX, json.dumps(index, indent=1) + "\n")


def export_webdataset(manifest: str | os.PathLike, out: str | os.PathLike, *, shard_size: int = 1024**3,
                      shard_samples: int | None = None, include: str = "kept",
                      storage_options: dict[str, Any] | None = None, workers: int = 8,
                      progress: Callable[[int, int], None] | None = None) -> ExportResult:
    """Write ``manifest``'s clips as WebDataset shards into ``out`` (a folder or store URL); see the module doc.

    ``workers`` bounds the requests in flight (stats and reads; at most ``workers`` clips in memory)."""
    if include not in ("kept", "all"):
        raise ValueError(f"include must be kept or all, got {include!r}")
    if shard_size < 1 or (shard_samples is not None and shard_samples < 1):
        raise ValueError("shard_size and shard_samples must be positive")
    return _Exporter(manifest, out, shard_size=shard_size, shard_samples=shard_samples, include=include,
                     storage_options=storage_options, workers=max(1, workers), progress=progress).run()
