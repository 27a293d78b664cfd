"""storage/files.py: the one temp namespace, atomic write, safe file name and confinement check."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest

from soraprep.stages import MAX_ERROR_MESSAGE, error_dict
from soraprep.storage.files import TMP_PREFIX, atomic_write, confined, safe_name, temp_path


def test_safe_name_keeps_safe_ids_and_hashes_the_rest():
    # ids that are already portable file names stay readable (curate's clips/<video_id>/<clip_id>.mp4)
    for name in ("v_0001-00003", "clip-0007.mp4", "a1b2c3d4-0000", "a.b-c_d"):
        assert safe_name(name) == name
    # case-sensitive ids never share a file on a case-insensitive file system (macOS, Windows)
    ids = ("dQw4w9WgXcQ", "dqw4w9wgxcq", "DQW4W9WGXCQ")
    assert len({safe_name(i).lower() for i in ids}) == 3
    assert safe_name("Megamind-0001").startswith("Megamind-0001-")
    assert safe_name("../../etc/passwd") == "etc_passwd-936d7c04"
    assert safe_name("../a b/ç") == "a_b_c-0361c8eb"              # NFKD: ç -> c
    assert safe_name("a/b") != safe_name("a_b") == "a_b"         # cleaning alone never merges two ids
    assert safe_name("_x") == "x-9a532fea"                        # no leading . _ - (no hidden files, no ..)
    assert re.fullmatch(r"[0-9a-f]{8}", safe_name(".."))          # nothing left: the hash alone
    assert len(safe_name("x" * 1000)) == 80 + 9 and len(safe_name("y" * 80)) == 80
    assert safe_name("bad\udcff") == safe_name("bad\udcff") != safe_name("bad")  # surrogates: no crash
    for name in ("..", "/abs/x", "a\x00b", "é" * 300, " ", "-"):
        out = safe_name(name)
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", out) and out not in (".", "..")


def test_confined_refuses_paths_that_leave_the_root(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    assert confined(root, "clips", "a.mp4") == root.resolve() / "clips" / "a.mp4"
    assert confined(root, "clips", ".done", "a.json").name == "a.json"
    for parts in (("../x",), ("clips", "..", "..", "x"), ("/etc/passwd",), (".",), ()):
        with pytest.raises(ValueError, match="refusing to write outside"):
            confined(root, *parts)
    (root / "link").symlink_to(tmp_path)  # a symlink inside OUT that leads out of it
    with pytest.raises(ValueError):
        confined(root, "link", "x.mp4")


def test_atomic_write_publishes_whole_files_or_nothing(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    assert atomic_write(target, b"\x00\x01") == target and target.read_bytes() == b"\x00\x01"
    atomic_write(target, "tëxt")
    assert target.read_text(encoding="utf-8") == "tëxt"
    atomic_write(target, lambda tmp: tmp.write_bytes(b"by a writer"), fsync=False)
    assert target.read_bytes() == b"by a writer"

    def boom(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, boom)
    assert target.read_bytes() == b"by a writer"             # the old file is untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]  # and no temp file is left


def test_temp_names_share_one_prefix_and_differ_per_thread(tmp_path):
    main = temp_path(tmp_path / "x.mp4")
    assert main.name == f"{TMP_PREFIX}{os.getpid()}-x.mp4" and main.parent == tmp_path
    other: list[Path] = []
    t = threading.Thread(target=lambda: other.append(temp_path(tmp_path / "x.mp4")))
    t.start()
    t.join()
    assert other[0] != main and other[0].name.startswith(f"{TMP_PREFIX}{os.getpid()}-")  # clean_partials(pid) finds it


def test_one_error_constructor():
    assert error_dict("cut", "copy_failed", ValueError("x")) == {"stage": "cut", "kind": "copy_failed", "message": "x"}
    assert len(error_dict("s", "k", "m" * 5000)["message"]) == MAX_ERROR_MESSAGE
