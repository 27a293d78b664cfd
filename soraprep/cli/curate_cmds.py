"""Curation commands: ``curate``, ``probe``, ``report``, ``export``, ``demo``."""

from __future__ import annotations

import typer
from rich.console import Console
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
            from soraprep.manifest_store import locate, read_rows, resolve

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
        from soraprep.manifest_store import put_file

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
