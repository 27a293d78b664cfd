"""Local files soraprep writes: one temp namespace, one atomic write, one safe file name, one confinement check.

Every writer in soraprep (manifests, clips, thumbnails, unit commits, shards, latents, checkpoints, the
downloader's markers) goes through these helpers, so that

- a reader never sees half a file: the bytes go to :func:`temp_path` beside the target, are fsynced, then
  renamed onto it (:func:`publish`; ``os.replace`` is atomic on one file system);
- a killed run leaves only names with :data:`TMP_PREFIX`, which a later run may delete
  (``curate.lock.clean_partials``) without ever touching a user's own ``*.tmp`` or ``.partial-*`` files;
- a file name made from an id (a dataset's ``clip_id``, a video's stem) is portable and cannot climb out
  of the output folder (:func:`safe_name`), and a path built from several parts is checked to stay under
  its root whatever symlinks are on the way (:func:`confined`).

Object stores have no rename: :class:`soraprep.storage.store.Store` writes them with one PUT instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

#: Prefix of every temporary file soraprep writes. A run's start-up clean-up deletes only names with this
#: prefix, and only in the folders soraprep itself writes in OUT: never a user's ``.partial-*`` or ``*.tmp``.
TMP_PREFIX = ".soraprep-tmp-"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary name under which ``path`` is written before an atomic rename onto it.

    ``.soraprep-tmp-<pid>-<name>``; a thread other than the main one adds its id
    (``.soraprep-tmp-<pid>-t<id>-<name>``), so two threads writing one path never share a temp file.
    """
    path = Path(path)
    thread = "" if threading.current_thread() is threading.main_thread() else f"t{threading.get_ident()}-"
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{thread}{path.name}")


def publish(tmp: str | os.PathLike, path: str | os.PathLike, *, fsync: bool = True) -> None:
    """Rename the finished temp file ``tmp`` onto ``path`` (after an fsync, unless told otherwise)."""
    if fsync:
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """``with atomic_path(p) as tmp:`` write ``tmp`` however you like; on leaving the block it is published
    onto ``p``; if the block raises, ``p`` is untouched and the temp file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        publish(tmp, path, fsync=fsync)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[Path], object], *,
                 fsync: bool = True) -> Path:
    """Write ``path`` atomically: ``data`` is bytes, text (UTF-8), or a function that writes the temp path
    it is given (``lambda tmp: torch.save(obj, tmp)``). Creates the parent folder. Returns ``path``."""
    path = Path(path)
    with atomic_path(path, fsync=fsync) as tmp:
        if callable(data):
            data(tmp)
        elif isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return path


def safe_name(name: str, *, max_len: int = 80) -> str:
    """A flat, portable, deterministic file name for any id: ``'../a b/ç'`` -> ``'a_b_c-0361c8eb'``.

    A name that is already safe (only ``[a-z0-9._-]``, no leading or trailing ``.``/``_``/``-``, at most
    ``max_len`` characters) is kept as it is, so ordinary ids give readable names. Any other name is
    transliterated to ASCII, cleaned and shortened, and gets 8 hex digits of a hash of the original, so
    two ids that clean to the same text never share a file (``'..'`` gives the hash alone). Upper-case
    letters count as unsafe: case-sensitive ids (YouTube's ``abcDEF`` vs ``ABCdef``) would otherwise share
    one file on a case-insensitive file system (macOS, Windows), so ``'Abc'`` -> ``'Abc-<hash>'``.
    """
    text = str(name)
    ascii_name = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    clean = _UNSAFE.sub("_", ascii_name).strip("._-")[:max_len].rstrip("._-")
    if clean == text and text == text.lower():
        return text
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{clean}-{digest}" if clean else digest


def confined(root: str | os.PathLike, *parts: str) -> Path:
    """``root / parts`` (``root`` resolved), refusing with ``ValueError`` a path that would land on ``root``
    itself or outside it (``..``, an absolute part, a symlink that leads out). Parts made from ids should
    go through :func:`safe_name` first."""
    base = Path(root).resolve()
    path = base.joinpath(*parts)
    if base not in path.resolve().parents:
        raise ValueError(f"refusing to write outside {base}: {path}")
    return path
