"""The engine's speed targets, measured side by side in one run (issues 2 and 5).

    .venv/bin/python benchmarks/targets.py [--quick] [--out DIR]

Writes targets.json: seconds per iteration of each setting, the target, and
whether it is met. Large settings run a fixed number of iterations
(oblivious mode) so that every run does the same work.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_common import (REPORT, MeanShiftParams, machine, report_data,  # noqa: E402
                           secure_run, write_json)


def setting(points, parties=2, dusts=8, kernel="flat", iters=None, centers=8):
    parts = report_data(points, centers, parties)
    p = MeanShiftParams(bandwidth=0.1, bounds=([0, 0], [1, 1]), n_dust=dusts, kernel=kernel,
                        max_iter=iters or 20, oblivious=iters is not None)
    r = secure_run(parts, p, timeout_s=600)
    r.pop("centroids")
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small N instead of 100,000")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()
    big = 5_000 if args.quick else 100_000
    runs = {
        "base_100pts_8dusts_2parties_flat": (setting(100), 0.1),
        "1000pts": (setting(1000), 0.3),
        f"{big}pts_8dusts_2parties_flat": (setting(big, iters=3), 5.0),
        "base_4parties": (setting(100, parties=4), None),
        f"{big}pts_32dusts_2parties_gaussian_exact": (
            setting(big, dusts=32, kernel="gaussian", iters=3), 10.0),
    }
    out = {"machine": machine(), "report_their_code_here_s_per_iteration":
           REPORT["their_code_here"], "targets": {}}
    for name, (r, target) in runs.items():
        out["targets"][name] = {"s_per_iteration": r["s_per_iteration"], "target_s": target,
                                "met": None if target is None else r["s_per_iteration"] <= target,
                                "detail": r}
    two = runs["base_100pts_8dusts_2parties_flat"][0]["s_per_iteration"]
    four = runs["base_4parties"][0]["s_per_iteration"]
    out["targets"]["4_vs_2_parties_ratio"] = {"ratio": four / two, "target": 3.0,
                                              "met": four / two <= 3.0,
                                              "report_ratio": 22.5 / 3.2}
    out["speedup_vs_report_code_base"] = REPORT["their_code_here"] / two
    write_json(os.path.join(args.out, "targets.json"), out)
    for name, t in out["targets"].items():
        val = t.get("s_per_iteration", t.get("ratio"))
        print(f"{name:45s} {val:8.3f}  target {t.get('target_s', t.get('target'))}  "
              f"met={t['met']}")
    print(f"wrote {args.out}/targets.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
