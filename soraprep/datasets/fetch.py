"""HTTP(S) downloads that survive the real web: resume with ``Range``, retries with backoff, per-host
rate limits that honour ``Retry-After``, and checks that what arrived is a video of a sane size.

Standard library only (``urllib``), so ``soraprep download`` works on the core install. Files are
written to ``NAME.part`` and renamed to ``NAME`` once complete and verified, so a complete file is
never confused with a partial one, and an interrupted download resumes from the bytes already there.
Resumes send ``If-Range`` with the first response's ETag (or Last-Modified), so a file that changed on
the server between attempts is downloaded again whole instead of being spliced. Redirects are followed
only to http(s) URLs.

Bytes go to ``NAME.part`` as they arrive (unbuffered), so a stalled connection, a crash or a ``kill -9``
loses nothing: the next attempt or run asks for the rest with ``Range``. Three clocks bound a file:

* a **stall timeout**: a connection that delivers less than ``min_speed_bps`` bytes/s over any
  ``stall_window_s`` window (or nothing at all for that long) is dropped and retried from what arrived;
  an attempt that stalled without real progress counts as a failure, so a 1-byte-per-5-s server fails
  with ``stalled`` after ``retries`` attempts instead of trickling forever;
* a **per-file deadline** (``deadline_s``) over all attempts, back-offs and server-requested waits:
  past it the file fails with ``deadline_exceeded`` (the ``.part`` stays for a later run);
* the socket ``timeout_s`` for connecting and for each read (never longer than the stall window).

The deadline is hard: a watchdog shuts the attempt's sockets at that moment, so not even a server that
trickles its *headers* one byte at a time (each read within the socket timeout) can hold a file past it.

Errors that repeating cannot fix fail at once with their own kind: ``invalid_url``, ``dns_not_found``
(the name does not exist), ``tls_error``, HTTP 4xx other than 408/425/429 (``http_404``, ``http_410``,
...), ``bad_content_type``, ``too_large``. Transient ones are retried with exponential back-off:
``connection_failed`` (reset, timeout, a temporary DNS failure), 5xx/429/408, ``stalled``. A refused
connection (``connection_refused``: the host is there, nothing listens) is retried at most twice.
"""

from __future__ import annotations

import email.utils
import http.client
import os
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlparse

from soraprep.storage.files import publish
from soraprep.video.sniff import HEAD_BYTES, sniff_container

USER_AGENT = "soraprep-download/0.1 (+https://github.com/soraprep)"
CHUNK = 1 << 16

#: Content types that are never a video (a dead link answered with an HTML page, a JSON error, ...)
_BAD_TYPES = ("text/", "application/json", "application/xml", "application/xhtml", "image/", "audio/")
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
REFUSED_RETRIES = 2  # a refused connection is retried at most this often (a restarting server), not `retries`


class FetchError(Exception):
    """A download that failed for good; ``kind`` becomes ``error.kind`` on the manifest rows."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class FetchResult:
    path: Path
    size: int
    attempts: int
    resumed: bool           # some bytes came from a Range request after an interruption
    skipped: bool = False   # the complete file was already there


def parse_rate(text: str) -> tuple[str, float]:
    """``'example.com=2/s'`` (or ``'=2'``, ``'*=0.5/s'``) -> ``('example.com', 2.0)``; ``'*'`` is every host."""
    m = re.fullmatch(r"\s*([^=\s]+)\s*=\s*([0-9]*\.?[0-9]+)\s*(?:/s)?\s*", text)
    if not m or float(m.group(2)) <= 0:
        raise ValueError(f"rate limit {text!r} is not HOST=R/s (e.g. example.com=2/s, or *=1/s for every host)")
    return m.group(1).lower(), float(m.group(2))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


class RateLimiter:
    """At most ``rate`` request starts per second per host, plus pauses a server asked for.

    Thread-safe; ``clock``/``sleep`` are injectable so tests run without waiting.
    """

    def __init__(self, rates: dict[str, float] | None = None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rates = {k.lower(): v for k, v in (rates or {}).items()}
        self.clock, self.sleep = clock, sleep
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def rate_for(self, host: str) -> float | None:
        return self.rates.get(host.lower(), self.rates.get("*"))

    def delay(self, host: str) -> float:
        """Seconds before a request to ``host`` could start (0 when it may start now); books nothing."""
        with self._lock:
            return max(0.0, self._next.get(host.lower(), 0.0) - self.clock())

    def wait(self, host: str) -> None:
        """Block until a request to ``host`` may start, and book the slot."""
        host = host.lower()
        while True:
            with self._lock:
                now = self.clock()
                ready = self._next.get(host, now)
                if ready <= now:
                    rate = self.rate_for(host)
                    self._next[host] = now + (1.0 / rate if rate else 0.0)
                    return
                delay = ready - now
            self.sleep(delay)

    def defer(self, host: str, seconds: float) -> None:
        """The server asked for a pause (429/503 + Retry-After): no request to ``host`` before then."""
        host = host.lower()
        with self._lock:
            until = self.clock() + seconds
            self._next[host] = max(self._next.get(host, 0.0), until)


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401 - urllib hook
        if urlparse(newurl).scheme.lower() not in ("http", "https"):
            raise FetchError("unsupported_scheme", f"redirect to {newurl!r} refused: only http(s) is followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class HttpFetcher:
    """Download one URL to a file, resumably. One instance is shared by the download threads."""

    def __init__(self, *, limiter: RateLimiter | None = None, retries: int = 5, backoff_s: float = 1.0,
                 max_backoff_s: float = 60.0, max_retry_after_s: float = 600.0, timeout_s: float = 30.0,
                 max_bytes: int | None = 20 * 2**30, check_video: bool = True, stall_window_s: float = 30.0,
                 min_speed_bps: float = 1024.0, deadline_s: float | None = 3600.0) -> None:
        if stall_window_s <= 0 or min_speed_bps < 0 or timeout_s <= 0:
            raise ValueError("the stall window and the socket timeout must be > 0 s and the minimum speed >= 0 "
                             f"(got stall window {stall_window_s}, timeout {timeout_s}, min speed {min_speed_bps})")
        if deadline_s is not None and deadline_s <= 0:
            raise ValueError(f"the per-file deadline must be > 0 s, or none (got {deadline_s})")
        self.limiter = limiter or RateLimiter()
        self.retries, self.backoff_s, self.max_backoff_s = retries, backoff_s, max_backoff_s
        self.max_retry_after_s, self.timeout_s, self.max_bytes = max_retry_after_s, timeout_s, max_bytes
        self.check_video = check_video
        self.stall_window_s, self.min_speed_bps, self.deadline_s = stall_window_s, min_speed_bps, deadline_s
        self._opener = urllib.request.build_opener(_SafeRedirects(), _WatchedHTTP(), _WatchedHTTPS())

    def _pause(self, failures: int, url: str, deadline: float) -> None:
        wait = min(self.max_backoff_s, self.backoff_s * 2 ** (failures - 1))
        if time.monotonic() + wait >= deadline:
            raise FetchError("deadline_exceeded", f"{url}: the {self.deadline_s:.0f} s per-file deadline would pass "
                                                  f"during a {wait:.1f} s back-off")
        self.limiter.sleep(wait)

    def fetch(self, url: str, dst: str | os.PathLike) -> FetchResult:
        """Download ``url`` to ``dst`` (resuming ``dst.part``). Raises :class:`FetchError`."""
        dst = Path(dst)
        parsed = check_url(url)
        if dst.exists():
            return FetchResult(dst, dst.stat().st_size, 0, False, skipped=True)
        dst.parent.mkdir(parents=True, exist_ok=True)
        part = dst.with_name(dst.name + ".part")
        host = parsed.hostname
        try:
            return self._fetch(url, dst, part, host)
        except FetchError:
            if not part.exists():
                _validator_file(part).unlink(missing_ok=True)
            raise

    def _fetch(self, url: str, dst: Path, part: Path, host: str) -> FetchResult:
        failures = attempts = refused = 0
        resumed = False
        deadline = time.monotonic() + (self.deadline_s if self.deadline_s is not None else float("inf"))
        # an attempt that brought at least a stall window's worth of bytes was real progress
        real_progress = max(1, int(self.min_speed_bps * self.stall_window_s))
        while True:
            attempts += 1
            have = part.stat().st_size if part.exists() else 0
            if time.monotonic() + self.limiter.delay(host) >= deadline:
                raise FetchError("deadline_exceeded", f"{url}: the {self.deadline_s:.0f} s per-file deadline passed "
                                                      f"after {attempts - 1} attempts ({have} bytes kept for a resume)")
            self.limiter.wait(host)
            try:
                progressed, complete = self._attempt(url, part, have, host, deadline)
            except _Retry as r:
                failures += 1
                refused += r.kind == "connection_refused"
                if failures > self.retries or refused > REFUSED_RETRIES:
                    raise FetchError(r.kind, f"{url}: {r.message} (gave up after {attempts} attempts)") from None
                if r.wait is None:
                    self._pause(failures, url, deadline)
                continue
            except _Stalled as st:
                # a stall with real progress (a slow patch on a big file) is not held against the file
                failures = 0 if st.got >= real_progress else failures + 1
                if failures > self.retries:
                    raise FetchError("stalled", f"{url}: {st.message}, {attempts} times "
                                                f"({part.stat().st_size if part.exists() else 0} bytes kept "
                                                "for a resume)") from None
                if st.got < real_progress:
                    self._pause(failures, url, deadline)
                continue
            if have and progressed and part.exists() and part.stat().st_size > progressed:
                resumed = True  # bytes were appended to an earlier attempt's
            if complete:
                break
            # the body ended early: progress resets the failure count, a dropped connection without any does not
            failures = 0 if progressed else failures + 1
            if failures > self.retries:
                raise FetchError("connection_dropped", f"{url}: connection dropped {attempts} times without progress")
            if not progressed:
                self._pause(failures, url, deadline)
        self._verify(url, part)
        publish(part, dst, fsync=False)  # the .partial- file kept for Range resume becomes the video
        _validator_file(part).unlink(missing_ok=True)
        return FetchResult(dst, dst.stat().st_size, attempts, resumed)

    # one request ------------------------------------------------------------------------------------
    def _attempt(self, url: str, part: Path, have: int, host: str, deadline: float) -> tuple[int, bool]:
        """One request; returns (bytes added, the file is complete). Raises _Retry, _Stalled or FetchError."""
        if deadline == float("inf"):
            return self._request(url, part, have, host, deadline)
        watch = _Watchdog(deadline - time.monotonic())
        _current.watch = watch
        try:
            return self._request(url, part, have, host, deadline)
        finally:
            _current.watch = None
            watch.cancel()

    def _request(self, url: str, part: Path, have: int, host: str, deadline: float) -> tuple[int, bool]:
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        validator = _validator_file(part)
        if have:
            headers["Range"] = f"bytes={have}-"
            if validator.exists():  # the server sends the whole (new) file if it changed meanwhile
                headers["If-Range"] = validator.read_text().strip()
        req = urllib.request.Request(_requote(url), headers=headers)
        # each socket operation waits at most the stall window (and never past the deadline)
        sock_timeout = max(0.05, min(self.timeout_s, self.stall_window_s, deadline - time.monotonic()))
        try:
            resp = self._opener.open(req, timeout=sock_timeout)
        except urllib.error.HTTPError as exc:
            return self._http_error(url, exc, part, have, host)
        except urllib.error.URLError as exc:
            raise _classify_url_error(url, exc.reason) from None
        except http.client.InvalidURL as exc:
            raise FetchError("invalid_url", f"{url!r}: {exc}") from None
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, a garbled status line
            raise _classify_url_error(url, exc) from None
        with resp:
            ctype = (resp.headers.get("Content-Type") or "").lower()
            if ctype.startswith(_BAD_TYPES):
                raise FetchError("bad_content_type", f"{url} answered {ctype!r}, not a video")
            length = resp.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            if resp.status == 206 and have:
                m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range") or "")
                if not m or int(m.group(1)) != have:
                    part.unlink(missing_ok=True)  # the server resumed somewhere else: start over
                    raise _Retry("bad_range", "server answered a different range; restarting")
                mode, start = "ab", have
            else:
                mode, start = "wb", 0  # 200: the server ignored Range (or nothing to resume)
            # remember what identifies this version of the file, for If-Range on a later resume
            tag = resp.headers.get("ETag") or ""
            tag = tag if tag and not tag.startswith("W/") else (resp.headers.get("Last-Modified") or "")
            if mode == "wb":
                if tag:
                    validator.write_text(tag)
                else:
                    validator.unlink(missing_ok=True)
            total = start + length if length is not None else None
            if self.max_bytes is not None and total is not None and total > self.max_bytes:
                raise FetchError("too_large", f"{url} is {total} bytes, over the {self.max_bytes} byte limit")
            got = 0
            window_start, window_got = time.monotonic(), 0
            need = self.min_speed_bps * self.stall_window_s
            try:
                # unbuffered: every byte received is in NAME.part at once (a kill -9 loses nothing)
                with open(part, mode, buffering=0) as fh:
                    while True:
                        chunk = resp.read1(CHUNK)  # what has arrived (a 64 KiB read() would wait for it all)
                        if not chunk:
                            break
                        fh.write(chunk)
                        got += len(chunk)
                        window_got += len(chunk)
                        if self.max_bytes is not None and start + got > self.max_bytes:
                            part.unlink(missing_ok=True)
                            raise FetchError("too_large", f"{url} exceeds the {self.max_bytes} byte limit")
                        now = time.monotonic()
                        if now >= deadline:
                            raise FetchError("deadline_exceeded",
                                             f"{url}: the {self.deadline_s:.0f} s per-file deadline passed with "
                                             f"{start + got} bytes received (kept for a resume)")
                        if now - window_start >= self.stall_window_s:
                            if window_got < need:
                                raise _Stalled(got, f"{window_got} bytes in {now - window_start:.1f} s, under the "
                                                    f"minimum {self.min_speed_bps:g} bytes/s")
                            window_start, window_got = now, 0
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise FetchError("deadline_exceeded", f"{url}: the {self.deadline_s:.0f} s per-file deadline "
                                                          f"passed with {start + got} bytes received") from None
                raise _Stalled(got, f"no bytes for {sock_timeout:.1f} s") from None
            except (http.client.HTTPException, ConnectionError, ssl.SSLError):  # IncompleteRead, reset, TLS
                return got, False  # keep what arrived; the next attempt resumes with Range
            if time.monotonic() >= deadline:  # the watchdog ended the body: its end proves nothing
                raise FetchError("deadline_exceeded", f"{url}: the {self.deadline_s:.0f} s per-file deadline passed "
                                                      f"with {start + got} bytes received (kept for a resume)")
            if length is not None and got < length:
                return got, False
            if start + got == 0:
                raise _Retry("empty_body", "the server sent no bytes")
            return got, True

    def _http_error(self, url: str, exc: urllib.error.HTTPError, part: Path, have: int,
                    host: str) -> tuple[int, bool]:
        status = exc.code
        headers = exc.headers
        exc.close()
        if status == 416 and have:
            m = re.match(r"bytes \*/(\d+)", (headers.get("Content-Range") or "") if headers else "")
            if m and int(m.group(1)) == have:
                return 0, True  # everything was already there
            part.unlink(missing_ok=True)
            raise _Retry("bad_range", "range not satisfiable; restarting")
        if status in _RETRY_STATUS:
            wait = parse_retry_after(headers.get("Retry-After") if headers else None, time.time())
            if wait is not None:
                if wait > self.max_retry_after_s:
                    raise FetchError(f"http_{status}", f"{url}: server asks to wait {wait:.0f} s "
                                                       f"(over the {self.max_retry_after_s:.0f} s limit)")
                self.limiter.defer(host, wait)
            raise _Retry(f"http_{status}", f"HTTP {status}", wait)
        raise FetchError(f"http_{status}", f"{url}: HTTP {status} {exc.reason}")

    def _verify(self, url: str, part: Path) -> None:
        size = part.stat().st_size
        if size == 0:
            part.unlink(missing_ok=True)
            raise FetchError("empty_body", f"{url}: empty file")
        if self.check_video:
            with open(part, "rb") as fh:
                head = fh.read(HEAD_BYTES)
            if sniff_container(head) is None:
                part.unlink(missing_ok=True)
                raise FetchError("not_video", f"{url}: the {size} bytes received are not a video container")


_current = threading.local()   # .watch: the _Watchdog of the attempt running in this thread


class _Watchdog:
    """Shuts the sockets an attempt opened once ``seconds`` have passed: a blocked read returns at once."""

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._conns: list[http.client.HTTPConnection] = []
        self._fired = False
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def add(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._conns.append(conn)
            fired = self._fired
        if fired:
            _shut(conn)

    def _fire(self) -> None:
        with self._lock:
            self._fired = True
            conns = list(self._conns)
        for conn in conns:
            _shut(conn)

    def cancel(self) -> None:
        self._timer.cancel()


def _shut(conn: http.client.HTTPConnection) -> None:
    try:
        if conn.sock is not None:
            conn.sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _watched(cls: type) -> type:
    class Watched(cls):  # registers its socket with the running attempt's watchdog once connected
        def connect(self) -> None:
            super().connect()
            watch = getattr(_current, "watch", None)
            if watch is not None:
                watch.add(self)

    return Watched


_WATCHED = {cls: _watched(cls) for cls in (http.client.HTTPConnection, http.client.HTTPSConnection)}


class _WatchedHTTP(urllib.request.HTTPHandler):
    def do_open(self, http_class, req, **kw):  # noqa: D401 - urllib hook
        return super().do_open(_WATCHED.get(http_class, http_class), req, **kw)


class _WatchedHTTPS(urllib.request.HTTPSHandler):
    def do_open(self, http_class, req, **kw):  # noqa: D401 - urllib hook
        return super().do_open(_WATCHED.get(http_class, http_class), req, **kw)


def check_url(url: str):
    """``urlparse(url)`` for an http(s) URL with a host and a valid port; else :class:`FetchError`."""
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number in 0..65535
    except ValueError as exc:  # e.g. "http://[::1/x" or "http://host:99999/x"
        raise FetchError("invalid_url", f"{url!r}: {exc}") from None
    if parsed.scheme.lower() not in ("http", "https"):
        raise FetchError("unsupported_scheme", f"{url!r}: only http(s) URLs are downloaded")
    if not parsed.hostname or any(c.isspace() or ord(c) < 32 for c in parsed.netloc) or "\x00" in url:
        raise FetchError("invalid_url", f"{url!r}: not a valid URL (no host, or spaces / control characters in it)")
    return parsed


def _requote(url: str) -> str:
    """Percent-encode what may not travel raw in a request line (``/my video.mp4`` -> ``/my%20video.mp4``)."""
    p = urlparse(url)
    safe = "/%:@!$&'()*+,;=-._~"
    return p._replace(path=quote(p.path, safe=safe), query=quote(p.query, safe=safe + "?")).geturl()


def _classify_url_error(url: str, reason: object) -> Exception:
    """What a failed connection means: a permanent :class:`FetchError` or a :class:`_Retry`."""
    if isinstance(reason, ssl.SSLCertVerificationError):  # not transient: do not retry
        return FetchError("tls_error", f"{url}: {reason}")
    if isinstance(reason, socket.gaierror):
        if reason.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            return FetchError("dns_not_found", f"{url}: the host name does not resolve ({reason})")
        return _Retry("connection_failed", f"DNS lookup failed, may be temporary: {reason}")
    if isinstance(reason, ConnectionRefusedError):
        return _Retry("connection_refused", f"connection refused: {reason}")
    if isinstance(reason, TimeoutError):
        return _Retry("connection_failed", f"timed out: {reason}")
    return _Retry("connection_failed", f"{type(reason).__name__}: {getattr(reason, 'reason', reason)}")


def _validator_file(part: Path) -> Path:
    """Where the ETag / Last-Modified of a partial download is kept (``NAME.part.validator``)."""
    return part.with_name(part.name + ".validator")


class _Stalled(Exception):
    """The connection delivered too little for a stall window; ``got`` bytes of this attempt were kept."""

    def __init__(self, got: int, message: str) -> None:
        super().__init__(message)
        self.got, self.message = got, message


class _Retry(Exception):
    def __init__(self, kind: str, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.wait = kind, message, wait
