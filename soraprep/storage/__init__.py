"""Object storage: a run's inputs and outputs on S3, GCS or any fsspec URL, or a local folder (store.py)."""

from soraprep.storage.store import (
    StorageError,
    Store,
    is_remote,
    join,
    local_copy,
    parse_storage_options,
    split_url,
    url_scheme,
)

__all__ = ["Store", "StorageError", "is_remote", "join", "local_copy", "parse_storage_options", "split_url", "url_scheme"]
