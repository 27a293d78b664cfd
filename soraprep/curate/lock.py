"""One run per OUT: a lock file, and a start-up clean-up that deletes only soraprep's own temp files.

Two runs writing one OUT would delete and overwrite each other's clips, so ``curate`` and
``rethreshold`` hold ``OUT/.soraprep/lock`` while they run. The lock is a small JSON file created
with ``O_EXCL`` (which works on NFS too) naming the pid, the host and the process start time. A second
run exits 2 with "OUT is in use by pid N on host H". A lock left behind by a run that died (``kill -9``,
a crash, a reboot) is detected on the same host (its pid is gone, or is now another process) and
taken over. A lock from another host cannot be checked from here: if that run is really gone, delete
``OUT/.soraprep/lock`` by hand.

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

from soraprep.manifest import TMP_PREFIX


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


@contextmanager
def out_lock(out: str | os.PathLike) -> Iterator[Path]:
    """Hold OUT's lock for the duration of the block; raise OutInUseError if a live run holds it."""
    path = lock_path(Path(out))
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "start_ticks": _start_ticks(os.getpid()),
          "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    for _attempt in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = _holder(path)
            if held is None:  # half-written by a run that is starting right now, or garbage
                time.sleep(0.2)
                held = _holder(path)
            if held is not None and held.get("host") != me["host"]:
                raise OutInUseError(
                    f"OUT {out} is in use by pid {held.get('pid')} on host {held.get('host')} (since "
                    f"{held.get('since')}); if that run is gone, delete {path} and rerun") from None
            if held is not None and _alive(int(held.get("pid", -1)), held.get("start_ticks")):
                raise OutInUseError(
                    f"OUT {out} is in use by pid {held['pid']} on host {held['host']} (since {held.get('since')}); "
                    f"wait for it to finish or stop it, or choose another --out") from None
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
