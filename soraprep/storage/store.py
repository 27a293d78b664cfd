"""Where a run reads and writes: a local folder or an object-store prefix, behind one small interface.

``Store(root)`` is the root of a run (``OUT``) or of an input listing. ``root`` is a local path or any
fsspec URL (``s3://bucket/runs/r1``, ``gs://...``, ``memory://...``); keys are ``/``-separated paths
relative to it. Everything soraprep writes goes through :meth:`Store.write_bytes` / :meth:`Store.put_file`,
which are atomic on both kinds:

- local: a temp file beside the target (``.soraprep-tmp-<pid>-...``), fsynced, then ``os.replace``
  (:func:`soraprep.storage.files.atomic_write`);
- object store: one PUT of the whole object. An object store has no rename, but a PUT either lands whole
  or not at all, and readers never see a half-written object. Commits therefore write the object that
  *marks* a unit done (its rows) last, after every file it names (see curate/runners).

Credentials and endpoints come the standard way for each filesystem (for S3: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, ``~/.aws/config``; fsspec's own config
files), and ``storage_options`` (``--storage-options '{"endpoint_url": ...}'``) is passed to the
filesystem as keyword arguments on top. A Store pickles as its URL and options (Ray actors, worker
processes rebuild the filesystem lazily); credentials in ``storage_options`` travel with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from soraprep.storage.files import atomic_write

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
#: URL schemes soraprep treats as local paths.
LOCAL_SCHEMES = ("file", "local")


class StorageError(ValueError):
    """A store URL or its options are unusable (a usage error: exit code 2 with the fix)."""


def url_scheme(text: str | os.PathLike) -> str | None:
    """``"s3"`` for ``s3://b/k``; None for a plain path (a Windows drive letter is not a scheme)."""
    m = _URL.match(str(text))
    return m.group(1).lower() if m else None


def is_remote(text: str | os.PathLike) -> bool:
    """True for an fsspec URL that is not a local file (``s3://``, ``gs://``, ``memory://`` ...)."""
    scheme = url_scheme(text)
    return scheme is not None and scheme not in LOCAL_SCHEMES


def parse_storage_options(text: str | dict | None) -> dict[str, Any]:
    """``--storage-options``: a JSON object (or a path to a JSON file) -> keyword arguments for fsspec."""
    if text is None or text == "":
        return {}
    if isinstance(text, dict):
        return dict(text)
    raw = str(text).strip()
    if not raw.startswith("{") and Path(raw).is_file():
        raw = Path(raw).read_text()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise StorageError(f"--storage-options must be a JSON object, e.g. "
                           f"'{{\"endpoint_url\": \"http://127.0.0.1:9000\"}}' ({exc})") from None
    if not isinstance(data, dict):
        raise StorageError("--storage-options must be a JSON object (key: value pairs for the filesystem), "
                           f"got {type(data).__name__}")
    return data


def filesystem(url: str, storage_options: dict[str, Any] | None = None):
    """The fsspec filesystem for ``url`` and the path inside it, with a fix-it message when it is missing."""
    try:
        import fsspec
        from fsspec.core import url_to_fs
    except ImportError:  # pragma: no cover - depends on the install
        raise StorageError(f"{url}: object storage needs fsspec: pip install 'soraprep[storage]'") from None
    del fsspec
    try:
        fs, path = url_to_fs(url, **(storage_options or {}))
    except (ImportError, ValueError) as exc:
        scheme = url_scheme(url)
        extra = {"s3": "s3fs (pip install 'soraprep[storage]')", "gs": "gcsfs (pip install 'soraprep[gcs]')",
                 "gcs": "gcsfs (pip install 'soraprep[gcs]')"}.get(scheme or "", f"an fsspec driver for {scheme}://")
        raise StorageError(f"{url}: cannot open this store: {exc}. It needs {extra}") from None
    except TypeError as exc:
        raise StorageError(f"{url}: --storage-options not accepted by the filesystem: {exc}") from None
    return fs, path


def join(root: str, *parts: str) -> str:
    """``root`` joined with ``/``-separated ``parts`` (URLs and local paths alike)."""
    key = "/".join(p.strip("/") for p in parts if p not in ("", None))
    if not key:
        return str(root)
    return str(root).rstrip("/") + "/" + key if is_remote(root) else str(Path(root, key))


def _check_key(key: str) -> str:
    key = str(key).replace(os.sep, "/").strip("/")
    if any(p in ("..", "") for p in key.split("/")) and key:
        raise ValueError(f"store key {key!r} leaves the store root or is empty")
    return key


class Store:
    """A root (local folder or object-store prefix) and the operations a run needs, all atomic writes."""

    def __init__(self, root: str | os.PathLike, storage_options: dict[str, Any] | None = None):
        self.remote = is_remote(root)
        if self.remote:
            self.root = str(root).rstrip("/")
        else:
            text = str(root)
            scheme = url_scheme(text)
            if scheme in LOCAL_SCHEMES:
                text = text.split("://", 1)[1]
            self.root = str(Path(text))
        self.storage_options = dict(storage_options or {})
        self._fs = None
        self._path = None

    # -- pickling: the URL and options only; the filesystem is rebuilt where it is used
    def __getstate__(self):
        return {"root": self.root, "remote": self.remote, "storage_options": self.storage_options}

    def __setstate__(self, state):
        self.__dict__.update(state, _fs=None, _path=None)

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Store) and (self.root, self.storage_options) == (other.root, other.storage_options)

    def __hash__(self) -> int:
        return hash(self.root)

    @property
    def fs(self):
        """The fsspec filesystem (local stores get fsspec's LocalFileSystem, for pyarrow's ``filesystem=``)."""
        if self._fs is None:
            if self.remote:
                self._fs, self._path = filesystem(self.root, self.storage_options)
            else:
                from fsspec.implementations.local import LocalFileSystem

                self._fs, self._path = LocalFileSystem(), str(Path(self.root).resolve())
        return self._fs

    def _full(self, key: str) -> str:
        """The path of ``key`` inside :attr:`fs` (no scheme)."""
        self.fs  # noqa: B018 - resolves _path
        key = _check_key(key)
        return f"{self._path.rstrip('/')}/{key}" if key else self._path

    def _fresh(self, key: str | None = None) -> str:
        """:meth:`_full` of ``key``, with the filesystem's cached listings dropped first: other processes
        (workers, a killed run) write the store, so an answer from fsspec's listings cache can be stale
        (a commit that exists reported missing). ``None``: drop every cached listing."""
        if key is None:
            self.fs.invalidate_cache()
            return self._full("")
        full = self._full(key)
        self.fs.invalidate_cache(full)
        return full

    def url(self, key: str = "") -> str:
        """The URL (remote) or path (local) of ``key``, as users and manifests name it."""
        return join(self.root, _check_key(key))

    def local_path(self, key: str = "") -> Path:
        """The local path of ``key``; only for local stores."""
        if self.remote:
            raise ValueError(f"{self.root} is not a local folder")
        return Path(self.root, _check_key(key))

    def sub(self, key: str) -> Store:
        """The store rooted at ``key`` inside this one."""
        return Store(self.url(key), self.storage_options)

    # -- reading
    def exists(self, key: str) -> bool:
        if not self.remote:
            return self.local_path(key).exists()
        return self.fs.exists(self._fresh(key))

    def isfile(self, key: str) -> bool:
        if not self.remote:
            return self.local_path(key).is_file()
        return self.fs.isfile(self._fresh(key))

    def size(self, key: str) -> int:
        if not self.remote:
            return self.local_path(key).stat().st_size
        return int(self.fs.size(self._fresh(key)))

    def list(self, prefix: str = "") -> dict[str, int]:
        """Every file under ``prefix`` (recursively): ``{key relative to the root: size}``, sorted.

        One listing call on an object store (no per-object requests), so checking which of a million
        units are committed costs a paged LIST, not a million HEADs."""
        prefix = _check_key(prefix)
        if not self.remote:
            base = self.local_path(prefix)
            if not base.is_dir():
                return {}
            found = {}
            for dirpath, _dirs, files in os.walk(base):
                for f in files:
                    p = Path(dirpath, f)
                    try:
                        found[p.relative_to(self.root).as_posix()] = p.stat().st_size
                    except OSError:  # vanished meanwhile
                        continue
            return dict(sorted(found.items()))
        self._fresh(None)
        full = self._full(prefix)
        try:
            infos = self.fs.find(full, detail=True)
        except FileNotFoundError:
            return {}
        root = self._full("").rstrip("/") + "/"
        out = {}
        for name, info in infos.items():
            if info.get("type") == "directory":
                continue
            name = name if name.startswith(root) else "/" + name if ("/" + name).startswith(root) else name
            out[name[len(root):] if name.startswith(root) else name] = int(info.get("size") or 0)
        return dict(sorted(out.items()))

    def read_bytes(self, key: str) -> bytes:
        if not self.remote:
            return self.local_path(key).read_bytes()
        return self.fs.cat_file(self._fresh(key))

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode("utf-8")

    def open(self, key: str, mode: str = "rb") -> IO:
        """A file object (reading; writing goes through the atomic methods below)."""
        if "r" not in mode:
            raise ValueError("Store.open is for reading: write with write_bytes / put_file (atomic)")
        if not self.remote:
            return open(self.local_path(key), mode)  # noqa: SIM115 - the caller closes it
        return self.fs.open(self._fresh(key), mode)

    def get_file(self, key: str, local: str | os.PathLike) -> Path:
        """Copy ``key`` to the local file ``local`` atomically (a temp name, then rename)."""
        if self.remote:
            return atomic_write(local, lambda tmp: self.fs.get_file(self._fresh(key), str(tmp)), fsync=False)
        return atomic_write(local, lambda tmp: shutil.copyfile(self.local_path(key), tmp), fsync=False)

    # -- writing (atomic)
    def write_bytes(self, key: str, data: bytes) -> str:
        """Write ``data`` as ``key`` atomically; returns its URL."""
        if not self.remote:
            atomic_write(self.local_path(key), data)
        else:
            self.fs.pipe_file(self._full(key), data)  # one PUT: lands whole or not at all
        return self.url(key)

    def write_text(self, key: str, text: str) -> str:
        return self.write_bytes(key, text.encode("utf-8"))

    def put_file(self, local: str | os.PathLike, key: str) -> str:
        """Copy the local file ``local`` to ``key`` atomically; returns its URL."""
        if not self.remote:
            path = self.local_path(key)
            if Path(local).resolve() == path.resolve():
                return str(path)
            atomic_write(path, lambda tmp: shutil.copyfile(local, tmp), fsync=False)
        else:  # s3fs uploads large files in parts; the object appears only when the upload completes
            self.fs.put_file(str(local), self._full(key))
        return self.url(key)

    def copy(self, src: str, dst: str) -> None:
        """Server-side copy (object stores) or an atomic local copy."""
        if not self.remote:
            self.put_file(self.local_path(src), dst)
        else:
            self.fs.copy(self._full(src), self._full(dst))

    def delete(self, key: str) -> None:
        """Remove ``key`` if it exists."""
        if not self.remote:
            self.local_path(key).unlink(missing_ok=True)
            return
        try:
            self.fs.rm_file(self._full(key))
        except FileNotFoundError:
            pass

    def delete_prefix(self, prefix: str) -> None:
        """Remove every file under ``prefix``."""
        prefix = _check_key(prefix)
        if not prefix:
            raise ValueError("refusing to delete a whole store")
        if not self.remote:
            shutil.rmtree(self.local_path(prefix), ignore_errors=True)
            return
        keys = [self._full(k) for k in self.list(prefix)]
        if keys:
            self.fs.rm(keys)


def key_of(path: str) -> str:
    """A ``/``-separated relative key from a manifest's path cell (``clips/a.mp4``)."""
    return PurePosixPath(str(path).replace(os.sep, "/")).as_posix().lstrip("/")


def split_url(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Store, str]:
    """``s3://b/runs/r1/clips/a.mp4`` -> (Store of ``s3://b/runs/r1/clips``, ``"a.mp4"``)."""
    text = str(url).rstrip("/")
    if is_remote(text):
        parent, _, name = text.rpartition("/")
        if "://" not in parent or parent.endswith(":/"):
            raise StorageError(f"{url}: name an object inside a bucket (scheme://bucket/key)")
        return Store(parent, storage_options), name
    p = Path(text)
    return Store(p.parent, storage_options), p.name


@contextlib.contextmanager
def local_copy(url: str | os.PathLike, storage_options: dict[str, Any] | None = None,
               scratch: str | os.PathLike | None = None) -> Iterator[Path]:
    """A local file holding ``url`` for the duration of the block.

    Local paths are yielded as they are (no copy). A remote object is downloaded once into ``scratch``
    (default: a fresh temp folder), atomically, and removed afterwards: decoders then seek on local disk
    instead of issuing a ranged GET per seek (BENCHMARKS.md measures the two)."""
    if not is_remote(url):
        yield Path(str(url).split("://", 1)[1] if url_scheme(url) in LOCAL_SCHEMES else url)
        return
    store, name = split_url(str(url), storage_options)
    with tempfile.TemporaryDirectory(prefix="soraprep-stage-", dir=scratch) as tmp:
        local = Path(tmp) / (name or "object")
        store.get_file(name, local)
        yield local
