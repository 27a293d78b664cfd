"""Ray runner overhead vs the local runner: the same videos, the same recipe, the same cores.

Generates ``--videos`` synthetic H.264 videos (``--seconds`` s, 640x360, 25 fps; cached in
``benchmarks/_work/``), then curates them into fresh OUT folders with ``--runner local --workers W`` and with
``--runner ray --workers W`` (a local Ray started once, before the timed runs: ``ray.init`` is reported apart),
interleaved, ``--repeats`` times each; the best wall time of each is compared. The Ray run is the
stage-level pipeline: W analysis actors (one supervised worker process each), a decision actor pool
(cut, commit); the default recipe has no model stage, so this is the pipeline's own overhead.

    python benchmarks/bench_ray.py                       # 12 videos x 20 s, 2 workers, 2 repeats
    python benchmarks/bench_ray.py --videos 16 --seconds 10 --workers 2 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from bench_curate import make_inputs  # noqa: E402


def run(inputs: list[Path], out: Path, runner: str, workers: int) -> tuple[float, int]:
    from soraprep.curate.pipeline import curate

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    result = curate([str(p) for p in inputs], out, workers=workers, runner=runner, report=False)
    return time.perf_counter() - t0, len(result.rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import ray

    from soraprep.curate.recipe import load_recipe
    from soraprep.curate.runners.ray import pools_for
    from soraprep.curate.runners.ray_plan import needs

    inputs = make_inputs(args.videos, args.seconds, 640, 360, "ray")
    tmp = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    pools = pools_for(load_recipe(), tmp, args.workers)
    t0 = time.perf_counter()
    cpus = max(args.workers, int(-(-needs(pools)["CPU"] // 1)))
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t0
    times: dict[str, list[float]] = {"local": [], "ray": []}
    rows: dict[str, int] = {}
    try:
        for i in range(args.repeats):
            for runner in ("local", "ray"):
                wall, n = run(inputs, tmp / f"{runner}{i}", runner, args.workers)
                times[runner].append(wall)
                rows[runner] = n
                print(f"  {runner:5s} run {i + 1}: {wall:6.2f} s, {n} rows", flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    assert rows["local"] == rows["ray"], rows
    best = {k: min(v) for k, v in times.items()}
    load = os.getloadavg()[0]
    print(f"\n{args.videos} videos x {args.seconds} s 640x360, --workers {args.workers}, {os.cpu_count()} cores, "
          f"1-min load {load:.1f}; ray.init {init_s:.1f} s (not in the runs); pools: "
          + ", ".join(f"{p.name} {p.min_actors}x{p.cpus:g} CPU" for p in pools))
    print("| runner | wall times (s) | best (s) | ratio to local |")
    print("|---|---|---|---|")
    for runner in ("local", "ray"):
        print(f"| {runner} | {' / '.join(f'{t:.2f}' for t in times[runner])} | {best[runner]:.2f} | "
              f"{best[runner] / best['local']:.2f} |")


if __name__ == "__main__":
    main()
