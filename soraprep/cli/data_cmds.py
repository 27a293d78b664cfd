"""Data commands: ``ingest``, ``download``, ``caption``."""

from __future__ import annotations

import typer
from rich.markup import escape

from soraprep.cli import (
    EXIT_OK,
    EXIT_ROWS_FAILED,
    _storage_options,
    app,
    check_out_dir,
    check_out_file,
    console,
    fail_usage,
    is_store_error,
)

INGEST_DATASETS = ("panda70m", "webvid", "internvid", "msrvtt", "videoinstruct", "shot2story", "youku-mplug",
                   "folder")


def _print_counts(title: str, counts: dict[str, object], errors: dict[str, int]) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False)
    for key, value in counts.items():
        table.add_row(escape(key), escape(str(value)))
    for kind, n in sorted(errors.items()):
        table.add_row(f"errors: {escape(str(kind))}", f"[red]{n}[/]")
    console.print(table)


@app.command()
def ingest(
    metadata: str = typer.Argument(..., metavar="METADATA_OR_DIR", help="Metadata file, or a folder of videos."),
    dataset: str = typer.Option(..., "--dataset", help="|".join(INGEST_DATASETS)),
    output: str = typer.Option(..., "-o", "--output", help="Manifest to write (.parquet)."),
    split: str | None = typer.Option(None, "--split", help="train|val|test: filter (MSR-VTT) or label the rows."),
    limit: int | None = typer.Option(None, "--limit", help="Keep the first N rows."),
    fps: str | None = typer.Option(None, "--fps", help="Frame rate where the format counts frames (Shot2Story)."),
    storage_options: str = typer.Option(None, "--storage-options", metavar="JSON",
                                        help="fsspec options when -o is a store URL (s3://, gs://...)."),
) -> None:
    """Turn published dataset metadata (or a folder of videos) into a clip manifest, one row per clip.

    -o may be a store URL (s3://bucket/manifests/panda.parquet): uploaded whole when complete.

    Example: soraprep ingest --dataset panda70m panda70m_validation.csv -o panda.parquet --limit 1000
    """
    from soraprep.datasets import MetadataError
    from soraprep.datasets import ingest as run_ingest
    from soraprep.datasets.registry import dataset_names
    from soraprep.storage import StorageError, is_remote, parse_storage_options

    if dataset not in dataset_names():  # the built-ins (INGEST_DATASETS, for --help) and any registered adapter
        fail_usage(f"--dataset {dataset!r} is not one of {'|'.join(dataset_names())}")
    if not is_remote(output):
        check_out_file(output)
    try:
        report = run_ingest(dataset=dataset, path=metadata, out=output, split=split, limit=limit, fps=fps,
                            storage_options=parse_storage_options(storage_options))
    except (MetadataError, StorageError) as exc:
        fail_usage(str(exc))
    except Exception as exc:  # the store cannot be reached or written (no bucket, no permission, disk full)
        if not is_store_error(exc):
            raise
        fail_usage(f"-o {output}: {type(exc).__name__}: {exc}")
    _print_counts(f"ingest {dataset}", {"rows read": report.records_read, "clips": report.clips,
                                        "filtered by --split": report.filtered_by_split,
                                        "stopped at --limit": report.limited, "manifest": report.output},
                  report.errors)
    from rich.markup import escape

    for message in report.examples:  # metadata text is not rich markup: print it as plain text
        console.print("[red]error row:[/]", escape(message), highlight=False)
    raise typer.Exit(EXIT_ROWS_FAILED if report.num_errors else EXIT_OK)


@app.command()
def download(
    manifest: str = typer.Argument(..., metavar="MANIFEST", help="Manifest from `soraprep ingest`."),
    output: str = typer.Option(..., "-o", "--output", help="Output folder (videos/, clips/, manifest.parquet)."),
    concurrency: int = typer.Option(4, "--concurrency", help="Sources fetched and cut at once."),
    rate_limit: list[str] = typer.Option([], "--rate-limit", help="HOST=R/s, repeatable; *=R/s for every host."),
    cut: str = typer.Option("exact", "--cut", help="none|copy|keyframe|exact: how published spans are cut."),
    stall_timeout: float = typer.Option(30.0, "--stall-timeout", metavar="S",
                                        help="Drop a connection that delivers under --min-speed for S seconds "
                                             "and resume it with Range from the bytes received."),
    min_speed: float = typer.Option(1024.0, "--min-speed", metavar="BYTES_PER_S",
                                    help="Slowest acceptable transfer, averaged over --stall-timeout."),
    file_deadline: float = typer.Option(3600.0, "--file-deadline", metavar="S",
                                        help="Give up on one file after S seconds, retries and waits included "
                                             "(0: no deadline); the partial file is kept for a rerun."),
    retries: int = typer.Option(5, "--retries", help="Retries of a transient failure (5xx, 429, reset, stall)."),
    storage_options: str = typer.Option(None, "--storage-options", metavar="JSON",
                                        help="fsspec options when MANIFEST or -o is a store URL (s3://, gs://...)."),
    scratch: str = typer.Option(None, "--scratch", metavar="DIR",
                                help="-o on a store: local working folder, kept for a resumable rerun "
                                     "(default: a temporary folder, emptied source by source)."),
) -> None:
    """Download what a manifest points to (http(s) with resume, YouTube via yt-dlp, local paths) and cut
    each published span into a clip; writes OUT/manifest.parquet.

    OUT may be a store URL (s3://bucket/panda): files are fetched and cut in local scratch, then uploaded.

    Example: soraprep download panda.parquet -o panda-clips --concurrency 8 --rate-limit www.youtube.com=0.5/s
    """
    from soraprep.datasets import MetadataError
    from soraprep.datasets.download import download as run_download
    from soraprep.datasets.fetch import parse_rate
    from soraprep.storage import is_remote, parse_storage_options

    if not is_remote(output):
        check_out_dir(output, "-o/--output")
    if scratch is not None:
        check_out_dir(scratch, "--scratch")
    if stall_timeout <= 0 or min_speed < 0 or file_deadline < 0 or retries < 0:
        fail_usage("--stall-timeout must be > 0, and --min-speed, --file-deadline and --retries >= 0 "
                   f"(got {stall_timeout}, {min_speed}, {file_deadline}, {retries})")
    fetch_options = {"stall_window_s": stall_timeout, "min_speed_bps": min_speed, "retries": retries,
                     "deadline_s": file_deadline or None}
    try:
        rates = dict(parse_rate(r) for r in rate_limit)
        report = run_download(manifest=manifest, out=output, concurrency=concurrency, rate_limits=rates, cut=cut,
                              fetch_options=fetch_options, storage_options=parse_storage_options(storage_options),
                              scratch=scratch)
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
    clip_timeout: float = typer.Option(300.0, "--clip-timeout", metavar="S",
                                       help="Most seconds a clip's request may take, all retries and back-offs "
                                            "included (openai backend; frames+summary: the frame requests, then "
                                            "the merge); past it the clip fails with kind `timeout`."),
    request_timeout: float | None = typer.Option(None, "--request-timeout", metavar="S",
                                                 help="Read timeout of one HTTP attempt (default 120)."),
    max_attempts: int | None = typer.Option(None, "--max-attempts", help="HTTP attempts per request (default 6)."),
    max_length: int | None = typer.Option(None, "--max-length", metavar="N",
                                          help="Longest caption: words (en) / characters (zh), default 300 / 600; "
                                               "longer ones are cut at the last sentence end that fits."),
    storage_options: str = typer.Option(None, "--storage-options", metavar="JSON",
                                        help="fsspec options when MANIFEST or -o is a store URL (s3://, gs://...)."),
    append_camera_motion: bool = typer.Option(False, "--append-camera-motion",
                                              help="Append the clip's camera motion to its caption, e.g. \" The "
                                                   "camera pans left.\" (from the camera_motion column; rows "
                                                   "without it are left as they are)."),
) -> None:
    """Caption kept clips with a vision-language model; adds caption columns (and Open-Sora's `text`).

    MANIFEST and -o may be store URLs (s3://bucket/runs/r1/manifest.parquet): each clip is staged to local
    scratch for frame reading and the captioned manifest is uploaded whole.

    Example: soraprep caption clips.parquet --backend openai --model Qwen/Qwen2-VL-7B-Instruct
    --base-url http://127.0.0.1:8000/v1 --frames 8 --concurrency 16
    """
    from rich.progress import Progress

    from soraprep.caption import CaptionSettings, caption_manifest
    from soraprep.caption.backends import BackendConfigError
    from soraprep.manifest import ManifestError
    from soraprep.storage import StorageError

    if clip_timeout <= 0 or (request_timeout is not None and request_timeout <= 0):
        fail_usage(f"--clip-timeout and --request-timeout must be > 0 seconds (got {clip_timeout}, {request_timeout})")
    if (max_attempts is not None and max_attempts < 1) or (max_length is not None and max_length < 1):
        fail_usage(f"--max-attempts and --max-length must be >= 1 (got {max_attempts}, {max_length})")
    options = {k: v for k, v in (("timeout_s", request_timeout), ("max_attempts", max_attempts)) if v is not None}
    settings = CaptionSettings(backend=backend, model=model, base_url=base_url, frames=frames, mode=mode, lang=lang,
                               concurrency=concurrency, retry_failed=retry_failed, clip_timeout_s=clip_timeout,
                               max_units=max_length, backend_options=options if backend == "openai" else {},
                               append_camera_motion=append_camera_motion,
                               storage_options=_storage_options(storage_options))
    try:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("captioning", total=None)
            summary = caption_manifest(manifest, out=out, settings=settings,
                                       progress=lambda done, total: bar.update(task, completed=done, total=total))
    except (BackendConfigError, ManifestError, StorageError, ValueError) as exc:
        fail_usage(str(exc))
    s = summary
    _print_counts("caption", {
        "rows": s.rows, "eligible (keep, no error)": s.eligible, "captioned now": s.captioned,
        "from cache": s.cached, "kept from input": s.previous, "failed": s.failed,
        "cut to --max-length": s.truncated, "requests": s.requests,
        "HTTP attempts": s.attempts, "tokens in / out": f"{s.tokens_in} / {s.tokens_out}",
        "seconds": f"{s.seconds:.2f}", "captions per second": f"{s.captions_per_s:.2f}",
        "manifest": out or manifest}, s.failures_by_kind)
    raise typer.Exit(EXIT_ROWS_FAILED if s.failed else EXIT_OK)

# --- compute estimation ----------------------------------------------------------------------------
