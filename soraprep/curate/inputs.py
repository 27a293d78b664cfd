"""Inputs to curation: video files, folders (recursive), or manifests whose rows name sources and spans.

Each input becomes one *work unit* (one source video, or one span of it), with a deterministic key so a
rerun finds what an interrupted run already committed. Rows of an input manifest keep their extra
columns (dataset, captions, published scores...) on every clip cut from them.

Everything an input names ends in a row, never in an abort or a hang. In a folder, every entry with a
video extension that is not a regular file becomes an error row, found by ``stat`` alone (a FIFO is
never opened): a FIFO, socket or device (``not_a_regular_file``), a broken link (``not_found``), a
``symlink_loop``, a folder named ``x.mp4`` (``is_a_directory``; its contents are scanned too), a folder
that cannot be listed (``unreadable``). File names that are not valid UTF-8 are curated like any other
(see :mod:`soraprep.manifest` for how they are stored). Curation reads local files and object
stores: an fsspec store URL (``s3://bucket/videos/``, ``gs://...``, ``memory://...``; see
:func:`store_url`) is listed once (:meth:`Store.list`) and gives one unit per object with a video
extension, sorted by key, ids and keys made from the URL as a folder's are made from the path; a store URL
ending in ``.parquet``/``.jsonl`` is a manifest whose relative sources are resolved against its URL. The
worker stages each remote source to local scratch (runners/sources.py). Any other URL or FFmpeg protocol
(``http:``, ``file:``, ``concat:``, ``pipe:``, ``data:``, ``subfile,...:``) is an ``unsupported_source``
error row (``soraprep download`` fetches http(s) and YouTube sources first). Manifest rows are checked before any work: a ``source`` that is not text
(``bad_source``), a span that is not finite, negative or inverted (``bad_span``), an id that is not
text or absurdly long (``bad_id``), a ``clip_id`` already used by another source or span
(``duplicate_clip_id``: a later row never shares the first row's clip files) become error rows.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from soraprep.manifest import cell_problem, read_manifest, resolve_path, row_problem
from soraprep.stages import error_dict
from soraprep.storage import StorageError, Store, is_remote, join, local_copy, split_url, url_scheme
from soraprep.storage.files import TMP_PREFIX
from soraprep.video.io import not_a_file, video_id_for

VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts",
                    ".flv", ".wmv", ".3gp", ".ogv", ".vob", ".mxf", ".y4m", ".gif", ".nut",
                    ".h264", ".264", ".h265", ".265", ".hevc", ".m2v"}  # raw elementary streams too
MANIFEST_EXTENSIONS = {".parquet", ".jsonl"}
# columns an input manifest row may carry that curation recomputes for each clip
_RECOMPUTED = {"path", "num_frames", "height", "width", "aspect_ratio", "resolution", "fps", "fps_rational",
               "start_frame", "end_frame", "duration_s", "clip_index", "codec", "cut_mode", "keep",
               "filter_reason", "bucket", "bucket_height", "bucket_width", "bucket_frames", "provenance"}


# a URL or an FFmpeg protocol prefix ("http:", "concat:", "pipe:", "subfile,,start,0,...:"); one letter is
# a Windows drive
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.,-]+:")


#: URL schemes of sources curate never reads itself, although fsspec could: web and file-transfer servers
#: (also FFmpeg protocols). ``soraprep download`` fetches them first.
WEB_SCHEMES = {"http", "https", "ftp", "ftps", "sftp", "ssh", "smb", "webdav", "data"}


class InputError(ValueError):
    """An input argument that cannot be used (a usage error: exit code 2)."""


def store_url(text: Any) -> bool:
    """Whether ``text`` names an object store curate reads through fsspec (``s3://``, ``gs://``,
    ``az://``, ``memory://`` ...): a ``scheme://`` URL of a filesystem fsspec knows, other than the web and
    file-transfer servers (:data:`WEB_SCHEMES`: ``soraprep download``). FFmpeg protocols (``concat:``, ``pipe:``, ``rtmp://`` ...) are
    not fsspec filesystems and never reach FFmpeg as names: sources are staged to local files."""
    if not isinstance(text, str) or not is_remote(text) or url_scheme(text) in WEB_SCHEMES:
        return False
    try:
        from fsspec.registry import known_implementations, registry
    except ImportError:  # pragma: no cover - fsspec is a core dependency
        return False
    scheme = url_scheme(text)
    return scheme in known_implementations or scheme in registry


def _video_id(source: str) -> str:
    """A source's readable, stable id: the file's stem plus a short hash of its absolute path, or of its
    URL for a store object (the same on every machine)."""
    if not is_remote(source):
        return video_id_for(source)
    stem = source.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:48] or "video"
    return f"{stem}-{hashlib.sha1(source.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def unit_key(source: str, start_s: float | None, end_s: float | None, base_id: str) -> str:
    raw = f"{source}\x00{start_s}\x00{end_s}\x00{base_id}"
    return hashlib.sha1(raw.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _error(stage_kind: str, message: str) -> dict[str, str]:
    return error_dict("input", stage_kind, message)


def _file_unit(path: Path, problem: tuple[str, str] | None = None) -> dict[str, Any]:
    src = os.path.abspath(path)  # not resolve(): a symlink stays the name the user gave
    vid = video_id_for(path)
    unit = {"source": src, "video_id": vid, "_base_id": vid, "_key": unit_key(src, None, None, vid)}
    if problem:
        unit["error"] = _error(*problem)
    return unit


def _url_unit(url: str, problem: tuple[str, str] | None = None) -> dict[str, Any]:
    vid = _video_id(url)
    unit = {"source": url, "video_id": vid, "_base_id": vid, "_key": unit_key(url, None, None, vid)}
    if problem:
        unit["error"] = _error(*problem)
    return unit


def _store_units(url: str, storage_options: dict[str, Any], skip: set[str]) -> list[dict[str, Any]]:
    """A store URL that is not a manifest: one object (a video) or a prefix listed once (every object with
    a video extension, sorted by key). Runs (prefixes holding ``.soraprep/``) and OUT are skipped as in a
    folder; nothing there is a ``not_found`` row, a store that cannot be listed an InputError."""
    store = Store(url, storage_options)
    root = store.root
    if root in skip:
        raise InputError(f"{url} is the output (OUT) itself; give the prefix of the source videos")
    if not url.endswith("/") and root.count("/") > 2:  # scheme://bucket/key: maybe one object
        parent, name = split_url(root, storage_options)
        try:
            if parent.isfile(name):
                return [_url_unit(root)]
        except (OSError, ValueError):  # e.g. a bucket name that cannot exist: the listing says why
            pass
    try:
        keys = store.list()
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - credentials, a missing bucket, the network: a usage error
        raise InputError(f"cannot list {url}: {type(exc).__name__}: {exc}") from None
    if not keys:
        return [_url_unit(root, ("not_found", f"no such object or prefix: {root}"))]
    if any(k.startswith(".soraprep/") for k in keys):
        raise InputError(f"{url} holds a soraprep run ({store.url('.soraprep')}); to curate its clips again "
                         f"give its manifest.parquet (or its clips/ prefix) instead")
    runs = sorted({k.rsplit("/.soraprep/", 1)[0] + "/" for k in keys if "/.soraprep/" in k})
    runs += [s[len(root) + 1:].rstrip("/") + "/" for s in skip if s.startswith(root + "/")]
    units = []
    for key in keys:
        name = key.rsplit("/", 1)[-1]
        if any(key.startswith(r) for r in runs) or name.startswith((".partial-", TMP_PREFIX)):
            continue
        if Path(name).suffix.lower() in VIDEO_EXTENSIONS:
            units.append(_url_unit(store.url(key)))
    return units


def _folder_units(root: Path, skip: set[str]) -> list[dict[str, Any]]:
    """Every entry with a video extension under ``root`` (recursive; folder symlinks are not followed),
    minus skipped folders (this run's OUT, other runs: see :func:`skipped_folder`)."""
    check_input_folder(root, skip)
    found: list[tuple[Path, dict[str, Any]]] = []
    todo = [root]
    while todo:
        folder = todo.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:  # an unreadable sub-folder: a row says so, the rest goes on
            if folder == root:
                raise InputError(f"cannot read folder {root}: {exc.strerror or exc}") from None
            found.append((folder, _file_unit(folder, ("unreadable", f"cannot list folder {folder}: "
                                                                     f"{exc.strerror or exc}"))))
            continue
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                if skipped_folder(path, skip):
                    continue
                todo.append(path)
            if entry.name.startswith((".partial-", TMP_PREFIX)) or path.suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            found.append((path, _file_unit(path, not_a_file(path))))
    return [unit for _, unit in sorted(found, key=lambda pu: pu[0])]


def _resolve(manifest: str | Path, src: str) -> str:
    """A row's source as usable here: relative names are resolved against the manifest's folder or URL."""
    if is_remote(str(manifest)) and "://" not in src and not os.path.isabs(src):
        return join(str(manifest).rsplit("/", 1)[0], src)
    return resolve_path(manifest, src)


def _manifest_units(path: Path, url: str | None = None) -> list[dict[str, Any]]:
    """Units of a manifest file; ``url``: where it was staged from (relative sources resolve against it)."""
    rows = read_manifest(path)
    path = url or path
    if rows and not any(("source" in r or "path" in r or r.get("error")) for r in rows):
        raise InputError(f"{path}: no 'source' (or 'path') column naming the videos; is this a soraprep manifest?")
    units = []
    for i, row in enumerate(rows):
        src = row.get("source") or row.get("path")
        # failed upstream (e.g. at ingest): passes through, accounted for
        upstream = bool(row.get("error")) and isinstance(row["error"], dict)
        problem = None if upstream else row_problem(row, src, skip=_RECOMPUTED)
        if not isinstance(src, str):
            src = None
        elif not upstream and not problem and not store_url(src) and not os.path.lexists(_resolve(path, src)) \
                and ("://" in src or _SCHEME.match(src)):
            problem = ("unsupported_source", f"{src[:200]}: curate reads local files and object stores only; "
                                             "fetch http(s) and YouTube sources with `soraprep download` first")
        elif "://" not in src:
            src = _resolve(path, src)
        if not src and not upstream and not problem:
            problem = ("no_source", f"{path}: row {i} names no source video")
        ok_ids = not problem or problem[0] != "bad_id"
        vid = str(row["video_id"]) if row.get("video_id") is not None and ok_ids else (
            _video_id(src) if src else f"row{i}")
        base = str(row["clip_id"]) if row.get("clip_id") is not None and ok_ids else vid
        start, end = (None, None) if problem else (row.get("start_s"), row.get("end_s"))
        unit = {k: v for k, v in row.items() if k not in _RECOMPUTED and v is not None}
        if problem:  # the offending values are not carried (they may not even be storable)
            for col in ("source", "clip_id", "video_id", "start_s", "end_s", *[k for k in list(unit)
                                                                             if cell_problem(k, unit[k])]):
                unit.pop(col, None)
            kind, message = problem
            unit["error"] = _error(kind, message if kind == "no_source" else f"{path}: row {i}: {message}")
        unit.update(source=src, video_id=vid, _base_id=base, _explicit_id=row.get("clip_id") is not None,
                    _key=unit_key(src or f"{path}#{i}", start, end, base),
                    _span_s=(start, end) if start is not None or end is not None else None)
        if unit.get("error"):
            unit["clip_id"] = base
        units.append(unit)
    return units


def skipped_folder(folder: Path, skip: set[str]) -> bool:
    """A folder a folder scan does not enter: this run's OUT (in ``skip``, resolved paths), or any folder
    holding a soraprep run (a ``.soraprep/`` marker: its clips are outputs, not inputs). So an OUT inside
    the input folder is never re-ingested."""
    return (folder.name == ".soraprep" or (folder / ".soraprep").is_dir()
            or folder.resolve().as_posix() in skip)


def check_input_folder(folder: Path, skip: set[str]) -> None:
    """A folder named as an input must not be OUT or another run's OUT (a usage error)."""
    if folder.resolve().as_posix() in skip:
        raise InputError(f"{folder} is the output folder itself; give the folder of the source videos")
    if (folder / ".soraprep").is_dir():
        raise InputError(f"{folder} holds a soraprep run ({folder / '.soraprep'}); to curate its clips again "
                         f"give its manifest.parquet (or its clips/ folder) instead")


def _store_input(url: str, storage_options: dict[str, Any], skip: set[str]) -> list[dict[str, Any]]:
    """A store URL argument: a manifest (by extension) or objects (:func:`_store_units`)."""
    if Path(url.rstrip("/")).suffix.lower() not in MANIFEST_EXTENSIONS:
        return _store_units(url, storage_options, skip)
    try:
        with local_copy(url, storage_options) as local:
            units = _manifest_units(local, url=url.rstrip("/"))
        for u in units:  # FILE:LINE messages of bad lines name the URL, not the staged copy
            err = u.get("error")
            if isinstance(err, dict) and str(local) in str(err.get("message")):
                err["message"] = str(err["message"]).replace(str(local), url.rstrip("/"))
        return units
    except FileNotFoundError:
        return [_url_unit(url.rstrip("/"), ("not_found", f"no such manifest object: {url}"))]
    except (StorageError, InputError):
        raise
    except OSError as exc:
        raise InputError(f"cannot read the manifest {url}: {type(exc).__name__}: {exc}") from None


def collect_units(inputs: list[str], *, skip_dirs: tuple[str | os.PathLike, ...] = (),
                  storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Work units for the given inputs, in a stable order; raises InputError for unusable arguments.

    Folders are searched recursively, except ``skip_dirs`` (the run's OUT, a path or store URL) and any
    folder holding a soraprep run. Store URLs are read with ``storage_options`` (plus the standard
    environment: ``AWS_ENDPOINT_URL`` ...)."""
    if not inputs:
        raise InputError("give at least one video file, folder or manifest (.parquet/.jsonl)")
    skip = {str(d).rstrip("/") if is_remote(d) else Path(d).resolve().as_posix() for d in skip_dirs}
    units: list[dict[str, Any]] = []
    for arg in inputs:
        p = Path(arg)
        if store_url(arg):
            units += _store_input(arg, storage_options or {}, skip)
        elif p.is_dir():
            units += _folder_units(p, skip)
        elif p.suffix.lower() in MANIFEST_EXTENSIONS and p.is_file():
            units += _manifest_units(p)
        elif p.exists() or p.is_symlink():
            # any file named explicitly is tried: bad ones become error rows (a FIFO is never opened)
            units.append(_file_unit(p, not_a_file(p)))
        elif "://" in arg or _SCHEME.match(arg):
            vid = video_id_for(arg)
            units.append({"source": arg, "video_id": vid, "_base_id": vid, "_key": unit_key(arg, None, None, vid),
                          "error": _error("unsupported_source", f"{arg[:200]}: curate reads local files and "
                                          "object stores (s3://, gs:// ...) only; fetch http(s) and YouTube "
                                          "sources with `soraprep download` first")})
        else:
            # a missing path named explicitly: record it (a row with an error), do not abort the run
            vid = video_id_for(arg)
            units.append({"source": os.path.abspath(arg), "video_id": vid, "_base_id": vid,
                          "_key": unit_key(os.path.abspath(arg), None, None, vid)})
    seen: set[str] = set()
    unique = []
    for u in units:  # the same video named twice is curated once
        if u["_key"] not in seen:
            seen.add(u["_key"])
            unique.append(u)
    return _distinct_ids(unique)


def _distinct_ids(units: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """No two units share a clip id (clip files and thumbnails are named after it).

    A repeated explicit ``clip_id`` (another source or span) is an error row: guessing which row the id
    belongs to could pair a caption with another video's footage. Rows without one are told apart by a
    short hash of their source and span.
    """
    owner: dict[str, dict[str, Any]] = {}
    repeats: dict[str, int] = {}
    for u in units:
        base = u["_base_id"]
        if u.get("error"):
            continue
        if base not in owner:
            owner[base] = u
            continue
        first = owner[base]
        if u.pop("_explicit_id", False):
            repeats[base] = repeats.get(base, 0) + 1
            u["error"] = _error("duplicate_clip_id", f"clip_id {base!r} is also used by another row "
                                f"({first['source']!r}, span {first.get('_span_s')}); clip ids must be unique")
            u["clip_id"] = f"{base}-duplicate{repeats[base]}"
            continue
        span = u.get("_span_s")
        digest = hashlib.sha1(f"{u['source']}\x00{span}".encode("utf-8", "surrogateescape")).hexdigest()[:8]
        u["_base_id"] = f"{base}-{digest}"
        owner.setdefault(u["_base_id"], u)
    for u in units:
        u.pop("_explicit_id", None)
    return units
