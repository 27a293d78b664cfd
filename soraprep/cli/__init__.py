"""The ``soraprep`` command line: a thin Typer layer over the library API.

Exit codes: 0 every row fine · 1 some rows failed (recorded in the manifest) · 2 usage or recipe error.
The app, its exit codes and shared checks live here; each part of soraprep adds its commands in its own
module (curate_cmds, data_cmds, model_cmds); the work itself lives in the library.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    name="soraprep",
    help="Prepare video-text data and models for Sora-style text-to-video training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is plain text: "pip install 'soraprep[ray]'" must keep its [ray]
)
console = Console(stderr=True)

EXIT_OK, EXIT_ROWS_FAILED, EXIT_USAGE = 0, 1, 2


def fail_usage(message: str) -> None:
    """Report a usage/config error and exit with code 2 (the message is text, never rich markup)."""
    console.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_USAGE)


def require_torch(command: str) -> None:
    """Exit 2 with an install hint when PyTorch cannot be imported (encode, train and sample need it)."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        fail_usage(f"soraprep {command} needs PyTorch, which cannot be imported here ({exc}): "
                   "pip install torch (CPU-only: pip install torch --index-url https://download.pytorch.org/whl/cpu)")


def check_out_dir(out: str, flag: str = "-o/--out") -> None:
    """Fail with exit 2 when ``out`` (an output folder, created if missing) is a file or lies under one."""
    from pathlib import Path

    p = Path(out)
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                where = "is a file" if q == p else f"lies under {q}, which is a file"
                fail_usage(f"{flag} {out} {where}: give a folder (it is created if missing)")
            return


def _storage_options(text: str | None) -> dict:
    """``--storage-options JSON`` -> dict, exit 2 with the fix when it is not a JSON object."""
    from soraprep.storage import StorageError, parse_storage_options

    try:
        return parse_storage_options(text)
    except StorageError as exc:
        fail_usage(str(exc))


#: packages whose exceptions mean "the store cannot be reached or refuses" (endpoint, credentials, bucket)
_STORE_ERROR_MODULES = {"botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "google", "fsspec"}


def is_store_error(exc: BaseException) -> bool:
    """An OSError, or an exception raised by an object-store client (unreachable endpoint, bad credentials)."""
    return isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in _STORE_ERROR_MODULES


def check_out_file(out: str, flag: str = "-o/--output") -> None:
    """Fail with exit 2 when ``out`` (an output file) is a folder or lies under a file."""
    from pathlib import Path

    p = Path(out)
    if p.is_dir():
        fail_usage(f"{flag} {out} is a folder: give a file name")
    check_out_dir(str(p.parent), flag)


# --- curation (issue: curation pipeline) ----------------------------------------------------------


# the commands register themselves on ``app`` (imported after the helpers above, which they use)
from soraprep.cli import curate_cmds, data_cmds, model_cmds  # noqa: E402,F401


def main() -> None:
    """Entry point: Click's usage errors also exit with 2."""
    try:
        app(standalone_mode=True)
    except SystemExit as exc:  # pragma: no cover - passthrough
        sys.exit(exc.code)


if __name__ == "__main__":
    main()
