"""The HTTP downloader against a real server on 127.0.0.1: 404, 429 + Retry-After, 503 backoff,
connections dropped mid-file (resumed with Range), servers that ignore Range, HTML error pages,
size limits, refused redirects, per-host rate limits and skipping complete files."""

from __future__ import annotations

from email.utils import formatdate
from fractions import Fraction

import pytest
from ds_server import FakeClock, VideoServer

from soraprep.datasets.fetch import FetchError, HttpFetcher, RateLimiter, parse_rate, parse_retry_after
from soraprep.video.synth import Shot, make_video


@pytest.fixture(scope="module")
def video_bytes(tmp_path_factory) -> bytes:
    p = tmp_path_factory.mktemp("v") / "v.mp4"
    make_video(p, [Shot(30, seed=1), Shot(30, seed=2)], fps=Fraction(25), width=160, height=120)
    data = p.read_bytes()
    assert len(data) > 3000
    return data


@pytest.fixture()
def server(video_bytes):
    with VideoServer() as s:
        s.files["/v.mp4"] = video_bytes
        yield s


def fetcher(clock: FakeClock, **kw) -> HttpFetcher:
    return HttpFetcher(limiter=RateLimiter(kw.pop("rates", None), clock=clock.time, sleep=clock.sleep),
                       timeout_s=10, **kw)


def test_plain_download_and_skip_when_complete(server, video_bytes, tmp_path):
    clock = FakeClock()
    f = fetcher(clock)
    res = f.fetch(server.url("/v.mp4"), tmp_path / "a.mp4")
    assert res.path.read_bytes() == video_bytes and res.attempts == 1 and not res.resumed
    assert not (tmp_path / "a.mp4.part").exists()
    again = f.fetch(server.url("/v.mp4"), tmp_path / "a.mp4")
    assert again.skipped and len(server.log) == 1  # no second request


def test_404_fails_at_once(server, tmp_path):
    with pytest.raises(FetchError) as exc:
        fetcher(FakeClock()).fetch(server.url("/missing.mp4"), tmp_path / "m.mp4")
    assert exc.value.kind == "http_404"
    assert len(server.requests("/missing.mp4")) == 1
    assert list(tmp_path.iterdir()) == []


def test_429_waits_for_retry_after(server, video_bytes, tmp_path):
    server.actions["/v.mp4"] = [("429", 7), ("429", 3)]
    clock = FakeClock()
    res = fetcher(clock).fetch(server.url("/v.mp4"), tmp_path / "a.mp4")
    assert res.path.read_bytes() == video_bytes and res.attempts == 3
    assert clock.sleeps == [7.0, 3.0]  # exactly what the server asked, no extra backoff


def test_503_backs_off_exponentially_then_gives_up(server, tmp_path):
    server.actions["/v.mp4"] = [("503", None)] * 10
    clock = FakeClock()
    with pytest.raises(FetchError) as exc:
        fetcher(clock, retries=3, backoff_s=0.5).fetch(server.url("/v.mp4"), tmp_path / "a.mp4")
    assert exc.value.kind == "http_503"
    assert clock.sleeps == [0.5, 1.0, 2.0] and len(server.log) == 4


def test_retry_after_too_long_is_an_error(server, tmp_path):
    server.actions["/v.mp4"] = [("429", 100000)]
    with pytest.raises(FetchError, match="asks to wait"):
        fetcher(FakeClock()).fetch(server.url("/v.mp4"), tmp_path / "a.mp4")


def test_dropped_connection_resumes_with_range(server, video_bytes, tmp_path):
    cut1, cut2 = len(video_bytes) // 3, len(video_bytes) // 4
    server.actions["/v.mp4"] = [("drop", cut1), ("drop", cut2)]
    res = fetcher(FakeClock()).fetch(server.url("/v.mp4"), tmp_path / "a.mp4")
    assert res.path.read_bytes() == video_bytes
    assert res.resumed and res.attempts == 3
    assert server.requests("/v.mp4") == [None, f"bytes={cut1}-", f"bytes={cut1 + cut2}-"]


def test_server_ignoring_range_restarts_cleanly(server, video_bytes, tmp_path):
    server.actions["/v.mp4"] = [("drop", 1000), "norange"]
    res = fetcher(FakeClock()).fetch(server.url("/v.mp4"), tmp_path / "a.mp4")
    assert res.path.read_bytes() == video_bytes  # 200 to a Range request: the file is rewritten, not appended
    assert not res.resumed
    assert server.requests("/v.mp4") == [None, "bytes=1000-"]


def test_leftover_complete_part_file_is_finished_by_416(server, video_bytes, tmp_path):
    (tmp_path / "a.mp4.part").write_bytes(video_bytes)
    res = fetcher(FakeClock()).fetch(server.url("/v.mp4"), tmp_path / "a.mp4")
    assert res.path.read_bytes() == video_bytes
    assert server.requests("/v.mp4") == [f"bytes={len(video_bytes)}-"]


def test_html_page_and_non_video_bytes_are_refused(server, tmp_path):
    server.actions["/v.mp4"] = ["html"]
    with pytest.raises(FetchError) as exc:
        fetcher(FakeClock()).fetch(server.url("/v.mp4"), tmp_path / "a.mp4")
    assert exc.value.kind == "bad_content_type"
    server.files["/junk.bin"] = b"\x00" * 5000
    server.actions["/junk.bin"] = ["octet"]
    with pytest.raises(FetchError) as exc:
        fetcher(FakeClock()).fetch(server.url("/junk.bin"), tmp_path / "b.mp4")
    assert exc.value.kind == "not_video"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_size_limit(server, video_bytes, tmp_path):
    with pytest.raises(FetchError) as exc:
        fetcher(FakeClock(), max_bytes=len(video_bytes) - 1).fetch(server.url("/v.mp4"), tmp_path / "a.mp4")
    assert exc.value.kind == "too_large"


def test_redirects_only_to_http(server, video_bytes, tmp_path):
    server.actions["/r1"] = [("redirect", "ftp://127.0.0.1/v.mp4")]
    with pytest.raises(FetchError) as exc:
        fetcher(FakeClock()).fetch(server.url("/r1"), tmp_path / "a.mp4")
    assert exc.value.kind == "unsupported_scheme"
    server.actions["/r2"] = [("redirect", server.url("/v.mp4"))]
    assert fetcher(FakeClock()).fetch(server.url("/r2"), tmp_path / "b.mp4").path.read_bytes() == video_bytes
    for bad in ("ftp://127.0.0.1/v.mp4", "file:///etc/passwd", "javascript:alert(1)"):
        with pytest.raises(FetchError) as exc:
            fetcher(FakeClock()).fetch(bad, tmp_path / "c.mp4")
        assert exc.value.kind == "unsupported_scheme"


def test_per_host_rate_limit(server, tmp_path):
    clock = FakeClock()
    f = fetcher(clock, rates={"127.0.0.1": 2.0})
    for i in range(3):
        f.fetch(server.url("/v.mp4"), tmp_path / f"{i}.mp4")
    assert clock.sleeps == [0.5, 0.5]  # 2 requests/s: the 2nd and 3rd wait half a second each
    lim = RateLimiter({"*": 4.0}, clock=clock.time, sleep=clock.sleep)
    assert lim.rate_for("anything.example") == 4.0


def test_parsers_of_options():
    assert parse_rate("Example.com=2/s") == ("example.com", 2.0)
    assert parse_rate("*=0.5") == ("*", 0.5)
    for bad in ("example.com", "example.com=0/s", "=3", "a=b"):
        with pytest.raises(ValueError):
            parse_rate(bad)
    assert parse_retry_after("120", 0.0) == 120.0
    assert parse_retry_after(formatdate(1_000_030, usegmt=True), 1_000_000.0) == 30.0
    assert parse_retry_after("soon", 0.0) is None and parse_retry_after(None, 0.0) is None


def test_resume_uses_if_range_and_never_splices_a_changed_file(server, video_bytes, tmp_path):
    server.etags["/v.mp4"] = '"v1"'
    cut = len(video_bytes) // 3
    server.actions["/v.mp4"] = [("drop", cut)]
    res = fetcher(FakeClock()).fetch(server.url("/v.mp4"), tmp_path / "a.mp4")
    assert res.path.read_bytes() == video_bytes and res.resumed
    assert server.if_ranges == [None, '"v1"']
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]  # no .part / .validator left behind
    # the file changes on the server between the dropped attempt and the resume
    new = video_bytes[:4000] + bytes(reversed(video_bytes[4000:]))
    server.actions["/v.mp4"] = [("drop", cut, new, '"v2"')]
    res = fetcher(FakeClock()).fetch(server.url("/v.mp4"), tmp_path / "b.mp4")
    assert res.path.read_bytes() == new and not res.resumed  # the whole new version, not old head + new tail
    assert server.requests("/v.mp4")[-2:] == [None, f"bytes={cut}-"] and server.if_ranges[-1] == '"v1"'
