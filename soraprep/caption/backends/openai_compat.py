"""OpenAI-compatible chat-completions backend: vLLM, SGLang, LMDeploy, Ollama, LM Studio, DashScope, ...

Frames travel as base64 JPEG data URLs inside one user message (``image_url`` parts, then the text).
Requests are non-streaming. At most ``concurrency`` requests are in flight at once (one semaphore shared
by every thread that calls :meth:`OpenAICompatCaptioner.generate`). A request that gets 429, 408, a 5xx, a
timeout or a connection error is retried up to ``max_attempts`` times in all, sleeping
``Retry-After`` when the server sends one (capped by ``retry_after_max_s``) and otherwise an exponential
back-off with jitter: ``d = min(backoff_max_s, backoff_base_s * 2**(attempt-1))``, sleep ``uniform(d/2, d)``.
Other 4xx answers (bad request, auth, unknown model) fail at once: repeating them cannot help.

A request may carry a budget (``VLMRequest.timeout_s``; the pipeline's ``--clip-timeout``), counted from
when this backend starts it (time queued behind other requests in the pipeline does not count): attempts,
back-offs and the wait for a free slot all end there, each attempt's timeouts are cut to the time left, and
the answer is read as a stream so a server that trickles bytes cannot hold it longer (kind ``timeout``).
Answers over ``max_response_bytes`` are refused (``bad_response``). A malformed ``usage`` field never costs
a valid caption: the token counts are then 0.

Error kinds (``VLMReply.error_kind``): ``timeout``, ``connection_failed``, ``rate_limited``,
``server_error``, ``bad_request``, ``auth``, ``not_found``, ``bad_response``, ``bad_image``.

The API key is read from the environment variable named by ``api_key_env`` (``OPENAI_API_KEY``); local
servers usually need none.
"""

from __future__ import annotations

import base64
import email.utils
import json
import os
import random
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

import numpy as np

from soraprep.caption.backends import BackendConfigError, VLMReply, VLMRequest

try:  # httpx is part of the `caption` extra
    import httpx
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the openai caption backend needs httpx: pip install 'soraprep[caption]'", name="httpx") from exc

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_RESPONSE_BYTES = 8 * 2**20   # a chat answer is a few KiB; anything this big is not one
_sleep = time.sleep   # indirection so tests can record back-off without waiting


def chat_url(base_url: str) -> str:
    """``http://host:8000`` -> ``http://host:8000/v1/chat/completions``; a URL with a path keeps it."""
    base = base_url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if urlparse(base).path in ("", "/"):
        base += "/v1"
    return base + "/chat/completions"


def encode_image(frame: np.ndarray, *, quality: int = 90) -> str:
    """RGB uint8 (H, W, 3) -> ``data:image/jpeg;base64,...``."""
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"could not JPEG-encode a frame of shape {frame.shape}")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Parse ``Retry-After``: delta-seconds or an HTTP date. None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _error_kind(status: int) -> str:
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    if status == 408:
        return "timeout"
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    return "bad_request"


class OpenAICompatCaptioner:
    """Caption through ``POST {base_url}/chat/completions``."""

    backend = "openai"

    def __init__(self, *, model: str, base_url: str = "http://127.0.0.1:8000/v1", api_key: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", concurrency: int = 8, timeout_s: float = 120.0,
                 connect_timeout_s: float = 10.0, max_attempts: int = 6, backoff_base_s: float = 1.0,
                 backoff_max_s: float = 60.0, retry_after_max_s: float = 300.0, jpeg_quality: int = 90,
                 extra_body: dict[str, Any] | None = None, seed: int | None = None,
                 max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        if not model:
            raise BackendConfigError("--model is required for the openai backend (the name the server serves)")
        if concurrency < 1 or max_attempts < 1:
            raise BackendConfigError(f"concurrency and max_attempts must be >= 1 (got {concurrency}, {max_attempts})")
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise BackendConfigError(f"timeouts must be > 0 s (got timeout_s={timeout_s}, "
                                     f"connect_timeout_s={connect_timeout_s})")
        if not base_url.startswith(("http://", "https://")):
            raise BackendConfigError(f"base URL must start with http:// or https:// (got {base_url!r})")
        self.model = model
        self.url = chat_url(base_url)
        self.parallelism = concurrency
        self.max_attempts = max_attempts
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.retry_after_max_s = retry_after_max_s
        self.jpeg_quality = jpeg_quality
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self.max_response_bytes = max_response_bytes
        self.extra_body = dict(extra_body or {})
        key = api_key if api_key is not None else os.environ.get(api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        # TCP_NODELAY: a request's headers and body are separate writes; without it the body's last segment
        # can wait for the server's delayed ACK (~40 ms per request on Linux)
        transport = httpx.HTTPTransport(limits=limits, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        self._client = httpx.Client(headers=headers, transport=transport,
                                    timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s))
        self._slots = threading.Semaphore(concurrency)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="caption-http")
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()

    # -- public --------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[VLMRequest]) -> list[VLMReply]:
        if len(requests) == 1:
            return [self._request(requests[0])]
        return list(self._pool.map(self._request, requests))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()

    def __getstate__(self) -> dict[str, Any]:  # pragma: no cover - clients are rebuilt per worker
        raise TypeError("OpenAICompatCaptioner is not picklable: build it inside the worker (Stage.setup)")

    # -- one request ---------------------------------------------------------------------------------
    def payload(self, req: VLMRequest) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if req.system:
            messages.append({"role": "system", "content": req.system})
        if req.images:
            content: Any = [{"type": "image_url", "image_url": {"url": encode_image(im, quality=self.jpeg_quality)}}
                            for im in req.images]
            content.append({"type": "text", "text": req.prompt})
        else:
            content = req.prompt
        messages.append({"role": "user", "content": content})
        body = {"model": self.model, "messages": messages, "max_tokens": req.max_new_tokens,
                "temperature": req.temperature, "stream": False}
        body.update(self.extra_body)
        return body

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_after_max_s)
        d = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        with self._rng_lock:
            return self._rng.uniform(d / 2, d)

    def _request(self, req: VLMRequest) -> VLMReply:
        t0 = time.perf_counter()
        try:
            body = self.payload(req)
        except ValueError as exc:
            return VLMReply(None, error_kind="bad_image", error_message=str(exc))
        deadline = time.monotonic() + req.timeout_s if req.timeout_s is not None else float("inf")
        kind, message = "connection_failed", ""
        attempt = 0
        while attempt < self.max_attempts:
            left = deadline - time.monotonic()
            # bounded concurrency: only in-flight HTTP requests hold a slot; the wait for one counts too
            if left <= 0 or not self._slots.acquire(timeout=min(left, threading.TIMEOUT_MAX)):
                kind, message = "timeout", f"the {req.timeout_s:g} s clip timeout passed" + (f" (last: {message})" if message else
                                                                         " before a request slot was free")
                break
            attempt += 1
            try:
                status, headers, data = self._post(body, deadline)
            except _AttemptFailed as exc:
                status, headers, data = None, None, b""
                kind, message = exc.kind, exc.message
            finally:
                self._slots.release()
            if kind == "bad_response" and status is None:
                break  # an answer over max_response_bytes: asking again brings the same
            retry_after = None
            if status is not None:
                if status == 200:
                    return self._parse(data, attempt, time.perf_counter() - t0)
                kind = _error_kind(status)
                message = f"HTTP {status}: {data[:500].decode('utf-8', 'replace')}"
                if status not in RETRY_STATUS:
                    break
                retry_after = retry_after_seconds(headers.get("retry-after"))
            if attempt < self.max_attempts:
                pause = self._backoff(attempt, retry_after)
                if time.monotonic() + pause >= deadline:
                    message += "; the clip timeout leaves no time for another attempt"
                    break
                _sleep(pause)
        plural = "s" if attempt != 1 else ""
        return VLMReply(None, latency_s=time.perf_counter() - t0, attempts=attempt, error_kind=kind,
                        error_message=f"{message} (after {attempt} attempt{plural})")

    def _post(self, body: dict[str, Any], deadline: float) -> tuple[int, httpx.Headers, bytes]:
        """One attempt: (status, headers, body), read as a stream so the deadline holds while bytes trickle."""
        left = deadline - time.monotonic()
        timeout = httpx.Timeout(min(self.timeout_s, left), connect=min(self.connect_timeout_s, left))
        try:
            with self._client.stream("POST", self.url, json=body, timeout=timeout) as resp:
                chunks, size = [], 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > self.max_response_bytes:
                        raise _AttemptFailed("bad_response", f"answer over {self.max_response_bytes} bytes: refused")
                    if time.monotonic() > deadline:
                        raise _AttemptFailed("timeout", f"the clip timeout passed while the answer arrived "
                                                        f"({size} bytes so far)")
                    chunks.append(chunk)
                return resp.status_code, resp.headers, b"".join(chunks)
        except httpx.TimeoutException as exc:
            raise _AttemptFailed("timeout", f"no answer within {min(self.timeout_s, left):.1f} s "
                                            f"({type(exc).__name__})") from None
        except httpx.TransportError as exc:  # refused, reset, closed mid-response
            raise _AttemptFailed("connection_failed", f"{type(exc).__name__}: {exc}") from None

    @staticmethod
    def _parse(data: bytes, attempts: int, latency: float) -> VLMReply:
        def bad(why: str) -> VLMReply:
            return VLMReply(None, latency_s=latency, attempts=attempts, error_kind="bad_response",
                            error_message=f"{why}: {data[:300].decode('utf-8', 'replace')}")

        try:
            body = json.loads(data)
            content = body["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return bad(f"unexpected response ({type(exc).__name__})")
        if isinstance(content, list):  # some servers return content parts
            content = "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
        if content is not None and not isinstance(content, str):
            return bad(f"message content is a {type(content).__name__}, not text")
        usage = body.get("usage") if isinstance(body, dict) else None
        return VLMReply(content or "", tokens_in=_token_count(usage, "prompt_tokens"),
                        tokens_out=_token_count(usage, "completion_tokens"), latency_s=latency, attempts=attempts)


def _token_count(usage: Any, key: str) -> int:
    """A usage count as a non-negative int; 0 when the field is missing or malformed (the caption is kept)."""
    if not isinstance(usage, dict):
        return 0
    value = usage.get(key)
    if isinstance(value, bool):
        return 0
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    return n if 0 <= n < 2**62 else 0


class _AttemptFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message
