"""``soraprep demo``: generate a few videos with known content, curate them, and say where everything is."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from soraprep.video.synth import Shot, make_video

DEMO_VIDEOS = {
    # name: (shots, fps, width, height)
    "city_walk.mp4": ([Shot(75, speed=3), Shot(60, speed=-2), Shot(90, speed=4)], Fraction(25), 640, 360),
    "interview_sd.mp4": ([Shot(50, "static"), Shot(70, speed=1.5), Shot(40, "text", speed=1)], Fraction(30000, 1001), 480, 360),
    "fade_to_black.mp4": ([Shot(60, speed=2.5), Shot(30, "black"), Shot(60, "blur", speed=2)], Fraction(24), 426, 240),
    "legacy_12fps.mp4": ([Shot(36, speed=5), Shot(30, speed=3)], Fraction(12), 320, 240),
}


def make_demo_inputs(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (shots, fps, w, h) in DEMO_VIDEOS.items():
        p = folder / name
        if not p.exists():
            make_video(p, shots, fps=fps, width=w, height=h)
        paths.append(p)
    broken = folder / "not_a_video.mp4"  # shows how a bad input is reported, without stopping the run
    broken.write_bytes(b"this is not a video\n" * 10)
    paths.append(broken)
    return paths


def run_demo(out: str | Path, *, workers: int = 2, console=None):
    from soraprep.curate.pipeline import curate

    out = Path(out)
    inputs = make_demo_inputs(out / "videos")
    result = curate([str(out / "videos")], out / "curated", workers=workers, progress=console is not None)
    if console is not None:
        from rich.markup import escape  # paths are text, not rich markup

        console.print(f"\n[bold]demo videos[/]  {escape(str(out / 'videos'))}  ({len(inputs)} files, one deliberately "
                      "broken)", highlight=False)
        console.print(f"[bold]manifest[/]     {escape(str(result.manifest))}  ({len(result.rows)} rows: "
                      f"{result.kept} kept, {result.errors} error)", highlight=False)
        console.print(f"[bold]clips[/]        {escape(str(out / 'curated' / 'clips'))}", highlight=False)
        console.print(f"[bold]report[/]       {escape(str(result.report))}", highlight=False)
        console.print("next: open the report in a browser, or `soraprep export "
                      f"{escape(str(result.manifest))} -o train.csv` for Open-Sora", highlight=False)
    return result
