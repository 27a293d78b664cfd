"""Compute and model commands: ``estimate``, ``encode``, ``train``, ``sample``."""

from __future__ import annotations

import typer
from rich.markup import escape

from soraprep.cli import (
    EXIT_OK,
    EXIT_ROWS_FAILED,
    _storage_options,
    app,
    check_out_dir,
    console,
    fail_usage,
    require_torch,
)


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
    vae: str = typer.Option("sd", "--vae", help="VAE for the encode budget: sd|none|hunyuan-video-vae[-tiled]|cogvideox-vae|wan2.1-vae|opensora-1.2-vae|a VQ-VAE preset."),
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
    tp: int | None = typer.Option(None, "--tp", help="Tensor-parallel degree (default 1; searched with --layout auto)."),
    sp: int | None = typer.Option(None, "--sp", help="Sequence-parallel degree (default 1; searched with --layout auto)."),
    sp_kind: str | None = typer.Option(None, "--sp-kind", help="ulysses (all-to-all, heads split) | ring (K/V passed around)."),
    pp: int | None = typer.Option(None, "--pp", help="Pipeline stages (1F1B; default 1; searched with --layout auto)."),
    layout: str | None = typer.Option(None, "--layout", help="auto: recommend the cheapest tp/sp/pp/ZeRO/recompute/micro-batch that fits."),
    gpus_per_node: int = typer.Option(8, "--gpus-per-node", help="GPUs per node (groups beyond it use the inter-node link)."),
    interconnect: str | None = typer.Option(None, "--interconnect", help="Link preset(s): e.g. ib-hdr, or nvlink4,ib-ndr (see --list-gpus --json)."),
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

      soraprep estimate --config wan14b.yaml --frames 129 --height 720 --width 1280 --vae-compression 4,8,8 --num-gpus 64 --layout auto
    """
    import json as _json

    from rich.console import Console as _Console

    from soraprep.estimate import hardware
    from soraprep.estimate.plan import estimate as run_estimate

    if list_gpus:
        rows = [g.to_dict() for g in hardware.GPUS.values()]
        if as_json:
            print(_json.dumps({"gpus": rows, "aliases": hardware.ALIASES,
                               "interconnects": [i.to_dict() for i in hardware.INTERCONNECTS.values()],
                               "default_links": hardware.DEFAULT_LINKS}))
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
        decode_fps=decode_fps, cpu_price_per_hour=cpu_price_per_hour, tp=tp, sp=sp, sp_kind=sp_kind, pp=pp,
        layout=layout, gpus_per_node=gpus_per_node, interconnect=interconnect,
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
