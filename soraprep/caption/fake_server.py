"""A minimal OpenAI-compatible chat-completions server for tests, benchmarks and dry runs.

It answers ``POST /v1/chat/completions`` with a deterministic caption that names how many images came in
and a digest of the request (so two clips never get the same answer), and ``GET /v1/models``. Faults can
be injected: a scripted sequence of error statuses for the first requests (``429`` carries
``Retry-After``), a fixed latency per request, requests that hang longer than a client's timeout, a fixed
raw body for every 200 answer (garbage, a malformed ``usage``, a 5 000-word caption), and answers that
trickle out one byte at a time (each byte within a client's read timeout, the whole far past it).
Each request is appended to a JSONL log when asked, so tests can count exactly what reached the server.

    python -m soraprep.caption.fake_server --port 8000 --latency 0.2      # then: soraprep caption ... \\
        --backend openai --model fake --base-url http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from soraprep.storage.files import atomic_write

_CJK = re.compile(r"[\u4e00-\u9fff]")


@dataclass
class FakeServerConfig:
    script: list[int] = field(default_factory=list)  # statuses for the first requests, e.g. [429, 500]; then 200
    retry_after: str = "1"                             # Retry-After sent with scripted 429/503
    latency_s: float = 0.0                             # added to every request
    hang_first: int = 0                                # the first N requests (after the script) sleep hang_s
    hang_s: float = 0.0
    log_path: str | None = None                        # JSONL, one line per request
    model: str = "fake-vlm"
    raw_body: str | None = None                        # sent as-is for every 200 answer (fault injection)
    trickle_s: float = 0.0                             # > 0: 200 answers go out one byte per trickle_s


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # headers and body go out in separate writes: no 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict | str, headers: dict[str, str] | None = None) -> None:
        data = (body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        trickle = self.server.cfg.trickle_s if status == 200 else 0.0
        if trickle <= 0:
            self.wfile.write(data)
            return
        try:
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                if self.server.stopping.wait(trickle):
                    return
        except OSError:  # the client gave up (its deadline): expected
            pass

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": self.server.cfg.model, "object": "model"}]})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            body = json.loads(raw)
            messages = body["messages"]
        except (ValueError, KeyError, TypeError):
            self._send(400, {"error": {"message": "bad JSON body"}})
            return
        status, hang = self.server.next_status()
        prompt, n_images = _prompt_and_images(messages)
        digest = hashlib.sha1(raw).hexdigest()[:10]
        self.server.log({"status": status, "digest": digest, "n_images": n_images, "t": time.time()})  # on arrival
        self.server.enter()
        try:
            time.sleep(self.server.cfg.latency_s + hang)
        finally:
            self.server.leave()
        if status == 429 or status == 503:
            self._send(status, {"error": {"message": "slow down"}}, {"Retry-After": self.server.cfg.retry_after})
            return
        if status != 200:
            self._send(status, {"error": {"message": f"injected {status}"}})
            return
        if self.server.cfg.raw_body is not None:
            self._send(200, self.server.cfg.raw_body)
            return
        if _CJK.search(prompt):
            text = f"视频中是一个合成的测试场景。画面共有{n_images}帧，编号{digest}。"
        else:
            text = f"The video shows a synthetic test scene. It has {n_images} frames, tag {digest}."
        self._send(200, {
            "id": f"chatcmpl-{digest}", "object": "chat.completion", "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt.split()) + 64 * n_images, "completion_tokens": len(text.split()),
                      "total_tokens": len(prompt.split()) + 64 * n_images + len(text.split())},
        })


def _prompt_and_images(messages: list) -> tuple[str, int]:
    texts, n = [], 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        for part in content or []:
            if part.get("type") == "image_url":
                n += 1
            elif part.get("type") == "text":
                texts.append(part.get("text", ""))
    return "\n".join(texts), n


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False      # a hung request (timeout tests) must not hold up shutdown
    request_queue_size = 256

    def __init__(self, addr, cfg: FakeServerConfig) -> None:
        super().__init__(addr, _Handler)
        self.cfg = cfg
        self._lock = threading.Lock()
        self._count = 0
        self.inflight = 0
        self.max_inflight = 0
        self.stopping = threading.Event()   # set on shutdown: trickling answers stop at once

    def enter(self) -> None:
        with self._lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)

    def leave(self) -> None:
        with self._lock:
            self.inflight -= 1

    def next_status(self) -> tuple[int, float]:
        with self._lock:
            i = self._count
            self._count += 1
        if i < len(self.cfg.script):
            return self.cfg.script[i], 0.0
        hang = self.cfg.hang_s if i - len(self.cfg.script) < self.cfg.hang_first else 0.0
        return 200, hang

    def log(self, rec: dict) -> None:
        if not self.cfg.log_path:
            return
        with self._lock, open(self.cfg.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()


class FakeChatServer:
    """In-process server on 127.0.0.1 (a thread). ``url`` is the base URL to give the client."""

    def __init__(self, cfg: FakeServerConfig | None = None, port: int = 0) -> None:
        self._srv = _Server(("127.0.0.1", port), cfg or FakeServerConfig())
        self._thread = threading.Thread(target=self._srv.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._srv.server_address[1]}/v1"

    @property
    def requests(self) -> int:
        """Requests received so far (every attempt counts)."""
        return self._srv._count

    @property
    def max_inflight(self) -> int:
        """Most requests the server was handling at the same moment."""
        return self._srv.max_inflight

    def __enter__(self) -> FakeChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._srv.stopping.set()
        self._srv.shutdown()
        self._srv.server_close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    ap.add_argument("--script", default="", help="comma-separated statuses for the first requests, e.g. 429,500")
    ap.add_argument("--retry-after", default="1")
    ap.add_argument("--hang-first", type=int, default=0)
    ap.add_argument("--hang-s", type=float, default=0.0)
    ap.add_argument("--raw-body", default=None, help="send this text as every 200 answer's body")
    ap.add_argument("--trickle-s", type=float, default=0.0, help="send 200 answers one byte per this many seconds")
    ap.add_argument("--log", default=None, help="append one JSON line per request here")
    ap.add_argument("--port-file", default=None, help="write the bound port here once listening")
    a = ap.parse_args(argv)
    cfg = FakeServerConfig(script=[int(s) for s in a.script.split(",") if s.strip()], retry_after=a.retry_after,
                           latency_s=a.latency, hang_first=a.hang_first, hang_s=a.hang_s, log_path=a.log,
                           raw_body=a.raw_body, trickle_s=a.trickle_s)
    srv = _Server(("127.0.0.1", a.port), cfg)
    port = srv.server_address[1]
    if a.port_file:
        atomic_write(a.port_file, str(port), fsync=False)
    print(f"fake OpenAI-compatible server on http://127.0.0.1:{port}/v1", file=sys.stderr, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:  # pragma: no cover
        pass


if __name__ == "__main__":
    main()
