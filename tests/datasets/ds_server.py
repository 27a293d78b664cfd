"""A real HTTP server on 127.0.0.1 for the downloader tests: serves bytes with Range support and, per
path, a queue of misbehaviours (404, 429 + Retry-After, dropped connections, HTML error pages)."""

from __future__ import annotations

import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class VideoServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}
        self.if_ranges: list[str | None] = []  # If-Range header per request, aligned with log
        self.actions: dict[str, list] = {}
        self.log: list[tuple[str, str | None]] = []  # (path, Range header) per request
        self._lock = threading.Lock()
        self._stop = threading.Event()  # set on exit: trickling / stalled handlers end at once
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):  # noqa: N802 - http.server API
                with server._lock:
                    server.log.append((self.path, self.headers.get("Range")))
                    server.if_ranges.append(self.headers.get("If-Range"))
                    queue = server.actions.get(self.path) or []
                    action = queue.pop(0) if queue else "ok"
                server._serve(self, action)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> VideoServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def requests(self, path: str) -> list[str | None]:
        return [r for p, r in self.log if p == path]

    # --------------------------------------------------------------------------------------------
    def _serve(self, h: BaseHTTPRequestHandler, action) -> None:
        kind = action[0] if isinstance(action, tuple) else action
        if kind in ("403", "404", "410"):
            h.send_response(int(kind))
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if kind in ("429", "503"):
            h.send_response(int(kind))
            if isinstance(action, tuple) and action[1] is not None:
                h.send_header("Retry-After", str(action[1]))
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if kind == "slow_headers":  # ("slow_headers", interval_s, max_s): headers a byte at a time, for max_s
            head = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nX-Padding: " + b"x" * 10_000 + b"\r\n\r\n"
            try:
                for i in range(min(len(head), int(action[2] / action[1]))):
                    h.wfile.write(head[i:i + 1])
                    h.wfile.flush()
                    if self._stop.wait(action[1]):
                        break
            except OSError:  # the client gave up: expected
                pass
            h.close_connection = True
            return
        if kind == "redirect":
            h.send_response(302)
            h.send_header("Location", action[1])
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if kind == "html":
            body = b"<html><body>This video is no longer available</body></html>"
            h.send_response(200)
            h.send_header("Content-Type", "text/html; charset=utf-8")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        data = self.files.get(h.path.split("?", 1)[0])
        if data is None:
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        start = 0
        etag = self.etags.get(h.path.split("?", 1)[0])
        m = re.match(r"bytes=(\d+)-$", h.headers.get("Range") or "")
        if_range = h.headers.get("If-Range")
        if m and if_range is not None and if_range != etag:
            m = None  # RFC 9110: the representation changed, send all of it
        if m and kind != "norange":
            start = int(m.group(1))
            if start >= len(data):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        body = data[start:]
        h.send_header("Content-Type", "application/octet-stream" if kind == "octet" else "video/mp4")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes")
        if etag:
            h.send_header("ETag", etag)
        h.end_headers()
        if kind == "drop":  # announce the whole body, send part of it, then cut the connection
            h.wfile.write(body[: action[1]])
            h.wfile.flush()
            if len(action) == 4:  # ("drop", n, new_bytes, new_etag): the file changes after the drop
                key = h.path.split("?", 1)[0]  # (before the drop: a fast client may already be back)
                self.files[key], self.etags[key] = action[2], action[3]
            h.connection.shutdown(socket.SHUT_RDWR)
            h.close_connection = True
            return
        if kind == "trickle":  # ("trickle", n, interval_s): n bytes at once, then one byte per interval_s
            _, n, interval = action
            try:
                h.wfile.write(body[:n])
                h.wfile.flush()
                for i in range(n, len(body)):
                    if self._stop.wait(interval):
                        return
                    h.wfile.write(body[i:i + 1])
                    h.wfile.flush()
            except OSError:  # the client gave up (stall timeout): expected
                pass
            return
        if kind == "stall":  # ("stall", n, seconds): n bytes, then silence for `seconds`, then the connection ends
            h.wfile.write(body[: action[1]])
            h.wfile.flush()
            self._stop.wait(action[2])
            h.close_connection = True
            return
        h.wfile.write(body)


class FakeClock:
    """time() and sleep() for the rate limiter: sleeping advances time instantly and is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds
