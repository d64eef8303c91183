"""The engine's speed targets (issues 2 and 5), measured side by side in one run.

    .venv/bin/python benchmarks/targets.py [--quick] [--out DIR] [--repeats N]

Writes targets.json into --out (default benchmarks/results): for each target the
measured seconds per iteration (or ratio), the target, and met true/false.

- base: 100 points, 8 centres, R = 0.1, 8 dusts, 2 parties, flat kernel,
  normal stopping, at most 20 iterations (as the report's measured run) <= 0.1 s/it
- 1,000 points, otherwise base                                        <= 0.3 s/it
- 100,000 points, 8 dusts, 2 parties, flat (3 iterations, oblivious)  <= 5 s/it
- 4 parties versus 2 parties, base setting otherwise                  <= 3x
- (issue 5) exact mode, gaussian kernel, 100,000 points, 32 dusts,
  2 parties (3 iterations, oblivious)                                 <= 10 s/it

s/iteration = mean loop time per iteration, merging and reveal excluded (they
run once per job; s_per_iteration_incl_merge is also recorded). Keys large_flat and
large_gaussian_exact_32dusts hold the 100,000-point runs (5,000 with --quick).
Settings run round-robin, --repeats times each, median kept.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _bench_common import (REPORT, MeanShiftParams, log, machine, report_data,  # noqa: E402
                           run_settings, write_json)


def settings(quick: bool) -> dict:
    big = 5_000 if quick else 100_000
    it = 2 if quick else 3
    base = dict(points=100, parties=2, dusts=8, kernel="flat", iters=None)
    sets = {
        "base": {**base, "target": 0.1, "what": "base setting, s/iteration"},
        "points_1000": {**base, "points": 1000, "target": 0.3,
                        "what": "1,000 points, s/iteration"},
        "large_flat": {**base, "points": big, "iters": it, "target": 5.0,
                               "what": f"{big:,} points, 8 dusts, 2 parties, flat, s/iteration"},
        "base_3_parties": {**base, "parties": 3, "target": None,
                           "what": "3 parties (for the ratio plot), s/iteration"},
        "base_4_parties": {**base, "parties": 4, "target": None,
                           "what": "4 parties, s/iteration"},
        "large_gaussian_exact_32dusts": {
            **base, "points": big, "dusts": 32, "kernel": "gaussian", "iters": it,
            "target": 10.0,
            "what": f"exact, gaussian, {big:,} points, 32 dusts, 2 parties, s/iteration"},
    }
    if quick:
        del sets["base_3_parties"]
    return sets


def make(s: dict):
    parts = report_data(s["points"], 8, s["parties"])
    p = MeanShiftParams(bandwidth=0.1, bounds=([0, 0], [1, 1]), n_dust=s["dusts"],
                        kernel=s["kernel"], max_iter=s["iters"] or 20,
                        oblivious=s["iters"] is not None, seeding="dust", summary=None)
    return parts, p, 600.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 5,000 instead of 100,000 points, 2 iterations")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--repeats", type=int, default=1, help="runs per setting (median kept)")
    args = ap.parse_args()
    sets = settings(args.quick)
    runs = run_settings(sets, make, max(1, args.repeats),
                        lambda k, r: f"{k}: {r['s_per_iteration']:.3f} s/iteration "
                                     f"({r['iterations']} iterations)")
    out = {"machine": machine(), "quick": args.quick, "repeats": args.repeats,
           "report": {"their_code_here_s_per_iteration": REPORT["their_code_here"],
                      "base_s_per_iteration": REPORT["base"],
                      "points_1000_s_per_iteration": REPORT["points"][1000],
                      "parties_4_over_2": REPORT["parties"][4] / REPORT["parties"][2]},
           "targets": {}, "runs": {}}
    for key, s in sets.items():
        r = dict(runs[key])
        r.pop("centroids", None)
        out["runs"][key] = {**{k: v for k, v in s.items() if k not in ("target", "what")}, **r}
        if s["target"] is not None:
            v = r["s_per_iteration"]
            out["targets"][key] = {"what": s["what"], "value": v, "unit": "s/iteration",
                                   "target": s["target"], "met": v <= s["target"],
                                   "s_per_iteration_incl_merge": r["s_per_iteration_incl_merge"]}
    two = runs["base"]["s_per_iteration"]
    four = runs["base_4_parties"]["s_per_iteration"]
    out["targets"]["parties_4_over_2"] = {
        "what": "4-party over 2-party s/iteration, base setting", "value": four / two,
        "unit": "ratio", "target": 3.0, "met": four / two <= 3.0,
        "report_ratio": REPORT["parties"][4] / REPORT["parties"][2]}
    out["speedup_vs_report_code_here"] = REPORT["their_code_here"] / max(two, 1e-9)
    out["speedup_vs_report_1000_points"] = (REPORT["points"][1000]
                                            / max(runs["points_1000"]["s_per_iteration"], 1e-9))
    out["all_met"] = all(t["met"] for t in out["targets"].values())
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "targets.json"), out)
    log("")
    log(f"{'target':48s} {'value':>9s} {'target':>7s}  met")
    for name, t in out["targets"].items():
        log(f"{name:48s} {t['value']:9.3f} {t['target']:7.1f}  {t['met']}")
    log(f"speed-up over the report's code on this kind of machine (6.9 s/iteration): "
        f"{out['speedup_vs_report_code_here']:.0f}x")
    log(f"wrote {args.out}/targets.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
