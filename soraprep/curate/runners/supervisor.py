"""Worker supervision: units run in child processes watched by the parent, so no unit can hang the run,
take the machine's memory, or vanish.

A ``multiprocessing.Pool`` never returns when one of its workers is killed (what the OS out-of-memory
killer does), and nothing stops a worker from growing until the whole machine runs out of memory. Here
the parent gives each worker one unit at a time over a pipe and waits on the pipes *and* the process
sentinels, polling each busy worker's resident memory:

- a worker that **dies** (killed by a signal, a crash in native code) is replaced and its unit retried
  once; a unit that kills its worker twice is committed as an error row, kind ``worker_died``;
- a worker whose RSS exceeds ``max_memory_bytes`` is killed by the parent and its unit committed as
  ``out_of_memory`` (a ``MemoryError`` raised inside a stage is recorded with the same kind);
- a unit that runs longer than ``unit_timeout_s`` is killed and committed as ``timeout`` (a fresh
  worker's set-up is not counted; it may take up to ``SETUP_S``).

Either way the run goes on and ends: every unit ends in a committed row. Each worker builds the stages
and runs their ``setup()`` once, then serves units until it is told to stop. Workers die with the
parent (see ``_die_with_parent``), so a ``kill -9``'d run leaves no orphan writing into OUT.
The Ray runner uses one supervisor (one child process) per actor, so the same guarantees hold there.
"""

from __future__ import annotations

import collections
import importlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

GIB = 1024 ** 3
POLL_S = 0.05  # memory poll / wait granularity: at ~5 GB/s of fresh allocations, <= 0.25 GB overshoot
SETUP_S = 600.0  # a fresh worker's set-up (loading models) may take this long, whatever the unit time limit


@dataclass(frozen=True)
class Limits:
    """What one worker may use. ``None`` turns a limit off (the memory watchdog needs Linux's /proc)."""

    max_memory_bytes: int | None = 4 * GIB  # curate() defaults to "auto" (see auto_memory_bound)
    unit_timeout_s: float | None = None
    retries: int = 1  # extra tries of a unit whose worker died (the second death makes it a row)

    def __post_init__(self) -> None:
        if self.max_memory_bytes is not None and self.max_memory_bytes <= 0:
            raise ValueError("the worker memory bound must be > 0 (or None for no bound)")
        if self.unit_timeout_s is not None and self.unit_timeout_s <= 0:
            raise ValueError("the unit time limit must be > 0 seconds (or None for no limit)")


def machine_memory() -> int | None:
    """Physical memory of this machine, or the container's (cgroup) limit when lower."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    for cg in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            total = min(total, int(Path(cg).read_text().strip()))
        except (OSError, ValueError):  # absent, or "max"
            pass
    return total


def auto_memory_bound(workers: int) -> int | None:
    """``--max-worker-memory auto``: 80 % of this machine's memory shared by its workers, at least 1 GiB
    each — so workers at their bound together still leave the machine room (no machine-wide OOM)."""
    total = machine_memory()
    return None if total is None else max(GIB, int(0.8 * total / max(1, workers)))


def parse_size(text: str | int | float | None, workers: int = 1) -> int | None:
    """``"4GiB"``, ``"512M"``, ``"1.5g"``, ``4294967296`` -> bytes; ``0``/``"none"``/``None`` -> None (no bound);
    ``"auto"`` -> :func:`auto_memory_bound` for ``workers`` workers on this machine."""
    if text is None:
        return None
    s = str(text).strip().lower().replace(" ", "")
    if s in ("", "0", "none", "off", "unlimited"):
        return None
    if s == "auto":
        return auto_memory_bound(workers)
    units = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024 ** 2, "mb": 1024 ** 2,
             "mib": 1024 ** 2, "g": GIB, "gb": GIB, "gib": GIB, "t": 1024 ** 4, "tb": 1024 ** 4, "tib": 1024 ** 4}
    num = s.rstrip("kmgtib")
    try:
        value = float(num) * units[s[len(num):]]
    except (ValueError, KeyError):
        raise ValueError(f"cannot read {text!r} as a size: write e.g. 4GiB, 512MiB or 0 (no bound)") from None
    if value <= 0:
        return None
    return int(value)


def fmt_size(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 1024 ** 2:.0f} MiB"


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process (Linux /proc), None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _die_with_parent(parent: int, pdeathsig: bool) -> None:
    """End this worker when its parent ends, even by ``kill -9``: the kernel's PR_SET_PDEATHSIG where the
    parent started us from its main thread (the signal follows the *thread* that started the child, so
    not from a Ray actor's task thread), and everywhere a thread that watches for the parent going away."""
    if pdeathsig and sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    if os.getppid() != parent:  # the parent died before we got here
        os._exit(1)
    threading.Thread(target=watch, name="soraprep-parent-watch", daemon=True).start()


def _worker_main(conn, init_args: tuple, modules: list[str], parent: int, pdeathsig: bool,
                 task: str = "run_worker_unit") -> None:
    """Child process: set up the stages once, then run units (``local.<task>``) until told to stop (``None``)."""
    from soraprep.curate.runners import local
    from soraprep.curate.runners.state import WorkerState

    _die_with_parent(parent, pdeathsig)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for m in modules:  # stages registered outside soraprep (a plugin, a test) must be registered here too
        try:
            importlib.import_module(m)
        except Exception:  # noqa: BLE001 - the recipe validation below reports the missing stage
            pass
    state = WorkerState.open(*init_args)   # this worker's stages and thread counts, owned by this function
    try:
        while True:
            try:
                unit = conn.recv()
            except (EOFError, OSError):
                return
            if unit is None:
                return
            conn.send(("start", None))
            summary = getattr(local, task)(state, unit, on_stage=lambda name: conn.send(("stage", name)))
            conn.send(("done", summary))
    finally:
        state.close()


class _Worker:
    def __init__(self, ctx, init_args: tuple, modules: list[str], task: str = "run_worker_unit"):
        self.conn, child = ctx.Pipe(duplex=True)
        main = threading.current_thread() is threading.main_thread()
        self.proc = ctx.Process(target=_worker_main, args=(child, init_args, modules, os.getpid(), main, task),
                                daemon=True)
        self.proc.start()
        child.close()
        self.unit: dict[str, Any] | None = None
        self.stage = "setup"  # the stage it is in, as last reported (a fresh worker sets up first)
        self.started = 0.0
        self.running = False  # set up and working on its unit (the unit's time limit applies)

    def give(self, unit: dict[str, Any]) -> None:
        if self.unit is not None:
            self.stage = "runner"
        self.unit, self.started, self.running = unit, time.monotonic(), False
        try:
            self.conn.send(unit)
        except OSError:  # it died already: the supervisor sees its sentinel
            pass

    def kill(self, out: Path | None = None, scratch: str | None = None) -> None:
        """Stop the process; with ``out``, delete the half-written files it left there (a local OUT) and
        its scratch folder (staged sources, a store OUT's scratch OUT)."""
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()
        if out is not None:
            import shutil

            from soraprep.curate.lock import clean_partials
            from soraprep.curate.runners.workspace import worker_scratch

            if scratch is not None:
                shutil.rmtree(worker_scratch(scratch, self.proc.pid), ignore_errors=True)
            try:
                if isinstance(out, Path):
                    clean_partials(out, pid=self.proc.pid)
            except OSError:
                pass


def _death_note(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (e.g. by the OS out-of-memory killer)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with code {code}"


class Supervisor:
    """Runs units in ``workers`` supervised child processes; reusable across :meth:`run` calls.

    ``task``: the function of :mod:`.local` a worker runs per unit (``run_worker_unit``: the whole unit,
    committed or published; the Ray runner's analysis actors run ``analyse_unit``). ``on_error(unit, stage,
    kind, message)``, when given, replaces committing a unit whose worker died or was stopped: its return
    value is yielded."""

    def __init__(self, *, init_args: tuple, out, recipe_hash: str, workers: int = 1,
                 limits: Limits = Limits(), modules: list[str] | None = None,
                 fingerprints: dict[str, str] | None = None, scratch: str | None = None,
                 task: str = "run_worker_unit", on_error=None):
        from soraprep.storage import Store

        self._ctx = mp.get_context("spawn")
        # OUT: a local folder (Path) or a Store (an object store: see runners/workspace.py)
        self._out = out if isinstance(out, Store) and out.remote else Path(out.root if isinstance(out, Store) else out)
        self._init, self._hash, self._scratch = init_args, recipe_hash, scratch
        self._task, self._on_error = task, on_error
        self._n, self.limits, self._modules = max(1, workers), limits, list(modules or [])
        self._fingerprints = fingerprints  # the recipe's stage fingerprints, stamped on units committed here
        self._idle: list[_Worker] = []

    def close(self) -> None:
        for w in self._idle:
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in self._idle:
            w.proc.join(2)
            w.kill()
        self._idle = []

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def warm(self) -> None:
        """Start the workers now: they import and set up their stages while the caller goes on."""
        while len(self._idle) < self._n:
            self._idle.append(_Worker(self._ctx, self._init, self._modules, self._task))

    def _worker(self) -> _Worker:
        return self._idle.pop() if self._idle else _Worker(self._ctx, self._init, self._modules, self._task)

    def _error(self, unit: dict[str, Any], stage: str, kind: str, message: str) -> dict[str, Any]:
        """Commit ``unit`` as one error row (unless its worker committed it just before it was stopped)."""
        from soraprep.curate.runners import workspace

        if self._on_error is not None:
            return self._on_error(unit, stage, kind, message)
        if self._committed(unit["_key"]):
            return self._summary(unit["_key"])
        return workspace.commit_error(workspace.out_store(self._out), unit, stage, kind, message, self._hash,
                                      self._fingerprints)

    def _committed(self, key: str) -> bool:
        from soraprep.curate.runners import workspace

        return workspace.is_committed(workspace.out_store(self._out), key)

    def _summary(self, key: str) -> dict[str, Any]:
        from soraprep.curate.runners import workspace

        return workspace.summary_of(workspace.out_store(self._out), key)

    def run(self, units: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Yield one summary per unit as it completes (any order); every unit ends committed."""
        queue = collections.deque(units)
        deaths: dict[str, list[str]] = collections.defaultdict(list)
        busy: list[_Worker] = []
        try:
            while queue or busy:
                while queue and len(busy) < self._n:
                    w = self._worker()
                    w.give(queue.popleft())
                    busy.append(w)
                ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=POLL_S)
                now = time.monotonic()
                for w in list(busy):
                    end = None  # (summary) when the worker is done with its unit
                    try:
                        while w.conn.poll():
                            kind, value = w.conn.recv()
                            if kind == "stage":
                                w.stage = value
                            elif kind == "start":  # set-up done: the time limit counts from here
                                w.started, w.stage, w.running = time.monotonic(), "runner", True
                            else:
                                end = value
                                break
                    except (EOFError, OSError):
                        pass
                    if end is not None:
                        busy.remove(w)
                        self._idle.append(w)
                        yield end
                        continue
                    unit = w.unit
                    if w.proc.sentinel in ready or not w.proc.is_alive():
                        busy.remove(w)
                        w.kill(self._out, self._scratch)
                        if self._committed(unit["_key"]):  # died after committing
                            yield self._summary(unit["_key"])
                            continue
                        deaths[unit["_key"]].append(_death_note(w.proc.exitcode))
                        if len(deaths[unit["_key"]]) <= self.limits.retries:
                            queue.appendleft(unit)  # a fresh worker tries it once more
                            continue
                        yield self._error(unit, w.stage, "worker_died",
                                          f"the worker process died on this unit {len(deaths[unit['_key']])} times "
                                          f"({'; '.join(deaths[unit['_key']])})")
                        continue
                    limit = self.limits.max_memory_bytes
                    rss = rss_bytes(w.proc.pid) if limit is not None else None
                    if rss is not None and rss > limit:
                        busy.remove(w)
                        w.kill(self._out, self._scratch)
                        yield self._error(unit, w.stage, "out_of_memory",
                                          f"the worker used {fmt_size(rss)}, over the {fmt_size(limit)} bound "
                                          f"(--max-worker-memory); it was stopped")
                        continue
                    timeout = self.limits.unit_timeout_s
                    if timeout is not None and not w.running:
                        timeout = max(timeout, SETUP_S)
                    if timeout is not None and now - w.started > timeout:
                        busy.remove(w)
                        w.kill(self._out, self._scratch)
                        yield self._error(unit, w.stage, "timeout",
                                          f"the unit ran longer than {timeout:g} s (--unit-timeout); it was stopped")
        finally:
            for w in busy:  # an exception (a fatal setup error) or the consumer stopped early
                w.kill()


def workers_can_build(recipe) -> bool:
    """Whether a fresh worker process can find every stage of ``recipe`` by importing its module: not so
    for a stage class defined inside a function or in a notebook's ``__main__``."""
    from soraprep.stages import STAGES

    for name in set(recipe.sections) | set(recipe.stage_names()):
        cls = STAGES.get(name)
        if cls is not None and (cls.__module__ == "__main__" or "<locals>" in cls.__qualname__):
            return False
    return True


def stage_modules(recipe) -> list[str]:
    """Modules defining the recipe's stages that a fresh worker would not import by itself."""
    from soraprep.stages import STAGES

    names = set(recipe.sections) | set(recipe.stage_names())
    return sorted({STAGES[n].__module__ for n in names if n in STAGES
                   and not STAGES[n].__module__.startswith("soraprep.")})
