"""Estimated vs published GPU-hours for every ground-truth run of soraprep/estimate/published.yaml.

Run:  python benchmarks/estimate_vs_published.py [--json]

Same numbers as ``soraprep estimate --published`` (the table in docs/estimate.md): each run is
estimated from its public config with ``soraprep.estimate.plan.estimate`` (the code users run) at 100 %
of peak, and its utilisation is predicted by the efficiency model fitted *without that run*
(leave-one-out, ridge strength chosen by an inner leave-one-out). Also prints what a fixed
``--mfu 0.4`` (the old default) would have said, and per-run details with --json.

``--nested-selection`` repeats the *choice of features* inside every fold as well (all subsets of up
to three of seven candidate features, chosen by an inner leave-one-out on the other runs): the honest
out-of-sample error of the whole procedure, since the shipped feature set was itself chosen on these
runs. Takes about a minute.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math

import numpy as np

from soraprep.estimate import efficiency
from soraprep.estimate.published import calibration_table, format_report, leave_one_out


def candidate_features() -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    t = calibration_table()
    f = [e.features for e in t.estimates]
    cols = {
        "log_width": np.log([x.width / 1152 for x in f]),
        "log_tokens": np.log([x.tokens / 4096 for x in f]),
        "log_step_seconds": np.log([x.step_seconds for x in f]),
        "hopper": np.array([float(x.hopper) for x in f]),
        "recompute_full": np.array([float(x.recompute_full) for x in f]),
        "online_share": np.array([x.online_share for x in f]),
        "log_gpus": np.log([x.num_gpus / 64 for x in f]),
    }
    return cols, t.y, t.ids


def nested_selection() -> dict:
    """Leave-one-out where each fold also picks its feature subset by an inner leave-one-out."""
    cols, y, ids = candidate_features()
    combos = [c for k in (1, 2, 3) for c in itertools.combinations(cols, k)]
    n = len(y)
    rows = []
    for i in range(n):
        keep = np.arange(n) != i
        scored = []
        for c in combos:
            X = np.column_stack([cols[k] for k in c])[keep]
            pred, _ = efficiency.leave_one_out(X, y[keep])
            scored.append((float(np.median(np.abs(y[keep] - pred))), c))
        _, best = min(scored)
        X = np.column_stack([cols[k] for k in best])
        m = efficiency.fit(X[keep], y[keep], efficiency.choose_lambda(X[keep], y[keep]))
        log_u = m.intercept + float(np.dot(m.coef, (X[i] - np.asarray(m.mean)) / np.asarray(m.scale)))
        rows.append({"id": ids[i], "features": list(best), "ratio": math.exp(y[i] - log_u)})
    a = np.abs([math.log(r["ratio"]) for r in rows])
    return {"runs": rows, "median_factor": math.exp(float(np.median(a))),
            "within_1_5x": int(np.sum(a <= math.log(1.5)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the full result as one JSON object")
    ap.add_argument("--nested-selection", action="store_true", help="also choose the features inside each fold")
    args = ap.parse_args()
    res = leave_one_out()
    if args.nested_selection:
        res["nested_selection"] = nested_selection()
    if args.json:
        print(json.dumps(res, indent=1))
        return
    print(format_report(res))
    if args.nested_selection:
        ns = res["nested_selection"]
        print(f"feature choice repeated inside every fold: median factor {ns['median_factor']:.2f}, "
              f"{ns['within_1_5x']} of {len(ns['runs'])} within 1.5x")
        for r in ns["runs"]:
            print(f"  {r['id']}: {', '.join(r['features'])} -> {r['ratio']:.2f}x")


if __name__ == "__main__":
    main()
