"""One run per OUT: a lock file, and a start-up clean-up that deletes only soraprep's own temp files.

Two runs writing one OUT would delete and overwrite each other's clips, so ``curate`` and
``rethreshold`` hold ``OUT/.soraprep/lock`` while they run. The lock is a small JSON file created
with ``O_EXCL`` (which works on NFS too) naming the pid, the host and the process start time. A second
run exits 2 with "OUT is in use by pid N on host H". A lock left behind by a run that died (``kill -9``,
a crash, a reboot) is detected on the same host (its pid is gone, or is now another process) and
taken over. A lock from another host cannot be checked from here: if that run is really gone, delete
``OUT/.soraprep/lock`` by hand.

On an object store (``s3://bucket/runs/r1``) the lock is the object ``OUT/.soraprep/lock`` with the same
content plus a random token, created with a conditional PUT (``If-None-Match: *``: S3 and S3-compatible
servers that implement conditional writes, moto included, refuse a second create) and read back: the run
whose token is in the object holds it. Where the store ignores the condition (older S3-compatible
servers; fsspec filesystems without an exclusive create fall back to exists-then-put), two runs starting
within the same few milliseconds could both see their own token on read-back only if the second PUT
landed between the first run's PUT and its read-back — a narrow race, not a guarantee. The lock is
released by deleting it (only by its holder). ``clean_partials`` is for local OUTs only.

    with out_lock(out):
        clean_partials(out)
        ...
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from soraprep.storage.files import TMP_PREFIX


class OutInUseError(RuntimeError):
    """OUT is held by another live run (a usage error: exit code 2)."""


def lock_path(out: Path) -> Path:
    return Path(out) / ".soraprep" / "lock"


def _start_ticks(pid: int) -> str | None:
    """The process start time (clock ticks since boot) from /proc: a pid reused later has another one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the "(comm)" field


def _alive(pid: int, ticks: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    if ticks is not None:
        now = _start_ticks(pid)
        if now is not None and now != ticks:
            return False  # the pid was reused by a process that started later
    return True


def _holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


LOCK_KEY = ".soraprep/lock"


@contextmanager
def out_lock(out: str | os.PathLike, storage_options: dict | None = None) -> Iterator[Path | str]:
    """Hold OUT's lock for the duration of the block; raise OutInUseError if a live run holds it.

    ``out``: a local folder, or a store URL (read with ``storage_options``): see the module docstring."""
    from soraprep.storage import Store, is_remote

    if is_remote(out):
        with _store_lock(Store(out, storage_options)) as url:
            yield url
    else:
        with _local_lock(out) as path:
            yield path


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "start_ticks": _start_ticks(os.getpid()),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _refusal(out, held: dict, where: str, me: dict) -> OutInUseError | None:
    """The error for a lock ``held`` by a live run (or by another host); None when it is stale."""
    if held.get("host") != me["host"]:
        return OutInUseError(
            f"OUT {out} is in use by pid {held.get('pid')} on host {held.get('host')} (since "
            f"{held.get('since')}); if that run is gone, delete {where} and rerun")
    if _alive(int(held.get("pid", -1)), held.get("start_ticks")):
        return OutInUseError(
            f"OUT {out} is in use by pid {held['pid']} on host {held['host']} (since {held.get('since')}); "
            f"wait for it to finish or stop it, or choose another --out")
    return None


def _read_held(store) -> dict | None:
    try:
        held = json.loads(store.read_bytes(LOCK_KEY))
    except (OSError, ValueError):  # absent, or garbage
        return None
    return held if isinstance(held, dict) else None


def _create(store, data: bytes) -> bool:
    """Create the lock object unless it exists; True when this call's content is what the store holds."""
    try:
        store.fs.pipe_file(store.url(LOCK_KEY), data, mode="create")  # If-None-Match: * on S3
    except FileExistsError:
        return False
    except TypeError:  # a filesystem without exclusive create: best effort
        if store.exists(LOCK_KEY):
            return False
        store.write_bytes(LOCK_KEY, data)
    except OSError as exc:  # some servers answer a failed precondition with 412 and no mapped error
        if "precondition" in str(exc).lower():
            return False
        raise
    try:
        return store.read_bytes(LOCK_KEY) == data  # read back: another run may have overwritten it
    except OSError:
        return False


@contextmanager
def _store_lock(store) -> Iterator[str]:
    import uuid

    me = dict(_me(), token=uuid.uuid4().hex)
    data = json.dumps(me).encode()
    where = store.url(LOCK_KEY)
    for _attempt in range(3):
        try:
            created = _create(store, data)
        except Exception as exc:  # noqa: BLE001 - endpoint, credentials, bucket: a usage error, said once
            from soraprep.storage import StorageError

            raise StorageError(f"cannot create the lock object {where}: {type(exc).__name__}: {exc}; check the "
                               "URL, the credentials and the endpoint (AWS_ENDPOINT_URL, --storage-options)") from None
        if created:
            break
        held = _read_held(store)
        if held is None:  # being written right now, or garbage
            time.sleep(0.2)
            held = _read_held(store)
        if held is not None:
            refusal = _refusal(store.root, held, where, me)
            if refusal is not None:
                raise refusal
        store.delete(LOCK_KEY)  # stale (its run is gone) or garbage: take it over
    else:
        raise OutInUseError(f"could not take the lock {where}: another run keeps taking it")
    try:
        yield where
    finally:
        held = _read_held(store)
        if held is not None and held.get("token") == me["token"]:
            store.delete(LOCK_KEY)


@contextmanager
def _local_lock(out: str | os.PathLike) -> Iterator[Path]:
    path = lock_path(Path(out))
    path.parent.mkdir(parents=True, exist_ok=True)
    me = _me()
    for _attempt in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = _holder(path)
            if held is None:  # half-written by a run that is starting right now, or garbage
                time.sleep(0.2)
                held = _holder(path)
            refusal = None if held is None else _refusal(out, held, str(path), me)
            if refusal is not None:
                raise refusal from None
            path.unlink(missing_ok=True)  # stale: its run is gone; take it over
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    else:
        raise OutInUseError(f"could not take the lock {path}: another run keeps taking it")
    try:
        yield path
    finally:
        held = _holder(path)
        if held is not None and held.get("pid") == me["pid"] and held.get("host") == me["host"]:
            path.unlink(missing_ok=True)


def clean_partials(out: str | os.PathLike, pid: int | None = None) -> list[Path]:
    """Delete the temp files a killed run left, and nothing else: only names with soraprep's prefix
    (``.soraprep-tmp-<pid>-``), only in the folders soraprep writes (OUT itself, and OUT/clips,
    OUT/thumbs, OUT/.soraprep with their subfolders). Call it while holding the lock, so no live run's
    temp file is touched. With ``pid``, only that (dead) process's temp files."""
    out = Path(out)
    prefix = TMP_PREFIX if pid is None else f"{TMP_PREFIX}{pid}-"
    folders = [out]
    for own in ("clips", "thumbs", ".soraprep"):
        if (out / own).is_dir() and not (out / own).is_symlink():
            folders += [out / own] + [d for d in (out / own).rglob("*") if d.is_dir() and not d.is_symlink()]
    removed = []
    for d in folders:
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if p.name.startswith(prefix) and (p.is_file() or p.is_symlink()):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed
