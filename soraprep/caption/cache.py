"""The caption cache: the journal that makes reruns free and resumes lossless.

One SQLite file (WAL mode) maps a key to a JSON record. The key hashes what decides the answer: the clip's
*content* (a digest of the file's bytes and the frame span), the backend model, the prompt hash (prompts,
mode, frame count, image size, token limit, summary model) and the sampled frame indices. A record is
committed the moment a clip finishes, in its own transaction, so ``kill -9`` loses at most the clips that
were in flight; a rerun finds every committed clip and sends no request for it. Failures are recorded too
(``status: "error"``) so a rerun reproduces them for free; ``retry_failed`` asks again.

The record stores the model's *raw* answer: cleaning runs again on every run, so changing the cleaning
rules never costs a request.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


class FileDigests:
    """blake2b of whole files, memoised on (path, size, mtime_ns) so a source shared by many clips is read once."""

    def __init__(self) -> None:
        self._memo: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    def __call__(self, path: str) -> str:
        st = os.stat(path)
        key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._memo:
                return self._memo[key]
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        digest = h.hexdigest()
        with self._lock:
            self._memo[key] = digest
        return digest


def cache_key(*, content: str, span: tuple[int, int], model: str, prompt_hash: str, frames: list[int]) -> str:
    blob = json.dumps({"content": content, "span": list(span), "model": model, "prompt": prompt_hash,
                       "frames": list(frames)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class CaptionCache:
    """Thread-safe, multi-process-safe key -> record store. ``path=None`` keeps it in memory."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(":memory:" if self.path is None else str(self.path), timeout=60,
                                   check_same_thread=False, isolation_level=None)
            if self.path is not None:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")   # durable against process death (kill -9)
            conn.execute("CREATE TABLE IF NOT EXISTS captions (key TEXT PRIMARY KEY, record TEXT NOT NULL, "
                         "created REAL DEFAULT (julianday('now')))")
            self._conn = conn
        return self._conn

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db().execute("SELECT record FROM captions WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, record: dict[str, Any]) -> None:
        data = json.dumps(record, ensure_ascii=False)
        with self._lock:
            self._db().execute("INSERT OR REPLACE INTO captions (key, record) VALUES (?, ?)", (key, data))

    def __len__(self) -> int:
        with self._lock:
            return self._db().execute("SELECT COUNT(*) FROM captions").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __getstate__(self) -> dict[str, Any]:   # picklable: the connection is reopened in the worker
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])
