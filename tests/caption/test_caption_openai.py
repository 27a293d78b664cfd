"""The OpenAI-compatible client against a real HTTP server on 127.0.0.1: retries, Retry-After, timeouts,
non-retryable errors, bounded concurrency, payload shape."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from soraprep.caption.backends import BackendConfigError, VLMRequest, make_captioner
from soraprep.caption.backends import openai_compat as oc
from soraprep.caption.fake_server import FakeChatServer, FakeServerConfig

IMG = np.zeros((24, 32, 3), dtype=np.uint8)


@pytest.fixture
def sleeps(monkeypatch):
    """Record the client's back-off sleeps instead of waiting them out."""
    recorded: list[float] = []
    monkeypatch.setattr(oc, "_sleep", recorded.append)
    return recorded


def _client(url: str, **kw):
    return make_captioner("openai", model="fake-vlm", base_url=url, **kw)


def test_429_with_retry_after_then_500s_then_success(sleeps):
    cfg = FakeServerConfig(script=[429, 429, 500, 503], retry_after="7")
    with FakeChatServer(cfg) as srv:
        cap = _client(srv.url, backoff_base_s=0.5, backoff_max_s=60, seed=0)
        (reply,) = cap.generate([VLMRequest("describe", (IMG, IMG))])
        cap.close()
    assert reply.ok and reply.attempts == 5 and srv.requests == 5
    assert "2 frames" in reply.text
    assert reply.tokens_in == 1 + 64 * 2 and reply.tokens_out == len(reply.text.split())
    # Retry-After honoured exactly for 429 and 503; the 500 gets exponential back-off with jitter: attempt 3
    # -> d = 0.5 * 2**2 = 2.0, slept in [d/2, d]
    assert sleeps[0] == 7.0 and sleeps[1] == 7.0 and sleeps[3] == 7.0
    assert 1.0 <= sleeps[2] <= 2.0


def test_retry_after_is_capped_and_http_dates_parse(sleeps):
    assert oc.retry_after_seconds("120") == 120.0
    assert oc.retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 30) == 30.0
    assert oc.retry_after_seconds("soon") is None and oc.retry_after_seconds(None) is None
    with FakeChatServer(FakeServerConfig(script=[429], retry_after="3600")) as srv:
        cap = _client(srv.url, retry_after_max_s=5)
        assert cap.generate([VLMRequest("x")])[0].ok
        cap.close()
    assert sleeps == [5.0]


def test_exhausted_budget_reports_kind_and_attempts(sleeps):
    with FakeChatServer(FakeServerConfig(script=[500] * 10)) as srv:
        cap = _client(srv.url)                 # default budget: 6 attempts
        (reply,) = cap.generate([VLMRequest("x")])
        cap.close()
    assert not reply.ok and reply.text is None
    assert reply.error_kind == "server_error" and reply.attempts == 6 and srv.requests == 6
    assert "after 6 attempts" in reply.error_message
    # exponential: d = 1, 2, 4, 8, 16 -> each sleep in [d/2, d]
    assert len(sleeps) == 5 and all(2 ** k / 2 <= s <= 2 ** k for k, s in enumerate(sleeps))


def test_client_errors_are_not_retried(sleeps):
    with FakeChatServer(FakeServerConfig(script=[400, 401])) as srv:
        cap = _client(srv.url)
        r1, r2 = (cap.generate([VLMRequest("x")])[0] for _ in range(2))
        cap.close()
    assert (r1.error_kind, r1.attempts) == ("bad_request", 1)
    assert (r2.error_kind, r2.attempts) == ("auth", 1)
    assert srv.requests == 2 and sleeps == []


def test_timeout_is_retried(sleeps):
    with FakeChatServer(FakeServerConfig(hang_first=1, hang_s=1.0)) as srv:
        cap = _client(srv.url, timeout_s=0.2)
        (reply,) = cap.generate([VLMRequest("x")])
        cap.close()
    assert reply.ok and reply.attempts == 2 and len(sleeps) == 1
    with FakeChatServer(FakeServerConfig(hang_first=5, hang_s=0.6)) as srv:
        cap = _client(srv.url, timeout_s=0.2, max_attempts=2)
        (reply,) = cap.generate([VLMRequest("x")])
        cap.close()
    assert reply.error_kind == "timeout" and reply.attempts == 2


def test_connection_refused_is_a_connection_error(sleeps):
    with socket.socket() as s:      # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cap = _client(f"http://127.0.0.1:{port}/v1", max_attempts=3)
    (reply,) = cap.generate([VLMRequest("x")])
    cap.close()
    assert reply.error_kind == "connection_failed" and reply.attempts == 3 and len(sleeps) == 2


def test_bounded_concurrency_and_order(sleeps):
    with FakeChatServer(FakeServerConfig(latency_s=0.1)) as srv:
        cap = _client(srv.url, concurrency=3)
        reqs = [VLMRequest(f"prompt {i}", (IMG,) * (i % 3)) for i in range(12)]
        replies = cap.generate(reqs)
        cap.close()
    assert srv.requests == 12 and srv.max_inflight == 3
    assert [f"{i % 3} frames" in r.text for i, r in enumerate(replies)] == [True] * 12    # answers keep order


def test_payload_shape_and_api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    cap = _client("http://127.0.0.1:9/v1")
    body = cap.payload(VLMRequest("describe", (IMG, IMG), system="sys", max_new_tokens=77))
    assert cap._client.headers["authorization"] == "Bearer sk-test"
    cap.close()
    assert body["model"] == "fake-vlm" and body["max_tokens"] == 77 and body["stream"] is False
    assert body["messages"][0] == {"role": "system", "content": "sys"}
    parts = body["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,/9j/")   # JPEG magic
    json.dumps(body)


def test_urls_and_config_errors():
    assert oc.chat_url("http://h:8000") == "http://h:8000/v1/chat/completions"
    assert oc.chat_url("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    assert oc.chat_url("https://dashscope.aliyuncs.com/compatible-mode/v1") == \
        "https://dashscope.aliyuncs.com/compatible-mode/v1/chat/completions"
    with pytest.raises(BackendConfigError, match="http"):
        _client("localhost:8000")
    with pytest.raises(BackendConfigError, match="unknown caption backend"):
        make_captioner("gpt-sdk", model="x")


def test_oversized_answer_is_bad_response_without_retry(sleeps):
    body = json.dumps({"choices": [{"message": {"content": "x" * 5000}}]})
    with FakeChatServer(FakeServerConfig(raw_body=body)) as srv:
        cap = _client(srv.url, max_response_bytes=1000)
        (reply,) = cap.generate([VLMRequest("x")])
        cap.close()
    assert (reply.error_kind, reply.attempts, srv.requests) == ("bad_response", 1, 1) and sleeps == []


def test_content_that_is_not_text_is_bad_response(sleeps):
    body = json.dumps({"choices": [{"message": {"content": {"text": "a dict"}}}], "usage": None})
    with FakeChatServer(FakeServerConfig(raw_body=body)) as srv:
        cap = _client(srv.url)
        (reply,) = cap.generate([VLMRequest("x")])
        cap.close()
    assert reply.error_kind == "bad_response" and "not text" in reply.error_message
