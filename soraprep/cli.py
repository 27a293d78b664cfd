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

INGEST_DATASETS = ("panda70m", "webvid", "internvid", "msrvtt", "videoinstruct", "shot2story", "youku-mplug",
                   "folder")


def _print_counts(title: str, counts: dict[str, object], errors: dict[str, int]) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False)
    for key, value in counts.items():
        table.add_row(key, str(value))
    for kind, n in sorted(errors.items()):
        table.add_row(f"errors: {kind}", f"[red]{n}[/]")
    console.print(table)


@app.command()
def ingest(
    metadata: str = typer.Argument(..., metavar="METADATA_OR_DIR", help="Metadata file, or a folder of videos."),
    dataset: str = typer.Option(..., "--dataset", help="|".join(INGEST_DATASETS)),
    output: str = typer.Option(..., "-o", "--output", help="Manifest to write (.parquet)."),
    split: str | None = typer.Option(None, "--split", help="train|val|test: filter (MSR-VTT) or label the rows."),
    limit: int | None = typer.Option(None, "--limit", help="Keep the first N rows."),
    fps: str | None = typer.Option(None, "--fps", help="Frame rate where the format counts frames (Shot2Story)."),
) -> None:
    """Turn published dataset metadata (or a folder of videos) into a clip manifest, one row per clip.

    Example: soraprep ingest --dataset panda70m panda70m_validation.csv -o panda.parquet --limit 1000
    """
    from soraprep.datasets import MetadataError
    from soraprep.datasets import ingest as run_ingest

    if dataset not in INGEST_DATASETS:
        fail_usage(f"--dataset {dataset!r} is not one of {'|'.join(INGEST_DATASETS)}")
    try:
        report = run_ingest(dataset=dataset, path=metadata, out=output, split=split, limit=limit, fps=fps)
    except MetadataError as exc:
        fail_usage(str(exc))
    _print_counts(f"ingest {dataset}", {"rows read": report.records_read, "clips": report.clips,
                                        "filtered by --split": report.filtered_by_split,
                                        "stopped at --limit": report.limited, "manifest": report.output},
                  report.errors)
    raise typer.Exit(EXIT_ROWS_FAILED if report.num_errors else EXIT_OK)


@app.command()
def download(
    manifest: str = typer.Argument(..., metavar="MANIFEST", help="Manifest from `soraprep ingest`."),
    output: str = typer.Option(..., "-o", "--output", help="Output folder (videos/, clips/, manifest.parquet)."),
    concurrency: int = typer.Option(4, "--concurrency", help="Sources fetched and cut at once."),
    rate_limit: list[str] = typer.Option([], "--rate-limit", help="HOST=R/s, repeatable; *=R/s for every host."),
    cut: str = typer.Option("exact", "--cut", help="none|copy|keyframe|exact: how published spans are cut."),
) -> None:
    """Download what a manifest points to (http(s) with resume, YouTube via yt-dlp, local paths) and cut
    each published span into a clip; writes OUT/manifest.parquet.

    Example: soraprep download panda.parquet -o panda-clips --concurrency 8 --rate-limit www.youtube.com=0.5/s
    """
    from soraprep.datasets import MetadataError
    from soraprep.datasets.download import download as run_download
    from soraprep.datasets.fetch import parse_rate

    try:
        rates = dict(parse_rate(r) for r in rate_limit)
        report = run_download(manifest=manifest, out=output, concurrency=concurrency, rate_limits=rates, cut=cut)
    except (MetadataError, ValueError) as exc:
        fail_usage(str(exc))
    _print_counts("download", {"rows": report.rows, "sources": report.sources, "downloaded": report.downloaded,
                               "already complete": report.already_complete, "local files": report.local,
                               "clips cut": report.clips_cut, "clips already cut": report.clips_skipped,
                               "rows failed before download": report.upstream_errors,
                               "manifest": report.output}, report.errors)
    raise typer.Exit(EXIT_ROWS_FAILED if report.num_errors else EXIT_OK)


# --- captioning ------------------------------------------------------------------------------------


@app.command("caption")
def caption_cmd(
    manifest: str = typer.Argument(..., metavar="MANIFEST", help="Manifest to caption (.parquet or .jsonl)."),
    out: str | None = typer.Option(None, "-o", "--out", metavar="OUT_MANIFEST",
                                   help="Where to write the captioned manifest (default: in place)."),
    backend: str = typer.Option(..., "--backend", help="openai | transformers"),
    model: str = typer.Option(..., "--model", help="Served model name, or a local path / hub id (transformers)."),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"),
    frames: int | None = typer.Option(None, "--frames", help="Frames per clip (default: the model profile's)."),
    mode: str | None = typer.Option(None, "--mode", help="video | frames+summary (default: the model profile's)."),
    lang: str = typer.Option("en", "--lang", help="en | zh"),
    concurrency: int = typer.Option(8, "--concurrency", help="openai: requests in flight; transformers: batch size."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Ask again for rows whose captioning failed."),
) -> None:
    """Caption kept clips with a vision-language model; adds caption columns (and Open-Sora's `text`).

    Example: soraprep caption clips.parquet --backend openai --model Qwen/Qwen2-VL-7B-Instruct
    --base-url http://127.0.0.1:8000/v1 --frames 8 --concurrency 16
    """
    from rich.progress import Progress

    from soraprep.caption import CaptionSettings, caption_manifest
    from soraprep.caption.backends import BackendConfigError
    from soraprep.manifest import ManifestError

    settings = CaptionSettings(backend=backend, model=model, base_url=base_url, frames=frames, mode=mode, lang=lang,
                               concurrency=concurrency, retry_failed=retry_failed)
    try:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("captioning", total=None)
            summary = caption_manifest(manifest, out=out, settings=settings,
                                       progress=lambda done, total: bar.update(task, completed=done, total=total))
    except (BackendConfigError, ManifestError, ValueError) as exc:
        fail_usage(str(exc))
    s = summary
    _print_counts("caption", {
        "rows": s.rows, "eligible (keep, no error)": s.eligible, "captioned now": s.captioned,
        "from cache": s.cached, "kept from input": s.previous, "failed": s.failed, "requests": s.requests,
        "HTTP attempts": s.attempts, "tokens in / out": f"{s.tokens_in} / {s.tokens_out}",
        "seconds": f"{s.seconds:.2f}", "captions per second": f"{s.captions_per_s:.2f}",
        "manifest": out or manifest}, s.failures_by_kind)
    raise typer.Exit(EXIT_ROWS_FAILED if s.failed else EXIT_OK)

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
