"""append_camera_motion: the clip's camera_motion class appended to its caption (library, stage and CLI)."""

from __future__ import annotations

from typer.testing import CliRunner

from soraprep.caption import CaptionSettings, caption_manifest
from soraprep.caption.clean import with_camera_motion
from soraprep.caption.fake_server import FakeChatServer
from soraprep.caption.stage import CaptionStage
from soraprep.cli import app
from soraprep.manifest import read_manifest, write_manifest

LABELS = ["pan_left", "zoom_in", None, "not-a-class"]


def _settings(url: str, **kw) -> CaptionSettings:
    return CaptionSettings(backend="openai", model="fake-vlm", base_url=url, frames=2, concurrency=2,
                           backend_options={"backoff_base_s": 0.01, "max_attempts": 3}, **kw)


def _manifest(tmp_path, clips):
    rows = clips(tmp_path, n=4)
    for r, label in zip(rows, LABELS):
        r["camera_motion"] = label
    path = tmp_path / "manifest.parquet"
    write_manifest(path, rows)
    return path


def test_a_sentence_for_every_camera_class():
    from soraprep.caption.clean import CAMERA_PHRASES
    from soraprep.curate.score.camera import CAMERA_CLASSES

    assert set(CAMERA_PHRASES) == set(CAMERA_CLASSES)


def test_with_camera_motion():
    assert with_camera_motion("A dog runs.", "pan_left") == "A dog runs. The camera pans left."
    assert with_camera_motion("A dog runs.", "static") == "A dog runs. The camera is static."
    assert with_camera_motion("A dog runs.", None) == "A dog runs."
    assert with_camera_motion("A dog runs.", "sideways") == "A dog runs."


def test_append_camera_motion_from_the_column(tmp_path, clips):
    path = _manifest(tmp_path, clips)
    with FakeChatServer() as srv:
        caption_manifest(path, settings=_settings(srv.url))
    plain = {r["clip_id"]: r["caption"] for r in read_manifest(path)}
    with FakeChatServer() as srv:      # a cleaning option: cached answers, no new request
        s = caption_manifest(path, settings=_settings(srv.url, append_camera_motion=True, score_text=True))
        assert srv.requests == 0 and s.cached == 4
    rows = {r["clip_id"]: r for r in read_manifest(path)}
    a, b, c, d = (rows[f"v{k}-0000"] for k in range(4))
    assert a["caption"] == plain["v0-0000"] + " The camera pans left. fps: 25."   # camera, then score text
    assert b["caption"].endswith(" The camera zooms in. fps: 25.") and b["text"] == b["caption"]
    assert c["caption"] == plain["v2-0000"] + " fps: 25." and d["caption"] == plain["v3-0000"] + " fps: 25."
    with FakeChatServer() as srv:      # off again: the plain captions come back
        caption_manifest(path, settings=_settings(srv.url))
    assert {r["clip_id"]: r["caption"] for r in read_manifest(path)} == plain


def test_cli_flag_and_stage_key(tmp_path, clips):
    path = _manifest(tmp_path, clips)
    out = tmp_path / "cli.parquet"
    with FakeChatServer() as srv:
        r = CliRunner().invoke(app, ["caption", str(path), "-o", str(out), "--backend", "openai", "--model",
                                     "fake-vlm", "--base-url", srv.url, "--frames", "2", "--append-camera-motion"])
        assert r.exit_code == 0, r.output
    rows = {r["clip_id"]: r for r in read_manifest(out)}
    assert rows["v0-0000"]["caption"].endswith(" The camera pans left.")
    assert not rows["v2-0000"]["caption"].endswith("camera pans left.")
    stage = CaptionStage(model="fake-vlm", base_url="http://127.0.0.1:1/v1", append_camera_motion=True,
                         out_dir=str(tmp_path))
    assert stage.settings.append_camera_motion is True
