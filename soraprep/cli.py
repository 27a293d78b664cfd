"""The ``soraprep`` command line: a thin Typer layer over the library API.

Exit codes: 0 every row fine · 1 some rows failed (recorded in the manifest) · 2 usage or recipe error.
Each part of soraprep adds its commands in its own section below; the work itself lives in the library.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

app = typer.Typer(
    name="soraprep",
    help="Prepare video-text data and models for Sora-style text-to-video training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

EXIT_OK, EXIT_ROWS_FAILED, EXIT_USAGE = 0, 1, 2


def fail_usage(message: str) -> None:
    """Report a usage/config error and exit with code 2."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(EXIT_USAGE)


# --- curation (issue: curation pipeline) ----------------------------------------------------------

# --- datasets: ingest / download -------------------------------------------------------------------

# --- captioning ------------------------------------------------------------------------------------

# --- compute estimation ----------------------------------------------------------------------------

# --- training / encoding / sampling ----------------------------------------------------------------


def main() -> None:
    """Entry point: Click's usage errors also exit with 2."""
    try:
        app(standalone_mode=True)
    except SystemExit as exc:  # pragma: no cover - passthrough
        sys.exit(exc.code)


if __name__ == "__main__":
    main()
