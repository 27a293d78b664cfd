"""Estimated vs published GPU-hours for every ground-truth run of soraprep/estimate/published.yaml.

Run:  python benchmarks/estimate_vs_published.py [--json]

Same numbers as ``soraprep estimate --published`` (the table in docs/estimate.md): each run is
estimated from its public config with ``soraprep.estimate.plan.estimate`` (the code users run) at 100 %
of peak, and its utilisation is predicted by the efficiency model fitted *without that run*
(leave-one-out, ridge strength chosen by an inner leave-one-out). Also prints what a fixed
``--mfu 0.4`` (the old default) would have said, and per-run details with --json.
"""

from __future__ import annotations

import argparse
import json

from soraprep.estimate.published import format_report, leave_one_out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the full result as one JSON object")
    args = ap.parse_args()
    res = leave_one_out()
    print(json.dumps(res, indent=1) if args.json else format_report(res))


if __name__ == "__main__":
    main()
