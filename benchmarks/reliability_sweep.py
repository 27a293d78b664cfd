"""Reliability sweep: a hostile corpus through `soraprep curate` under many configurations, counting
crashes, hangs, lost rows, wrong rows and deleted user files.

    python benchmarks/reliability_sweep.py            # ~5 min on 2 cores; writes benchmarks/_work/reliability.json

Every run is a real CLI subprocess with a wall-clock limit. Per run it checks:

- crash: an exit code other than the documented ones (0 rows fine, 1 some rows failed, 2 refused usage) or a
  Python traceback on stderr;
- hang: the run did not end within its limit (it is killed);
- rows lost: an input entry (file, link, FIFO, ... in the input folder) with no row whose ``source`` names it;
- wrong rows: a kept clip whose file does not decode to its ``num_frames`` frames, or whose decoded
  (display-oriented) size differs from the row's ``width`` x ``height``;
- user files deleted: files a user left in OUT (``.env.tmp.bak``, ``.partial-results.csv``, ...) must survive.

The corpus is generated (nothing downloaded) plus the real legacy files in ``tests/data/videos/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from soraprep.video.synth import Shot, make_video  # noqa: E402

WORK = ROOT / "benchmarks" / "_work" / "reliability"
USER_FILES = (".env.tmp.bak", "notes/.template.tmpl", ".partial-results.csv", "notes/.x.tmp1", "keep.txt")


# ---------------------------------------------------------------- corpus

def _rotate_mp4(path: Path, degrees: int) -> None:
    """Set the display matrix of the (only) video track's tkhd, as phones do."""
    data = bytearray(path.read_bytes())
    i = data.find(b"tkhd")
    version = data[i + 4]
    off = i + 4 + (4 + 4 + 4 + 4 + 4 + 4 if version == 0 else 4 + 8 + 8 + 4 + 4 + 8) + 8 + 8
    one = 1 << 16
    a, b = {0: (one, 0), 90: (0, one), 180: (-one, 0), 270: (0, -one)}[degrees]
    c, d = -b, a
    data[off:off + 36] = struct.pack(">9i", a, b, 0, c, d, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))


def _tiny(path: Path, w: int, h: int, n: int = 12) -> None:
    c = av.open(str(path), "w")
    s = c.add_stream("ffv1", rate=25)
    s.width, s.height, s.pix_fmt = w, h, "yuv444p"
    for i in range(n):
        f = av.VideoFrame.from_ndarray(np.full((h, w, 3), (i * 20) % 256, np.uint8), format="rgb24")
        f = f.reformat(format="yuv444p")
        f.pts = i
        for p in s.encode(f):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()


def _audio_only(path: Path) -> None:
    c = av.open(str(path), "w")
    s = c.add_stream("aac", rate=16000)
    pcm = (0.1 * np.sin(np.arange(16000) / 10)).astype(np.float32)[None, :]
    for start in range(0, 16000, 1024):
        f = av.AudioFrame.from_ndarray(pcm[:, start:start + 1024], format="fltp", layout="mono")
        f.sample_rate, f.pts = 16000, start
        for p in s.encode(f):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()


def build_corpus(folder: Path) -> dict[str, str]:
    """Write the corpus into ``folder``; returns entry name -> kind description."""
    folder.mkdir(parents=True, exist_ok=True)
    kinds: dict[str, str] = {}
    two = [Shot(60, speed=3), Shot(55, speed=-2)]

    def add(name: str, kind: str) -> Path:
        kinds[name] = kind
        return folder / name

    make_video(add("clean.mp4", "clean H.264 MP4, one cut"), two)
    make_video(add("bframes_gop.mp4", "H.264 B-frames, fixed GOP 12"), two, gop=12, bframes=3)
    make_video(add("ts_one_idr.ts", "MPEG-TS, x264 bframes=3, one IDR, two shots"), two, gop=1000, bframes=3)
    make_video(add("annexb.h264", "raw Annex-B H.264 elementary stream"), two, bframes=3)
    make_video(add("low_fps.mp4", "1 frame / 30 s"), [Shot(4, speed=3)], fps=Fraction(1, 30))
    make_video(add("ntsc.mp4", "NTSC 30000/1001 fps"), two, fps=Fraction(30000, 1001), width=352, height=240)
    make_video(add("odd.mp4", "odd size 202x154, 12 fps"), two, fps=12, width=202, height=154)
    make_video(add("mpeg4.avi", "MPEG-4 part 2 in AVI"), two, codec="mpeg4")
    make_video(add("mjpeg_full_range.avi", "MJPEG, full-range yuvj420p"), two, codec="mjpeg")
    for deg in (90, 180, 270):
        p = add(f"rot{deg}.mp4", f"phone video, tkhd rotation {deg} deg")
        make_video(p, two, width=320, height=240)
        _rotate_mp4(p, deg)
    _tiny(add("one_by_one.mkv", "1x1 pixel video"), 1, 1)
    _tiny(add("two_by_two.mkv", "2x2 pixel video"), 2, 2)
    _tiny(add("odd_33x17.mkv", "33x17 pixel video"), 33, 17, n=40)
    add("zero.mp4", "zero-byte file").write_bytes(b"")
    add("text.mp4", "text file named .mp4").write_text("not a video\n" * 100)
    full = (folder / "clean.mp4").read_bytes()
    add("truncated.mp4", "MP4 cut at half its bytes").write_bytes(full[: len(full) // 2])
    damaged = bytearray(full)
    damaged[len(full) // 3: len(full) // 3 + 4096] = os.urandom(4096)
    add("damaged.mp4", "4 KiB of noise mid-stream").write_bytes(bytes(damaged))
    _audio_only(add("audio_only.mp4", "audio-only MP4"))
    os.symlink(folder / "does-not-exist.mp4", add("dangling.mp4", "dangling symlink"))
    os.mkfifo(add("fifo.mp4", "FIFO named .mp4"))
    add("dir.mp4", "directory named .mp4").mkdir()
    os.symlink("loop_b.mp4", add("loop_a.mp4", "symlink loop"))
    os.symlink("loop_a.mp4", folder / "loop_b.mp4")
    kinds["loop_b.mp4"] = "symlink loop"
    bad_name = os.fsencode(str(folder)) + b"/caf\xe9.mp4"
    shutil.copy(folder / "clean.mp4", bad_name)
    kinds[os.fsdecode(b"caf\xe9.mp4")] = "file name not valid UTF-8"
    data = ROOT / "tests" / "data" / "videos"
    for real in sorted(data.glob("*")):
        if real.suffix.lower() in (".avi", ".mpg", ".mp4", ".mkv", ".ts", ".mov"):
            shutil.copy(real, add(f"real_{real.name}", f"real legacy file {real.name} (tests/data/videos)"))
    return kinds


# ---------------------------------------------------------------- checks

def _decoded(path: str) -> tuple[int, tuple[int, int] | None]:
    from soraprep.video.io import probe

    n, size = 0, None
    with av.open(path) as c:
        for f in c.decode(video=0):
            n += 1
            size = (f.width, f.height)
    info = probe(path)
    if size and info.rotation in (90, 270):
        size = (size[1], size[0])
    return n, size


def check_run(out: Path, inputs: Path | None, entries: list[str]) -> dict:
    from soraprep.manifest import read_manifest, resolve_path

    res = {"rows_lost": 0, "wrong_rows": 0, "rows": 0, "kept": 0, "errors": 0, "notes": []}
    man = out / "manifest.parquet"
    if not man.exists():
        res["rows_lost"] = len(entries)
        res["notes"].append("no manifest")
        return res
    rows = read_manifest(man)
    res["rows"] = len(rows)
    res["kept"] = sum(1 for r in rows if r.get("keep"))
    res["errors"] = sum(1 for r in rows if r.get("error"))
    if inputs is not None:
        named = {os.path.basename(os.fsdecode(str(r.get("source") or ""))) for r in rows}
        for e in entries:
            if e not in named:
                res["rows_lost"] += 1
                res["notes"].append(f"no row for {e!r}")
    for r in rows:
        if not r.get("keep") or r.get("cut_mode") in (None, "none"):
            continue
        path = resolve_path(man, r["path"])
        try:
            n, size = _decoded(path)
        except Exception as exc:  # noqa: BLE001 - any failure to read a kept clip is a wrong row
            res["wrong_rows"] += 1
            res["notes"].append(f"{r['clip_id']}: unreadable ({exc})")
            continue
        if n != r["num_frames"] or (size and size != (r["width"], r["height"])):
            res["wrong_rows"] += 1
            res["notes"].append(f"{r['clip_id']}: file has {n} frames {size}, row says {r['num_frames']} "
                                f"{(r['width'], r['height'])}")
    return res


def _digest(out: Path) -> list[tuple]:
    """What must not depend on interruptions: every row's id, span, decision and clip file size."""
    from soraprep.manifest import read_manifest, resolve_path

    man = out / "manifest.parquet"
    return [(r["clip_id"], r.get("start_frame"), r.get("end_frame"), r.get("num_frames"), r.get("keep"),
             r.get("filter_reason"), (r.get("error") or {}).get("kind"),
             os.path.getsize(resolve_path(man, r["path"])) if r.get("keep") and r.get("cut_mode") != "none" else None)
            for r in read_manifest(man)]


def outcomes(out: Path) -> dict[str, str]:
    """Entry name -> what the user got (rows kept / dropped by which rules / error kinds)."""
    from soraprep.manifest import read_manifest

    by: dict[str, list[dict]] = {}
    for r in read_manifest(out / "manifest.parquet"):
        by.setdefault(os.path.basename(str(r.get("source") or "")), []).append(r)
    res = {}
    for name, rows in sorted(by.items()):
        errors = sorted({f"{r['error']['stage']}/{r['error']['kind']}" for r in rows if r.get("error")})
        rules = sorted({part.split("=")[0].split("<")[0].split(">")[0] for r in rows
                        if not r.get("keep") and not r.get("error") for part in (r.get("filter_reason") or "").split("; ")})
        kept = sum(1 for r in rows if r.get("keep"))
        res[name] = f"{len(rows)} rows, {kept} kept" + (f", dropped by {', '.join(rules)}" if rules else "") + \
            (f", errors {', '.join(errors)}" if errors else "")
    return res


def plant_user_files(out: Path) -> None:
    for name in USER_FILES:
        p = out / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"user data: {name}\n")


def user_files_deleted(out: Path) -> int:
    return sum(1 for name in USER_FILES if not (out / name).exists())


def cli(args: list[str], timeout: float, *, kill_after: float | None = None) -> dict:
    cmd = [sys.executable, "-m", "soraprep.cli", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        out, err = p.communicate(timeout=kill_after or timeout)
        hang = False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        hang = kill_after is None
    return {"rc": p.returncode, "hang": hang, "wall_s": round(time.perf_counter() - t0, 2),
            "traceback": "Traceback (most recent call last)" in err.decode(errors="replace"),
            "stderr_tail": err.decode(errors="replace")[-600:], "stdout_tail": out.decode(errors="replace")[-400:]}


# ---------------------------------------------------------------- runs

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timeout", type=float, default=300.0, help="wall-clock limit per run (s)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray runner run")
    ap.add_argument("--kill-after", type=float, default=2.0, help="seconds before the kill -9 of the resume run")
    args = ap.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    corpus = WORK / "in"
    kinds = build_corpus(corpus)
    entries = sorted(os.fsdecode(e) for e in os.listdir(os.fsencode(str(corpus))))
    runs: list[dict] = []

    def record(name: str, r: dict, out: Path | None, inputs: Path | None = corpus, expect_rc=(0, 1)):
        chk = check_run(out, inputs, entries) if out is not None and r["rc"] in (0, 1) else {}
        row = {"run": name, **r, **chk,
               "crash": (r["rc"] not in expect_rc and not r["hang"]) or r["traceback"],
               "user_files_deleted": user_files_deleted(out) if out is not None else 0}
        runs.append(row)
        flag = "CRASH" if row["crash"] else "HANG" if r["hang"] else "ok"
        print(f"{name:44s} rc={r['rc']} {flag:5s} rows={chk.get('rows')} kept={chk.get('kept')} "
              f"err={chk.get('errors')} lost={chk.get('rows_lost')} wrong={chk.get('wrong_rows')} "
              f"deleted={row['user_files_deleted']} {r['wall_s']}s", flush=True)
        for n in chk.get("notes", [])[:8]:
            print("    ", n)
        if row["crash"] or r["hang"]:
            print("    ", r["stderr_tail"].strip().replace("\n", "\n     "))
        return row

    t = args.timeout
    configs = [("default, 2 workers", []), ("--cut exact", ["--cut", "exact"]),
               ("--cut keyframe, 1 worker", ["--cut", "keyframe", "-w", "1"]), ("--cut none", ["--cut", "none"]),
               ("--recipe opensora-like", ["--recipe", "opensora-like"])]
    for name, extra in configs:
        out = WORK / f"out-{len(runs)}"
        out.mkdir(parents=True)
        plant_user_files(out)
        w = [] if "-w" in extra else ["-w", "2"]
        record(name, cli(["curate", str(corpus), "-o", str(out), "-q", *w, *extra], t), out)
    first = WORK / "out-0"
    record("rerun into the same OUT (resume, nothing to do)", cli(["curate", str(corpus), "-o", str(first), "-q"], t),
           first)
    record("rerun same OUT with --cut exact (changed recipe)",
           cli(["curate", str(corpus), "-o", str(first), "-q", "--cut", "exact"], t), first, expect_rc=(0, 1, 2))
    killed = WORK / "out-killed"
    killed.mkdir()
    plant_user_files(killed)
    cli(["curate", str(corpus), "-o", str(killed), "-q", "-w", "2"], t, kill_after=args.kill_after)
    row = record(f"SIGKILL after {args.kill_after:g} s, then resume",
                 cli(["curate", str(corpus), "-o", str(killed), "-q", "-w", "2"], t), killed)
    if _digest(killed) != _digest(first):  # resume must equal the uninterrupted run
        row["wrong_rows"] = row.get("wrong_rows", 0) + 1
        print("     the resumed manifest differs from the uninterrupted run's")
    inner = corpus / "out-inside"
    inner.mkdir()
    plant_user_files(inner)
    for i in range(2):
        r = cli(["curate", str(corpus), "-o", str(inner), "-q", "-w", "2"], t)
        row = record(f"OUT inside the input folder, run {i + 1}", r, inner)
        if row.get("rows") and i == 1 and row["rows"] != runs[-2].get("rows"):
            row["crash"] = True
            print("     rows changed between runs:", runs[-2].get("rows"), "->", row["rows"])
    shutil.rmtree(inner)
    # two runs on one OUT at once: the second must refuse (exit 2), the first must finish true
    both = WORK / "out-both"
    both.mkdir()
    plant_user_files(both)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p1 = subprocess.Popen([sys.executable, "-m", "soraprep.cli", "curate", str(corpus), "-o", str(both), "-q"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    time.sleep(3.0)
    record("second run on an OUT in use", cli(["curate", str(corpus), "-o", str(both), "-q"], 60), None,
           expect_rc=(2,))
    o1, e1 = p1.communicate(timeout=t)
    record("first run of two on one OUT", {"rc": p1.returncode, "hang": False, "wall_s": 0.0,
                                           "traceback": b"Traceback" in e1, "stderr_tail": e1.decode()[-600:],
                                           "stdout_tail": o1.decode()[-400:]}, both)
    # hostile manifest
    import pyarrow as pa
    import pyarrow.parquet as pq

    hostile = WORK / "hostile.parquet"
    clean = str(corpus / "clean.mp4")
    pq.write_table(pa.table({
        "source": [clean, str(corpus / "odd.mp4"), "file:///etc/passwd", "concat:" + clean, "pipe:0",
                   "http://127.0.0.1:9/x.mp4", "../../../../etc/hostname"],
        "clip_id": ["a", "a", "c", "d", "e", "f", "../../escape"],
    }), hostile)
    hout = WORK / "out-hostile"
    hout.mkdir()
    plant_user_files(hout)
    record("hostile manifest (dup ids, protocols, traversal)",
           cli(["curate", str(hostile), "-o", str(hout), "-q"], t), hout, inputs=None, expect_rc=(0, 1, 2))
    if not args.no_ray:
        rout = WORK / "out-ray"
        rout.mkdir()
        plant_user_files(rout)
        record("--runner ray", cli(["curate", str(corpus), "-o", str(rout), "-q", "--runner", "ray", "-w", "2"], t),
               rout)
    summary = {"kinds_tried": len(set(kinds.values())), "entries": len(entries), "runs": len(runs),
               "crashes": sum(bool(r["crash"]) for r in runs), "hangs": sum(bool(r["hang"]) for r in runs),
               "rows_lost": sum(r.get("rows_lost", 0) for r in runs),
               "wrong_rows": sum(r.get("wrong_rows", 0) for r in runs),
               "user_files_deleted": sum(r["user_files_deleted"] for r in runs)}
    report = {"summary": summary, "kinds": kinds, "outcomes_default_run": outcomes(first), "runs": runs}
    (WORK / "reliability.json").write_text(json.dumps(report, indent=1))
    for name, what in report["outcomes_default_run"].items():
        print(f"  {name!r:28} {kinds.get(name, ''):48} {what}")
    print(json.dumps(summary))
    bad = summary["crashes"] + summary["hangs"] + summary["rows_lost"] + summary["wrong_rows"]
    return 1 if bad + summary["user_files_deleted"] else 0


if __name__ == "__main__":
    sys.exit(main())
