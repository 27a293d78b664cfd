"""The ``soraprep`` command line: a thin Typer layer over the library API.

Exit codes: 0 every row fine · 1 some rows failed (recorded in the manifest) · 2 usage or recipe error.
Each part of soraprep adds its commands in its own section below; the work itself lives in the library.
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

CURATE_HELP = """Turn raw videos into training-ready clips, a manifest and a report.

INPUTS are video files, folders (searched recursively) or manifests (.parquet/.jsonl, e.g. from
`soraprep ingest`) whose rows name a `source` and optional `start_s`/`end_s` spans. Curation reads
local files and object stores: INPUTS and OUT may be s3://, gs:// or other fsspec URLs (credentials from
the standard environment, e.g. AWS_ENDPOINT_URL, or --storage-options); fetch http(s) URLs with
`soraprep download` first. Anything unusable becomes a row with an error.

Writes OUT/manifest.parquet (+ manifest.jsonl), OUT/clips/, OUT/report.html. Rerunning the same command
resumes an interrupted run. Rerunning with another recipe or --cut redoes what changed: new filter, cut or
bucket settings are applied without decoding; new analysis settings (analyze, split, scorers) stop with
exit 2 unless --force. Exit code: 0 all rows fine, 1 some rows failed (see the `error` column),
2 usage or recipe error.

A recipe file overrides only the keys it names on top of the default recipe (or of `base: opensora-like`,
`base: none`); `filter: {motion_score: null}` removes a default rule. See docs/curation.md.

\b
Examples:
  soraprep curate videos/ -o out --workers 2
  soraprep curate panda70m.parquet -o out --recipe opensora-like --cut exact
  soraprep curate s3://bucket/videos/ -o s3://bucket/runs/r1 --workers 8
  soraprep curate --rethreshold out --recipe strict.yaml     # new thresholds, no decoding
"""


@app.command("curate", help=CURATE_HELP)
def curate_cmd(
    inputs: list[str] = typer.Argument(None, help="Video files, folders or manifests (paths or store URLs)."),
    out: str = typer.Option(None, "--out", "-o", help="Output folder or store URL (s3://bucket/runs/r1)."),
    recipe: str = typer.Option(None, "--recipe", "-r",
                               help="Built-in recipe (default, opensora-like), or a YAML file whose keys "
                                    "override the default's (null removes a filter rule)."),
    workers: int = typer.Option(1, "--workers", "-w", min=1,
                                help="Worker processes (one video each). With --runner ray: analysis actors "
                                     "(decoding, one video each; decision actors: half as many) unless the "
                                     "recipe's resources: section sets concurrency."),
    cut: str = typer.Option(None, "--cut", help="none | copy | keyframe | exact (default from the recipe: copy)."),
    rethreshold: str = typer.Option(None, "--rethreshold", metavar="OUT",
                                    help="Re-apply filters of --recipe to a finished run in OUT; no decoding."),
    force: bool = typer.Option(False, "--force",
                               help="OUT was curated with other analysis settings (analyze, split, scorers): "
                                    "re-analyse those videos instead of stopping (exit 2)."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip report.html."),
    no_single_file: bool = typer.Option(
        False, "--no-single-file",
        help="Write the manifest only as the OUT/manifest/ Parquet dataset (parts + _index.json), without the "
             "single-file copies OUT/manifest.parquet and OUT/manifest.jsonl (big runs)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    runner: str = typer.Option("local", "--runner", help="local (supervised worker processes) | ray (Ray Data; pip install 'soraprep[ray]')."),
    ray_address: str = typer.Option(None, "--ray-address", help="Ray cluster address (e.g. auto); default: start a local Ray."),
    max_worker_memory: str = typer.Option(
        "auto", "--max-worker-memory", metavar="SIZE",
        help="Memory bound per worker process, e.g. 4GiB, 512MiB; auto: 80% of this machine's memory shared by "
             "the workers; 0: none. A worker over it is stopped and its video becomes an error row (out_of_memory)."),
    unit_timeout: float = typer.Option(
        None, "--unit-timeout", metavar="SECONDS", min=0.001,
        help="Time limit per video (default: none). A video over it is stopped and becomes an error row (timeout)."),
    storage_options: str = typer.Option(
        None, "--storage-options", metavar="JSON",
        help="Options for object-store inputs and OUT (s3://, gs://, any fsspec URL), as a JSON object or a "
             "JSON file, e.g. '{\"endpoint_url\": \"http://127.0.0.1:9000\"}'; credentials also come from the "
             "standard environment (AWS_ENDPOINT_URL, AWS_PROFILE, ...)."),
) -> None:
    from soraprep.curate.inputs import InputError
    from soraprep.curate.lock import OutInUseError
    from soraprep.curate.pipeline import curate
    from soraprep.curate.pipeline import rethreshold as rethreshold_run
    from soraprep.curate.recipe import RecipeError
    from soraprep.curate.runners.local import StageSetupError
    from soraprep.curate.runners.supervisor import parse_size
    from soraprep.manifest import ManifestError
    from soraprep.storage import StorageError, is_remote
    from soraprep.video.cut import CUT_MODES

    if cut is not None and cut not in CUT_MODES:
        fail_usage(f"--cut must be one of {', '.join(CUT_MODES)}, got {cut!r}")
    options = _storage_options(storage_options)
    try:
        parse_size(max_worker_memory)
    except ValueError as exc:
        fail_usage(f"--max-worker-memory: {exc}")
    try:
        if rethreshold:
            if inputs:
                fail_usage("--rethreshold OUT takes no INPUTS: it re-filters the manifest in OUT")
            if is_remote(rethreshold):
                fail_usage(f"--rethreshold {rethreshold}: a run on object storage is re-decided by rerunning "
                           "`soraprep curate` on the same inputs into it with the new --recipe (no decoding)")
            result = rethreshold_run(rethreshold, recipe=recipe, cut=cut, report=not no_report,
                                     single_file=not no_single_file)
        else:
            if not out:
                fail_usage("missing --out/-o OUT (the output folder)")
            if not is_remote(out):
                check_out_dir(out)
            if not inputs:
                fail_usage("give at least one video file, folder or manifest")
            if runner not in ("local", "ray"):
                fail_usage(f"--runner must be local or ray, got {runner!r}")
            if runner == "ray":
                try:
                    import ray.data  # noqa: F401
                except ImportError as exc:
                    fail_usage(f"--runner ray needs Ray, which cannot be imported here ({exc}): "
                               "pip install 'soraprep[ray]' (or use --runner local)")
            result = curate(inputs, out, recipe=recipe, workers=workers, cut=cut, progress=not quiet,
                            report=not no_report, runner=runner, ray_address=ray_address, force=force,
                            max_worker_memory=max_worker_memory, unit_timeout_s=unit_timeout,
                            storage_options=options, single_file=not no_single_file)
    except (RecipeError, InputError, ManifestError, StageSetupError, OutInUseError, StorageError) as exc:
        fail_usage(str(exc))
    _print_curate_summary(result, report_wanted=not no_report)
    raise typer.Exit(result.exit_code)


def _print_curate_summary(result, report_wanted: bool) -> None:
    """Counts (the same as the report's), then each error kind with its count and one example message."""
    s = result.summary  # streamed from the manifest: the same counts as the report's
    console.print(f"[green]{s.rows} {'row' if s.rows == 1 else 'rows'}[/]: {s.kept} kept, {s.dropped} dropped by "
                  f"filters, {s.errors} {'error' if s.errors == 1 else 'errors'} "
                  f"· {result.wall_s:.1f} s")
    if getattr(result, "redone", None):
        console.print("redone for the new recipe: " + ", ".join(f"{v} videos {k}" for k, v in result.redone.items()))
    if s.errors_by_kind:
        console.print("errors by kind [dim](stage/kind: rows, first example)[/]:")
    for stage, kind, n, source, message in s.errors_by_kind:
        example = f"{source}: {message}" if source and source not in message else message
        example = example if len(example) <= 300 else example[:297] + "..."
        console.print(f"  [red]{escape(stage)}/{escape(kind)}[/]: {n} · {escape(example)}", highlight=False,
                      soft_wrap=True)
    console.print(f"manifest: {escape(str(result.manifest))}", highlight=False)
    if result.report:
        console.print(f"report:   {escape(str(result.report))}", highlight=False)
    elif report_wanted:  # the report failed; the pipeline recorded why in run.json
        import json

        from soraprep.storage import Store

        try:  # OUT may be a store URL
            why = json.loads(Store(str(result.out)).read_text("run.json")).get("report_error") or "unknown error"
        except (OSError, ValueError):
            why = "unknown error"
        console.print(f"[yellow]warning:[/] report.html not written ({escape(str(why))}); the manifest is "
                      f"complete: retry with `soraprep report {escape(str(result.out))}`", highlight=False,
                      soft_wrap=True)


@app.command("probe")
def probe_cmd(
    videos: list[str] = typer.Argument(..., help="Video files."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line instead of a table."),
) -> None:
    """Print container/stream metadata without decoding (exit 1 if any file cannot be probed).

    Sizes are as displayed: a sideways-stored phone video shows its portrait size and "rot" (clockwise).

    Example: soraprep probe clip.mp4 --json
    """
    import json

    from rich.table import Table

    from soraprep.video.io import VideoError, probe

    table = Table("file", "duration", "fps", "frames", "size", "codec", "pix_fmt", "audio", "vfr")
    bad = 0
    for v in videos:
        try:
            info = probe(v)
        except VideoError as exc:
            bad += 1
            if as_json:
                print(json.dumps({"path": v, "error": {"kind": exc.kind, "message": exc.message}}))
            else:
                table.add_row(escape(v), f"[red]{escape(exc.kind)}[/]", escape(exc.message[:60]), "", "", "", "", "", "")
            continue
        if as_json:
            print(json.dumps(info.to_dict()))
        else:
            table.add_row(escape(v), f"{info.duration_s:.2f}s", f"{info.fps} ({float(info.fps):.3f})",
                          f"{info.num_frames}{'' if info.frames_exact else '?'}",
                          f"{info.width}x{info.height}" + (f" (rot {info.rotation})" if info.rotation else ""),
                          info.codec, info.pix_fmt, "yes" if info.has_audio else "no", "yes" if info.vfr else "no")
    if not as_json:
        Console().print(table)
    raise typer.Exit(EXIT_ROWS_FAILED if bad else EXIT_OK)


@app.command("report")
def report_cmd(
    out: str = typer.Argument(..., help="A curation output folder or store URL."),
    storage_options: str = typer.Option(None, "--storage-options", metavar="JSON",
                                        help="fsspec options for a store URL, e.g. '{\"endpoint_url\": ...}'."),
) -> None:
    """Rebuild OUT/report.html from OUT's manifest (manifest.parquet or the manifest/ dataset, streamed; OUT may
    be a store URL).  Example: soraprep report out"""
    from soraprep.curate.report import write_report
    from soraprep.manifest import ManifestError
    from soraprep.manifest_dataset import locate

    options = _storage_options(storage_options)
    try:
        locate(out, options)
    except ManifestError:
        fail_usage(f"{out}/manifest.parquet not found: run `soraprep curate ... -o {out}` first")
    try:
        path = write_report(out, options or None)
    except ManifestError as exc:
        fail_usage(str(exc))
    console.print(f"report: {escape(str(path))}", highlight=False)


EXPORT_HELP = """Export a manifest for training: Open-Sora CSV, JSONL, WebDataset shards or a Parquet dataset.

MANIFEST is a manifest file (.parquet/.jsonl) or a run folder, local or a store URL (s3://, gs://...).
opensora-csv and jsonl write one file (-o FILE); webdataset and parquet write a folder or a store prefix
(-o DIR_OR_URL). Kept rows only unless --all (webdataset --all: every row without an error).

\b
webdataset: shard-000000.tar ... each sample KEY.mp4 (the clip file), KEY.json (the manifest row),
KEY.txt (the caption), shards closed before --shard-size bytes (or --shard-samples samples), manifest
order, written whole (rename / one upload); shards.json last. A rerun skips shards already complete.
parquet: part-00000.parquet ... of at most --rows-per-part rows, paths absolute (or URLs), _index.json.

Refuses (exit 2) to write over the input manifest or its JSONL twin, whatever the name (a symlink,
hard link or relative path to the same file). Exit 1 when a selected row cannot be written (a file name
that is not UTF-8 has no place in Open-Sora's CSV; a clip file that is missing; the message names it).

\b
Examples:
  soraprep export out/manifest.parquet -o train.csv
  soraprep export s3://bucket/runs/r1 --format webdataset -o s3://bucket/shards/r1 --shard-size 1GiB
  soraprep export out --format parquet -o out-parquet --rows-per-part 500000
"""


@app.command("export", help=EXPORT_HELP)
def export_cmd(
    manifest: str = typer.Argument(..., help="A manifest (.parquet/.jsonl) or run folder; local or URL."),
    out: str = typer.Option(..., "--out", "-o", help="Output file (opensora-csv, jsonl) or folder / URL."),
    fmt: str = typer.Option("opensora-csv", "--format", help="opensora-csv | jsonl | webdataset | parquet"),
    all_rows: bool = typer.Option(False, "--all", help="Also rows that were dropped (and, except webdataset, failed)."),
    shard_size: str = typer.Option("1GiB", "--shard-size", metavar="SIZE",
                                   help="webdataset: most bytes per shard, e.g. 1GiB, 500MB, 1000000."),
    shard_samples: int = typer.Option(None, "--shard-samples", min=1, help="webdataset: most samples per shard."),
    rows_per_part: int = typer.Option(1_000_000, "--rows-per-part", min=1, help="parquet: most rows per part file."),
    workers: int = typer.Option(8, "--workers", min=1, help="webdataset: clip files read at once."),
    storage_options: str = typer.Option(None, "--storage-options", metavar="JSON",
                                        help="fsspec options for store URLs, e.g. '{\"endpoint_url\": ...}'."),
) -> None:
    import os

    from soraprep.manifest import ManifestError, export_opensora_csv, write_jsonl
    from soraprep.manifest_dataset import iter_manifest
    from soraprep.manifest_dataset import locate as locate_manifest
    from soraprep.storage import StorageError, is_remote, parse_storage_options

    formats = ("opensora-csv", "jsonl", "webdataset", "parquet")
    if fmt not in formats:
        fail_usage(f"--format must be one of {', '.join(formats)}, got {fmt!r}")
    try:
        options = parse_storage_options(storage_options)
    except StorageError as exc:
        fail_usage(str(exc))
    if fmt in ("webdataset", "parquet"):
        _export_dataset(manifest, out, fmt, all_rows=all_rows, shard_size=shard_size, shard_samples=shard_samples,
                        rows_per_part=rows_per_part, workers=workers, options=options)
        return
    remote = is_remote(manifest) or is_remote(out)
    if not remote:
        src = os.path.splitext(manifest)[0]
        for protected in {manifest, src + ".parquet", src + ".jsonl"}:
            if os.path.exists(protected) and os.path.exists(out) and os.path.samefile(protected, out):
                fail_usage(f"-o {out} is the manifest {protected} itself: choose another output file")
    elif os.path.splitext(str(manifest).rstrip("/"))[0] == os.path.splitext(str(out))[0]:
        fail_usage(f"-o {out} is the manifest {manifest} itself: choose another output file")
    if not is_remote(out):
        check_out_file(out, "-o/--out")  # not a folder, not under a file
    try:
        if remote:
            from soraprep.storage.manifests import locate, read_rows, resolve

            ref = locate(manifest, options)
            rows = read_rows(manifest, options)
            for r in rows:  # relative paths are relative to the manifest's folder on its store
                if r.get("path"):
                    r["path"] = resolve(ref.base, r["path"])
        else:
            source = locate_manifest(manifest)
            source.schema()  # an unreadable manifest is a usage error before anything is written
            rows = iter_manifest(source)  # streamed: one batch of rows in memory at a time
    except (ManifestError, StorageError) as exc:
        fail_usage(str(exc))
    except Exception as exc:  # the store cannot be reached (endpoint, credentials, bucket)
        if not is_store_error(exc):
            raise
        fail_usage(f"{manifest}: {type(exc).__name__}: {exc}")
    skipped: list[str] = []
    try:
        with _local_output(out, options) as local_out:
            if fmt == "opensora-csv":
                n = export_opensora_csv(rows, local_out, manifest if not remote else ".", only_kept=not all_rows,
                                        skipped=skipped)
            else:
                sel = [0]

                def selected():
                    for r in rows:
                        if all_rows or (r.get("keep") and not r.get("error")):
                            sel[0] += 1
                            yield r

                write_jsonl(local_out, selected())
                n = sel[0]
    except Exception as exc:
        if not remote or not is_store_error(exc):
            raise
        fail_usage(f"-o {out}: {type(exc).__name__}: {exc}")
    console.print(f"{n} rows -> {escape(out)}", highlight=False)
    for message in skipped[:10]:
        console.print(f"[yellow]not exported:[/] {escape(message)}", highlight=False)
    raise typer.Exit(EXIT_ROWS_FAILED if skipped else EXIT_OK)


def _local_output(out: str, options: dict):
    """A context manager giving a local file for ``out``; a store URL gets the finished file in one upload."""
    import contextlib
    import tempfile
    from pathlib import Path

    from soraprep.storage import is_remote

    @contextlib.contextmanager
    def cm():
        if not is_remote(out):
            yield out
            return
        from soraprep.storage.manifests import put_file

        with tempfile.TemporaryDirectory(prefix="soraprep-export-") as tmp:
            local = Path(tmp) / Path(out.rstrip("/")).name
            yield str(local)
            put_file(local, out, options)

    return cm()


def _export_dataset(manifest: str, out: str, fmt: str, *, all_rows: bool, shard_size: str, shard_samples: int | None,
                    rows_per_part: int, workers: int, options: dict) -> None:
    """``export --format webdataset | parquet``: a folder (or store prefix) of shards / part files."""
    from soraprep.export import export_parquet, export_webdataset, parse_bytes
    from soraprep.export.clips import check_output
    from soraprep.manifest import ManifestError
    from soraprep.storage import StorageError, is_remote

    if not is_remote(out):
        check_out_dir(out, "-o/--out")
    try:
        size = parse_bytes(shard_size)
    except ValueError as exc:
        fail_usage(f"--shard-size: {exc}")
    include = "all" if all_rows else "kept"
    try:
        check_output(manifest, out, options)
        if fmt == "webdataset":
            from rich.progress import Progress

            with Progress(console=console, transient=True) as bar:
                task = bar.add_task("shards", total=None)
                res = export_webdataset(manifest, out, shard_size=size, shard_samples=shard_samples, include=include,
                                        storage_options=options, workers=workers,
                                        progress=lambda n, shards: bar.update(task, completed=n))
            console.print(f"{res.samples} samples in {len(res.shards)} shards ({res.bytes / 1e6:.1f} MB; "
                          f"{res.written} written, {res.reused} already complete) -> {escape(res.out)}", highlight=False)
            for e in res.errors[:10]:
                console.print(f"[yellow]not exported:[/] {escape(str(e['clip_id']))}: {escape(e['kind'])}: "
                              f"{escape(e['message'])}", highlight=False)
            if not res.samples and res.not_selected and not all_rows:
                console.print("[yellow]warning:[/] no row is kept (keep true, no error); a manifest that was not "
                              "curated has no keep column: pass --all", highlight=False)
            raise typer.Exit(res.exit_code)
        res = export_parquet(manifest, out, rows_per_part=rows_per_part, include=include, storage_options=options)
    except (ManifestError, StorageError) as exc:
        fail_usage(str(exc))
    except Exception as exc:  # the store cannot be reached or written (no bucket, no permission, disk full)
        if not is_store_error(exc):
            raise
        fail_usage(f"{manifest} -> {out}: {type(exc).__name__}: {exc}")
    console.print(f"{res.rows} rows in {len(res.parts)} part files -> {escape(res.out)}", highlight=False)
    raise typer.Exit(EXIT_OK)


@app.command("demo")
def demo_cmd(
    out: str = typer.Option("soraprep-demo", "--out", "-o", help="Folder for the demo videos and results."),
    workers: int = typer.Option(2, "--workers", "-w", min=1),
) -> None:
    """Generate demo videos (known cuts, static/black/blurred shots, a bad file), curate them, show results.

    Example: soraprep demo -o soraprep-demo   (then open soraprep-demo/curated/report.html)
    """
    from soraprep.curate.demo import run_demo

    check_out_dir(out)
    result = run_demo(out, workers=workers, console=console)
    raise typer.Exit(EXIT_OK if result.errors <= 1 else EXIT_ROWS_FAILED)

# --- datasets: ingest / download -------------------------------------------------------------------

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
    from soraprep.storage import StorageError, is_remote, parse_storage_options

    if dataset not in INGEST_DATASETS:
        fail_usage(f"--dataset {dataset!r} is not one of {'|'.join(INGEST_DATASETS)}")
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


def _ints(text: str | None, flag: str, n: int) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        vals = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        vals = ()
    if len(vals) != n:
        fail_usage(f"{flag} takes {n} integers separated by commas (e.g. {flag} 4,8,8), got {text!r}")
    return vals


@app.command("estimate")
def estimate_cmd(
    model: str | None = typer.Option(None, "--model", help="Model preset, e.g. DiT-XL/2, STDiT-XL/2, U-ViT-H/2."),
    config: str | None = typer.Option(None, "--config", help="YAML/JSON config (to_dict() output or {preset: NAME, field: value})."),
    frames: int | None = typer.Option(None, "--frames", help="Frames per clip (pixels; 1 for images)."),
    height: int | None = typer.Option(None, "--height", help="Clip height in pixels."),
    width: int | None = typer.Option(None, "--width", help="Clip width in pixels."),
    buckets: str | None = typer.Option(None, "--buckets", help="Manifest: train on its kept rows' bucket shapes."),
    vae_compression: str | None = typer.Option(None, "--vae-compression", help="T,H,W latent compression (default 1,8,8: SD VAE)."),
    latent_channels: int | None = typer.Option(None, "--latent-channels", help="Latent channels (default: the config's)."),
    clips: int | None = typer.Option(None, "--clips", help="Training clips (also the data-preparation count)."),
    epochs: float = typer.Option(1.0, "--epochs", help="Passes over --clips."),
    steps: int | None = typer.Option(None, "--steps", help="Optimizer steps (with --batch)."),
    batch: int | None = typer.Option(None, "--batch", help="Global batch size (samples per step)."),
    micro_batch: int | None = typer.Option(None, "--micro-batch", help="Samples per GPU per forward (default ceil(batch/GPUs) or 1)."),
    gpu: str = typer.Option("h100", "--gpu", help="GPU preset (see --list-gpus); h100 = H100 SXM 80 GB."),
    num_gpus: int = typer.Option(8, "--num-gpus", help="Data-parallel GPUs."),
    mfu: float = typer.Option(0.4, "--mfu", help="Model FLOPs utilisation in (0, 1]."),
    price_per_hour: float | None = typer.Option(None, "--price-per-hour", help="$ per GPU-hour (default: the preset's)."),
    peak_tflops: float | None = typer.Option(None, "--peak-tflops", help="Override the dense bf16 peak, TFLOP/s."),
    gpu_memory_gib: float | None = typer.Option(None, "--gpu-memory-gib", help="Override GPU memory, GiB."),
    precision: str = typer.Option("bf16", "--precision", help="bf16|fp16|fp32 (mixed precision for bf16/fp16)."),
    recompute: str = typer.Option("none", "--recompute", help="none|selective|full activation recompute."),
    zero: int = typer.Option(0, "--zero", help="ZeRO/FSDP stage 0|1|2|3."),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Keep an fp32 EMA copy of the weights."),
    overhead_gib: float = typer.Option(2.0, "--overhead-gib", help="CUDA context, workspaces, fragmentation."),
    vae: str = typer.Option("sd", "--vae", help="VAE for the encode budget: sd|none|a VQ-VAE preset."),
    vae_macs_per_pixel: float | None = typer.Option(None, "--vae-macs-per-pixel", help="Override the VAE encoder cost."),
    prep_mfu: float = typer.Option(0.3, "--prep-mfu", help="Utilisation of VAE and text encoding."),
    text_encoder_params: float | None = typer.Option(None, "--text-encoder-params", help="Default: T5-XXL encoder for text-conditioned models."),
    caption_params: float | None = typer.Option(None, "--caption-params", help="Captioning VLM parameters (default 7e9 for text-conditioned models, else 0)."),
    caption_frames: int = typer.Option(8, "--caption-frames", help="Frames per clip shown to the VLM."),
    caption_tokens_per_frame: int = typer.Option(256, "--caption-tokens-per-frame", help="Visual tokens per frame."),
    caption_output_tokens: int = typer.Option(150, "--caption-output-tokens", help="Caption length in tokens."),
    caption_mfu: float = typer.Option(0.1, "--caption-mfu", help="Utilisation of captioning (decode-bound)."),
    caption_throughput: float | None = typer.Option(None, "--caption-throughput", help="Measured clips/s per GPU (overrides FLOPs)."),
    source_hours: float | None = typer.Option(None, "--source-hours", help="Hours of raw video to curate."),
    fps: float = typer.Option(24.0, "--fps", help="Frame rate of the source videos."),
    decode_fps: float = typer.Option(200.0, "--decode-fps",
                                     help="Curated frames/s per CPU core (decode-once analysis + default cut; "
                                          "200 measured at 720p, ~90 at 1080p)."),
    cpu_price_per_hour: float = typer.Option(0.0446, "--cpu-price-per-hour", help="$ per CPU core-hour."),
    sweep: list[str] | None = typer.Option(None, "--sweep", help="AXIS=V1,V2 (axes: height, width, frames); repeatable."),
    out: str = typer.Option("estimate-sweep", "--out", help="Folder for the sweep's JSON, HTML and PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    list_gpus: bool = typer.Option(False, "--list-gpus", help="Print the GPU table and exit."),
) -> None:
    """Estimate FLOPs, memory per GPU, GPU-hours and cost of training a model (and preparing its data).

    FLOPs = 2 x MACs. Examples:

      soraprep estimate --model DiT-XL/2 --height 256 --width 256 --steps 400000 --batch 256 --gpu a100

      soraprep estimate --model STDiT-XL/2 --frames 16 --height 256 --width 256 --clips 10000000 --json

      soraprep estimate --model VideoDiT-XL/2 --frames 17 --height 256 --width 256 --vae-compression 4,8,8 --sweep height=256,512,720 --sweep frames=17,65
    """
    import json as _json

    from rich.console import Console as _Console

    from soraprep.estimate import hardware
    from soraprep.estimate.plan import estimate as run_estimate

    if list_gpus:
        rows = [g.to_dict() for g in hardware.GPUS.values()]
        if as_json:
            print(_json.dumps({"gpus": rows, "aliases": hardware.ALIASES}))
        else:
            for g in rows:
                _Console().print(f"{g['name']:12} {g['peak_bf16_tflops']:7.0f} TFLOP/s {g['memory_gib']:7.2f} GiB "
                                 f"${g['price_per_hour']:.2f}/h  [dim]{g['description']}; {g['price_source']}[/]")
        raise typer.Exit(EXIT_OK)
    kwargs = dict(
        model=model, config_path=config, frames=frames, height=height, width=width, buckets=buckets,
        vae_compression=_ints(vae_compression, "--vae-compression", 3), latent_channels=latent_channels,
        clips=clips, epochs=epochs, steps=steps, batch=batch, micro_batch=micro_batch, gpu=gpu, num_gpus=num_gpus,
        mfu=mfu, price_per_hour=price_per_hour, peak_tflops=peak_tflops, gpu_memory_gib=gpu_memory_gib,
        precision=precision, recompute=recompute, zero=zero, ema=ema, overhead_gib=overhead_gib, vae=vae,
        vae_macs_per_pixel=vae_macs_per_pixel, prep_mfu=prep_mfu, text_encoder_params=text_encoder_params,
        caption_params=caption_params, caption_frames=caption_frames,
        caption_tokens_per_frame=caption_tokens_per_frame, caption_output_tokens=caption_output_tokens,
        caption_mfu=caption_mfu, caption_throughput=caption_throughput, source_hours=source_hours, fps=fps,
        decode_fps=decode_fps, cpu_price_per_hour=cpu_price_per_hour,
    )
    try:
        if sweep:
            from soraprep.estimate.sweep import parse_sweep, run_sweep, write_sweep

            points = run_sweep(parse_sweep(sweep), **kwargs)
            files = write_sweep(points, out, title=f"{model or config} on {num_gpus} x {gpu}")
            if files["png"] is None:
                console.print("[yellow]warning:[/] no PNG written: " + escape("pip install 'soraprep[estimate]'")
                              + " for matplotlib")
            if as_json:
                print(_json.dumps({"sweep": points, "files": files}))
            else:
                console.print(f"sweep of {len(points)} points written: " + escape(", ".join(f for f in files.values() if f)),
                              highlight=False)
            raise typer.Exit(EXIT_OK)
        result = run_estimate(**kwargs)
    except ValueError as exc:
        fail_usage(str(exc))
    if as_json:
        print(_json.dumps(result.to_dict()))
    else:
        from soraprep.estimate.report import render

        render(result, _Console())
    raise typer.Exit(EXIT_OK)


# --- training / encoding / sampling ----------------------------------------------------------------


def _hxw(text: str | None, flag: str) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        fail_usage(f"{flag} takes HEIGHTxWIDTH in pixels (e.g. {flag} 256x256), got {text!r}")
    return h, w


@app.command("encode")
def encode_cmd(
    manifest: str = typer.Argument(..., metavar="MANIFEST", help="Curated (and captioned) manifest."),
    out: str = typer.Option(..., "-o", "--out", metavar="LATENTS_DIR", help="Folder for shards + index.json."),
    vae: str = typer.Option(..., "--vae", help="soraprep VQ-VAE .pt, local diffusers VAE folder, or 'none'."),
    text_encoder: str | None = typer.Option(None, "--text-encoder", help="Local T5 / CLIP text encoder folder."),
    frames: int | None = typer.Option(None, "--frames", help="Frames per clip (default: each row's bucket_frames)."),
    size: str | None = typer.Option(None, "--size", help="HxW in pixels (default: each row's bucket size)."),
    text_len: int | None = typer.Option(None, "--text-len", help="Caption tokens (default: 120 T5, 77 CLIP)."),
    label_column: str | None = typer.Option(None, "--label-column", help="Integer class-label column."),
    shard_size: int = typer.Option(64, "--shard-size", min=1, help="Clips per shard (the resume unit)."),
    batch: int = typer.Option(4, "--batch", min=1, help="Clips per autoencoder call."),
    dtype: str = typer.Option("float32", "--dtype", help="Storage dtype: float32 | float16 | bfloat16."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    storage_options: str = typer.Option(None, "--storage-options", metavar="JSON",
                                        help="fsspec options when MANIFEST or -o is a store URL (s3://, gs://...)."),
) -> None:
    """Encode kept clips once into latents (+ caption embeddings), in resumable shards.

    MANIFEST and -o may be store URLs: clips are staged to local scratch for decoding, shards uploaded.

    Example: soraprep encode out/manifest.parquet -o latents --vae vqvae.pt --text-encoder /models/t5-v1_1-xxl
    --frames 16 --size 256x256
    """
    from rich.progress import Progress

    require_torch("encode")
    from soraprep.storage import is_remote

    if not is_remote(out):
        check_out_dir(out)
    options = _storage_options(storage_options)
    from soraprep.train.latents import encode

    try:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("encoding", total=None)
            res = encode(manifest, out, vae=vae, text_encoder=text_encoder, frames=frames, size=_hxw(size, "--size"),
                         shard_size=shard_size, batch_size=batch, label_column=label_column, dtype=dtype,
                         device=device, text_max_length=text_len, storage_options=options,
                         progress=lambda d, t: bar.update(task, completed=d, total=t))
    except (ValueError, FileNotFoundError, ImportError) as exc:
        fail_usage(str(exc))
    idx, cost = res.index, res.index["cost"]
    console.print(f"encoded {res.encoded} clips, reused {res.reused}; {idx['num_samples']} in {escape(out)}/index.json; "
                  f"latent scale {idx['latent_scale']:.4g}; skipped {escape(str(idx['skipped'] or 'none'))}",
                  highlight=False)
    est, secs = cost["estimated_flops"], cost["measured_autoencoder_s"]
    est_text = f"{est / 1e9:.3g} GFLOP estimated" if est is not None else "no estimate for this autoencoder"
    rate = f" -> {cost['implied_flops_per_s'] / 1e9:.3g} GFLOP/s" if cost["implied_flops_per_s"] else ""
    console.print(f"autoencoder cost: {est_text}, {secs:.2f} s measured{rate} (this run's clips; decode "
                  f"{cost['decode_s']:.2f} s, text {cost['text_s']:.2f} s)")
    if idx.get("captions_missing"):
        console.print(f"[yellow]warning:[/] {idx['captions_missing']} clips have no caption (encoded as empty text)")
    for e in idx["errors"][:5]:
        console.print(f"  [red]{escape(str(e['clip_id']))}[/]: {escape(str(e['kind']))}: {escape(str(e['message']))}",
                      highlight=False)
    raise typer.Exit(EXIT_ROWS_FAILED if idx["errors"] else EXIT_OK)


@app.command("train")
def train_cmd(
    config: str = typer.Option(..., "--config", help="Training YAML (keys = soraprep.train.TrainConfig fields)."),
    overrides: list[str] = typer.Argument(None, metavar="[KEY=VALUE]...", help="Override config keys."),
) -> None:
    """Train on one process; for several use torchrun --nproc_per_node N -m soraprep.train --config train.yaml.

    Example: soraprep train --config train.yaml steps=200
    """
    require_torch("train")
    from soraprep.train.__main__ import main as train_main

    code = train_main(["--config", config, *(overrides or [])])
    raise typer.Exit(code)


@app.command("sample")
def sample_cmd(
    checkpoint: str = typer.Argument(..., metavar="CHECKPOINT", help="OUT/checkpoints/step-XXXXXXX.pt"),
    out: str = typer.Option(..., "-o", "--out", help="Folder for sample-NNN.mp4, grid.png, samples.json."),
    prompt: list[str] | None = typer.Option(None, "--prompt", help="Caption (repeat for several samples)."),
    class_label: list[int] | None = typer.Option(None, "--class-label", help="Class label (repeatable)."),
    num_samples: int | None = typer.Option(None, "--num-samples", help="Samples of an unconditional model."),
    steps: int = typer.Option(50, "--steps", help="Sampling steps."),
    cfg: float = typer.Option(4.0, "--cfg", help="Classifier-free guidance scale (1 = off)."),
    sampler: str = typer.Option("ddim", "--sampler", help="ddim | ddpm (objective ddpm); ode | sde (transport)."),
    seed: int = typer.Option(0, "--seed"),
    weights: str = typer.Option("ema", "--weights", help="ema | model"),
    vae: str | None = typer.Option(None, "--vae", help="Override the autoencoder saved in the checkpoint."),
    text_encoder: str | None = typer.Option(None, "--text-encoder", help="Override the saved text encoder path."),
    frames: int | None = typer.Option(None, "--frames", help="Frames (video DiTs; default: trained bucket)."),
    size: str | None = typer.Option(None, "--size", help="HxW pixels (video DiTs)."),
    fps: int = typer.Option(8, "--fps", help="Frame rate of the written mp4."),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Sample clips from a checkpoint; writes one mp4 per sample and a PNG grid.

    Example: soraprep sample runs/x/checkpoints/step-0020000.pt -o samples --prompt "a red car" --steps 50 --cfg 4
    """
    require_torch("sample")
    check_out_dir(out)
    from soraprep.train.sample import sample

    try:
        res = sample(checkpoint, out, prompts=prompt or None, class_labels=class_label or None,
                     num_samples=num_samples, steps=steps, cfg_scale=cfg, sampler=sampler, seed=seed, weights=weights,
                     vae=vae, text_encoder=text_encoder, frames=frames, size=_hxw(size, "--size"), fps=fps,
                     device=device)
    except (ValueError, FileNotFoundError, ImportError, KeyError) as exc:
        fail_usage(str(exc))
    console.print(f"wrote {len(res.videos)} videos and {escape(str(res.grid))} ({res.frames.shape[1]} frames, "
                  f"{res.frames.shape[3]}x{res.frames.shape[2]})", highlight=False)
    raise typer.Exit(EXIT_OK)


def main() -> None:
    """Entry point: Click's usage errors also exit with 2."""
    try:
        app(standalone_mode=True)
    except SystemExit as exc:  # pragma: no cover - passthrough
        sys.exit(exc.code)


if __name__ == "__main__":
    main()
