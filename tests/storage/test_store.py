"""Store: the same operations, atomic writes and listings on a local folder and on a real S3 server."""

from __future__ import annotations

import pickle

import pytest

from soraprep.storage import StorageError, Store, is_remote, parse_storage_options


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return Store(tmp_path / "root")
    return Store(request.getfixturevalue("s3_bucket") + "/runs/r1")


def test_write_read_list_delete(store, tmp_path):
    assert store.list() == {}
    store.write_bytes("a/b.bin", b"xyz")
    store.write_text("top.json", "{}")
    src = tmp_path / "local.bin"
    src.write_bytes(b"0123456789")
    store.put_file(src, "clips/c.mp4")
    assert store.list() == {"a/b.bin": 3, "clips/c.mp4": 10, "top.json": 2}
    assert store.list("clips") == {"clips/c.mp4": 10}
    assert store.read_bytes("a/b.bin") == b"xyz" and store.exists("top.json") and not store.exists("nope")
    assert store.size("clips/c.mp4") == 10
    with store.open("clips/c.mp4") as f:
        f.seek(5)
        assert f.read(2) == b"56"
    got = store.get_file("clips/c.mp4", tmp_path / "back" / "c.mp4")
    assert got.read_bytes() == b"0123456789"
    store.copy("a/b.bin", "a/copy.bin")
    assert store.read_bytes("a/copy.bin") == b"xyz"
    store.delete("a/b.bin")
    store.delete("a/b.bin")  # absent: no error
    assert "a/b.bin" not in store.list()
    store.delete_prefix("a")
    assert set(store.list()) == {"clips/c.mp4", "top.json"}


def test_keys_cannot_leave_the_root(store):
    with pytest.raises(ValueError, match="leaves the store root"):
        store.write_bytes("../escape", b"x")


def test_pickles_without_its_filesystem(store):
    store.write_bytes("k", b"v")
    clone = pickle.loads(pickle.dumps(store))
    assert clone == store and clone.read_bytes("k") == b"v"


def test_urls_and_options():
    assert is_remote("s3://b/k") and is_remote("gs://b") and not is_remote("/tmp/x") and not is_remote("file:///x")
    assert Store("file:///tmp/x").root == "/tmp/x"
    assert parse_storage_options('{"anon": true}') == {"anon": True}
    with pytest.raises(StorageError, match="JSON object"):
        parse_storage_options("[1]")
    with pytest.raises(StorageError, match="JSON object"):
        parse_storage_options("{bad")


def test_local_copy_stages_remote_objects_and_passes_local_paths(store, tmp_path):
    from soraprep.storage import local_copy

    store.write_bytes("v/x.mp4", b"video")
    with local_copy(store.url("v/x.mp4"), scratch=tmp_path) as p:
        assert p.read_bytes() == b"video"
        staged = p
    if store.remote:
        assert not staged.exists()  # removed after the block
    else:
        assert staged == store.local_path("v/x.mp4") and staged.exists()
