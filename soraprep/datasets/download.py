"""``soraprep download``: fetch the sources a manifest points to, then cut each published span.

For every distinct ``source`` of the manifest's good rows:

* ``http(s)://`` YouTube URLs go through yt-dlp (the ``download`` extra), other http(s) URLs through
  :class:`~soraprep.datasets.fetch.HttpFetcher` (resume, retries, per-host rate limits, checks);
* local paths (absolute, or relative to the manifest's folder) are used where they are, never copied;
* anything else (``ftp:``, ``file:``, ``data:``...) is refused: the rows get an error.

Then each row's span ``[start_s, end_s)`` becomes frames of the downloaded video (its probed frame
rate) and is cut with :func:`soraprep.video.cut.cut_clip` (``--cut exact`` re-encodes frame-exactly,
``copy``/``keyframe`` snap inwards to keyframes, ``none`` leaves the span as a pointer into the
source). Rows without a span are the whole video and are not cut.

In the output manifest ``source`` is the local video (relative to OUT when downloaded into it) and
``source_url`` the original URL, so ``soraprep curate OUT/manifest.parquet`` works offline; ``path`` is
the clip file (or the video itself for whole videos and ``--cut none``).

Nothing is written outside OUT: file names come from the ids through :func:`safe_name` (ids such as
``../../x`` or ``/etc/passwd`` become flat, deterministic names) and every path is checked to lie
inside OUT. Complete downloads (``videos/NAME``) and complete clips (with their ``.done`` record) are
skipped on a re-run, so an interrupted download resumes. Writes ``OUT/manifest.parquet``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from soraprep.datasets.common import MetadataError, youtube_id
from soraprep.datasets.fetch import FetchError, HttpFetcher, RateLimiter, check_url
from soraprep.manifest import MAX_ID_CHARS, cell_problem, read_manifest, row_problem, write_manifest
from soraprep.stages import error_dict
from soraprep.storage.files import confined, safe_name
from soraprep.types import fps_columns
from soraprep.video.sniff import VIDEO_EXTENSIONS

CUT_MODES = ("none", "copy", "keyframe", "exact")
MANIFEST_NAME = "manifest.parquet"
YOUTUBE_HOST = "www.youtube.com"  # the --rate-limit key for every YouTube URL


def classify(source: str) -> str:
    """'youtube' | 'http' | 'local' | 'unsupported' for a row's ``source``."""
    try:
        parsed = urlparse(source)
    except ValueError:  # e.g. "http://[::1/x": the fetcher reports it as invalid_url
        return "http" if source.lower().startswith(("http:", "https:")) else "unsupported"
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        return "youtube" if youtube_id(source) else "http"
    if scheme == "" or (len(scheme) == 1 and re.match(r"^[A-Za-z]:[\\/]", source)):
        return "local"  # a path (C:\... on Windows parses as scheme "c")
    return "unsupported"


@dataclass
class DownloadReport:
    sources: int = 0
    downloaded: int = 0
    already_complete: int = 0
    local: int = 0
    clips_cut: int = 0
    clips_skipped: int = 0
    rows: int = 0
    errors: Counter = field(default_factory=Counter)   # download errors by kind
    upstream_errors: int = 0                           # rows that arrived with an error (e.g. from ingest)
    output: str | None = None

    @property
    def num_errors(self) -> int:
        return sum(self.errors.values()) + self.upstream_errors


def _video_file_name(row: dict[str, Any], source: str) -> str:
    key = str(row.get("video_id") or source)
    suffix = PurePosixPath(urlparse(source).path).suffix.lower()
    ext = suffix if suffix in VIDEO_EXTENSIONS else ".mp4"
    # the name hashes the source too: two datasets may reuse an id for different videos
    return f"{safe_name(key)}-{hashlib.sha1(source.encode()).hexdigest()[:6]}{ext}"


def _ytdlp(url: str, dst: Path, limiter: RateLimiter) -> Path:
    """Download a YouTube video with yt-dlp to ``dst``'s stem (yt-dlp picks the extension)."""
    existing = [p for p in dst.parent.glob(dst.stem + ".*") if not p.name.endswith((".part", ".ytdl", ".validator"))]
    if existing:
        return existing[0]
    try:
        import yt_dlp
    except ImportError:
        raise FetchError("missing_extra", "YouTube sources need yt-dlp: pip install 'soraprep[download]'") from None
    limiter.wait(YOUTUBE_HOST)  # youtu.be, m.youtube.com, ... share one limit
    dst.parent.mkdir(parents=True, exist_ok=True)
    opts = {
        "outtmpl": str(dst.with_suffix("")) + ".%(ext)s",  # our name, never one from the metadata
        "format": "bv*[ext=mp4]+ba[ext=m4a]/b[ext=mp4]/bv*+ba/b",
        "merge_output_format": "mp4", "noplaylist": True, "quiet": True, "no_warnings": True,
        "retries": 3, "continuedl": True, "restrictfilenames": True,
    }
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            ydl.download([url])
    except Exception as exc:  # yt-dlp raises many types (DownloadError, ExtractorError, ...)
        raise FetchError("ytdlp_failed", f"{url}: {exc}") from None
    existing = [p for p in dst.parent.glob(dst.stem + ".*") if not p.name.endswith((".part", ".ytdl", ".validator"))]
    if not existing:
        raise FetchError("ytdlp_failed", f"{url}: yt-dlp finished without writing a file")
    return existing[0]


class _Job:
    """Everything needed to fetch one source and cut its rows (run in a worker thread)."""

    def __init__(self, source: str, rows: list[dict[str, Any]], *, out: Path, manifest_dir: Path, cut: str,
                 fetcher: HttpFetcher, report: DownloadReport, lock: threading.Lock) -> None:
        self.source, self.rows, self.out, self.manifest_dir = source, rows, out, manifest_dir
        self.cut, self.fetcher, self.report, self.lock = cut, fetcher, report, lock

    def _count(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self.report, name, getattr(self.report, name) + n)

    def fetch(self) -> Path:
        kind = classify(self.source)
        if kind == "unsupported":
            raise FetchError("unsupported_scheme", f"{self.source!r}: only http(s) URLs and local paths are accepted")
        if kind == "local":
            path = Path(self.source)
            path = path if path.is_absolute() else self.manifest_dir / path
            try:
                is_file, exists = path.is_file(), path.exists()  # stat only: a FIFO is never opened
            except (OSError, ValueError) as exc:  # a name too long for the file system...
                raise FetchError("not_found", f"{str(path)[:300]}: {getattr(exc, 'strerror', None) or exc}") from None
            if not is_file:
                raise FetchError("not_a_regular_file" if exists else "not_found",
                                 f"{path}: not a regular file" if exists else f"no such file: {path}")
            self._count("local")
            return path
        check_url(self.source)  # a malformed URL fails here as invalid_url, before a file name is made from it
        dst = confined(self.out, "videos", _video_file_name(self.rows[0], self.source))
        if kind == "youtube":
            had = any(p for p in dst.parent.glob(dst.stem + ".*") if not p.name.endswith((".part", ".ytdl", ".validator")))
            path = _ytdlp(self.source, dst, self.fetcher.limiter)
            self._count("already_complete" if had else "downloaded")
            return path
        result = self.fetcher.fetch(self.source, dst)
        self._count("already_complete" if result.skipped else "downloaded")
        return result.path

    def run(self) -> list[dict[str, Any]]:
        try:
            video = self.fetch()
        except FetchError as exc:
            return [_fail(r, exc.kind, str(exc)) for r in self.rows]
        except ValueError as exc:  # confined(): a path that would resolve outside OUT (e.g. via a symlink)
            return [_fail(r, "unsafe_path", str(exc)) for r in self.rows]
        except OSError as exc:  # the local side: disk full, permissions (network errors are FetchErrors)
            return [_fail(r, "io_error", f"{self.source}: {exc}") for r in self.rows]
        from soraprep.video.io import VideoError, probe_with_index

        try:
            info, index = probe_with_index(video)   # one demux gives the frame count and the cut index
        except VideoError as exc:
            return [_fail(r, exc.kind, f"{video}: {exc.message}") for r in self.rows]
        return [self._cut_row(r, video, info, index) for r in self.rows]

    def _rel(self, path: Path) -> str:
        """Paths inside OUT are stored relative to it (the manifest's folder); others absolute."""
        path = Path(path).resolve()
        try:
            return path.relative_to(self.out.resolve()).as_posix()
        except ValueError:
            return str(path)

    def _cut_row(self, row: dict[str, Any], video: Path, info, index) -> dict[str, Any]:
        from soraprep.video.cut import CutPolicy
        from soraprep.video.io import VideoError
        from soraprep.video.span import span_frames, span_seconds

        out = dict(row)
        # the downloaded file becomes the source (curation reads `source` + span); the URL is kept
        out.update({"source": self._rel(video), "source_url": row["source"], **fps_columns(info.fps),
                    "codec": info.codec})
        start_s, end_s = row.get("start_s"), row.get("end_s")
        whole = start_s is None and end_s is None
        # seconds -> frames exactly as curate does it: from the demuxed timestamps (VFR-safe, video.span)
        start_frame, end_frame = span_frames(start_s, end_s, index=index, num_frames=info.num_frames)
        if start_frame >= info.num_frames or end_frame <= start_frame:
            return _fail(out, "span_outside_video", f"span {start_s}..{end_s} s is outside {video} "
                                                    f"({info.num_frames} frames at {info.fps} fps)")
        mode = self.cut
        width, height = info.width, info.height
        if whole or mode == "none":
            path, mode = video, "none"
        else:
            if row.get("clip_id") is not None:  # unique: download() refuses a clip_id reused elsewhere
                name = safe_name(str(row["clip_id"]))
            else:  # two datasets may reuse a video_id for different videos: the source tells them apart
                src_hash = hashlib.sha1(str(row["source"]).encode("utf-8", "surrogateescape")).hexdigest()[:6]
                name = safe_name(f"{row.get('video_id')}-{start_frame}-{src_hash}")
            suffix = "" if mode == "exact" else f".{mode}"  # modes never overwrite each other's clips
            try:
                dst = confined(self.out, "clips", f"{name}{suffix}.mp4")
                done = confined(self.out, "clips", ".done", f"{name}{suffix}.json")
            except ValueError as exc:
                return _fail(out, "unsafe_path", str(exc))
            try:  # the cut policy curate's cut stage uses: copy -> exact fallback, resume marker
                res = CutPolicy(mode=mode).cut(video, dst, start_frame=start_frame, end_frame=end_frame,
                                               index=index, marker=done)
            except VideoError as exc:
                return _fail(out, exc.kind, f"{video} frames {start_frame}..{end_frame}: {exc.message}")
            self._count("clips_skipped" if res.resumed else "clips_cut")
            path, mode = Path(res.path), res.mode
            start_frame, end_frame = res.start_frame, res.end_frame
            width, height = res.width or width, res.height or height
        num_frames = end_frame - start_frame
        span_start_s, span_end_s = span_seconds(start_frame, end_frame, index=index)
        out.update({
            "path": self._rel(path), "cut_mode": mode, "start_frame": start_frame, "end_frame": end_frame,
            "num_frames": num_frames, "duration_s": span_end_s - span_start_s,
            "width": width, "height": height, "aspect_ratio": height / width if width else None,
            "resolution": height * width,
        })
        if not whole:  # the span really held (snapping may move it inwards)
            out["start_s"], out["end_s"] = span_start_s, span_end_s
        return out


def _row_problem(row: dict[str, Any], claimed: dict[str, tuple[Any, Any, Any]]) -> tuple[str, str] | None:
    """(kind, message) when a row cannot be downloaded as given: checked before anything is fetched."""
    src = row.get("source")
    if src is None or src == "":
        return "missing_source", "row has no source"
    problem = row_problem(row, src)  # bad_source, bad_id, bad_span, bad_value
    if problem:
        return problem
    if row.get("clip_id") is not None:  # the clip file is named after it: one id, one footage
        cid, what = str(row["clip_id"]), (src, row.get("start_s"), row.get("end_s"))
        if claimed.setdefault(cid, what) != what:
            first = claimed[cid]
            return "duplicate_clip_id", (f"clip_id {cid!r} is also used by another row ({first[0]!r}, "
                                         f"{first[1]}..{first[2]} s); clip ids must be unique")
    return None


def _storable_row(row: dict[str, Any]) -> dict[str, Any]:
    """The row with values of the wrong type in known text columns written as text (so it can be stored)."""
    out = {k: v for k, v in row.items() if not cell_problem(k, v)}
    for col in ("source", "clip_id", "video_id"):
        if out.get(col) is not None and not isinstance(out[col], str):
            out[col] = json.dumps(out[col], default=str)[:200]
    for col in ("start_s", "end_s"):
        if out.get(col) is not None and (isinstance(out[col], bool) or not isinstance(out[col], int | float)):
            out[col] = None
    if isinstance(out.get("clip_id"), str) and len(out["clip_id"]) > MAX_ID_CHARS:
        out["clip_id"] = out["clip_id"][:MAX_ID_CHARS]
    return out


def _fail(row: dict[str, Any], kind: str, message: str) -> dict[str, Any]:
    return dict(row, error=error_dict("download", kind, message))


def download(*, manifest: str | os.PathLike, out: str | os.PathLike, concurrency: int = 4,
             rate_limits: dict[str, float] | None = None, cut: str = "exact",
             fetcher: HttpFetcher | None = None, fetch_options: dict[str, Any] | None = None,
             storage_options: dict[str, Any] | None = None, scratch: str | os.PathLike | None = None) -> DownloadReport:
    """Fetch every source of ``manifest`` into ``out``, cut each span, write ``out/manifest.parquet``.

    ``fetch_options`` are :class:`HttpFetcher` keyword arguments (``stall_window_s``, ``min_speed_bps``,
    ``deadline_s``, ``retries``, ...) for the fetcher built here when none is given.

    ``out`` (and ``manifest``) may be store URLs (``s3://bucket/panda``): sources are fetched and cut in a
    local working folder (``scratch``, kept for a resumable rerun; default a temporary folder, emptied as
    each source is done), each source's files (``videos/...``, ``clips/...``) are uploaded to ``out`` as soon
    as its rows are cut (skipped when the store already holds them at the same size), and the manifest is
    written to ``out`` last. Rows name the same relative paths as a local run; ``source_url`` keeps the URL.
    """
    if cut not in CUT_MODES:
        raise MetadataError(f"--cut {cut!r} is not one of {', '.join(CUT_MODES)}")
    if concurrency < 1:
        raise MetadataError(f"--concurrency must be at least 1, got {concurrency}")
    from soraprep.storage import is_remote

    remote_manifest = is_remote(str(manifest))
    try:
        if remote_manifest:
            from soraprep.manifest_store import read_rows

            rows = read_rows(manifest, storage_options)
        else:
            manifest = Path(manifest)
            rows = read_manifest(manifest)
    except ValueError as exc:  # ManifestError, StorageError
        raise MetadataError(str(exc)) from None
    manifest_dir = Path.cwd() if remote_manifest else manifest.resolve().parent
    if is_remote(str(out)):
        import tempfile

        from soraprep.storage import Store

        store = Store(out, storage_options)
        if scratch is not None:
            return _download(rows, manifest, manifest_dir, Path(scratch), concurrency, rate_limits, cut, fetcher,
                             fetch_options, _Uploader(store, Path(scratch), keep=True))
        with tempfile.TemporaryDirectory(prefix="soraprep-download-") as tmp:
            return _download(rows, manifest, manifest_dir, Path(tmp), concurrency, rate_limits, cut, fetcher,
                             fetch_options, _Uploader(store, Path(tmp), keep=False))
    return _download(rows, manifest, manifest_dir, Path(out), concurrency, rate_limits, cut, fetcher, fetch_options,
                     None)


class _Uploader:
    """Copies the files a finished source's rows name from the working folder to the store OUT."""

    def __init__(self, store, work: Path, keep: bool) -> None:
        self.store, self.work, self.keep = store, work, keep
        self.on_store = {**store.list("videos"), **store.list("clips")}   # one listing each

    def __call__(self, rows: list[dict[str, Any]]) -> None:
        work = self.work.resolve()
        for rel in sorted({r.get(c) for r in rows for c in ("path", "source") if isinstance(r.get(c), str)}):
            local = work / rel
            if os.path.isabs(rel) or "://" in rel or not local.is_file():
                continue  # a local source used in place, or nothing was written
            if self.on_store.get(rel) != local.stat().st_size:
                self.store.put_file(local, rel)
                self.on_store[rel] = local.stat().st_size
        if not self.keep:  # a temporary working folder holds one source's files at a time per worker
            for rel in {r.get(c) for r in rows for c in ("path", "source") if isinstance(r.get(c), str)}:
                if not os.path.isabs(rel) and "://" not in rel:
                    (work / rel).unlink(missing_ok=True)

    @property
    def output(self) -> str:
        return self.store.url(MANIFEST_NAME)


def _download(rows, manifest, manifest_dir: Path, out: Path, concurrency, rate_limits, cut, fetcher, fetch_options,
              upload: _Uploader | None) -> DownloadReport:
    out.mkdir(parents=True, exist_ok=True)
    fetcher = fetcher or HttpFetcher(limiter=RateLimiter(rate_limits), **(fetch_options or {}))
    report, lock = DownloadReport(rows=len(rows)), threading.Lock()
    by_source: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    results: dict[int, dict[str, Any]] = {}
    claimed: dict[str, tuple[Any, Any, Any]] = {}  # clip_id -> (source, start_s, end_s) of its first row
    for i, row in enumerate(rows):
        upstream = bool(row.get("error")) and isinstance(row["error"], dict)
        problem = None if upstream else _row_problem(row, claimed)
        if upstream:
            results[i] = row  # failed upstream: carried through unchanged
        elif problem:
            results[i] = _fail(_storable_row(row), *problem)
        else:
            by_source[str(row["source"])].append((i, row))
    report.sources = len(by_source)
    jobs = [(src, items, _Job(src, [r for _, r in items], out=out, manifest_dir=manifest_dir,
                              cut=cut, fetcher=fetcher, report=report, lock=lock))
            for src, items in by_source.items()]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [(items, pool.submit(job.run)) for _, items, job in jobs]
        for items, fut in futures:
            done_rows = fut.result()
            if upload is not None:
                upload(done_rows)
            for (i, _), done_row in zip(items, done_rows, strict=True):
                results[i] = done_row
    final = [results[i] for i in range(len(rows))]
    for r in final:
        if r.get("error"):
            if r["error"].get("stage") == "download":
                report.errors[r["error"]["kind"]] += 1
            else:
                report.upstream_errors += 1
    meta = {"soraprep.download": json.dumps({"manifest": str(manifest), "cut": cut})}
    if upload is None:
        report.output = str(write_manifest(out / MANIFEST_NAME, final, metadata=meta))
    else:
        from soraprep.manifest_store import write_rows

        report.output = write_rows(upload.output, final, metadata=meta, storage_options=upload.store.storage_options)
    return report
