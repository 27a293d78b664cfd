"""Shared fixtures: generated videos with known ground truth and the real legacy samples in tests/data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from media_library import MEDIA

from soraprep.video.synth import make_video

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    """A small library of generated videos; ground truth in ``media_library.MEDIA``."""
    root = tmp_path_factory.mktemp("media")
    out = {}
    for name, (shots, kw) in MEDIA.items():
        out[name] = root / name
        make_video(out[name], shots, **kw)
    for real in ("tree.avi", "cityCC0.mpg"):
        out[real] = root / real
        shutil.copy(DATA / "videos" / real, out[real])
    return out




@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto in server mode) on 127.0.0.1, reached through the real S3 client
    stack (s3fs -> aiobotocore -> HTTP). Yields its endpoint URL; the standard AWS environment variables
    point at it for the whole session, so ``s3://`` URLs work with no options, as for a user."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    import os
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh, empty bucket on the test S3 server: its ``s3://`` URL."""
    import re
    import uuid

    import s3fs

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:8]
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(name)
    return f"s3://{name}"
