"""The report's sweeps on this machine: seconds per iteration versus dusts,
parties, radius (report Fig. 4) and versus points, centres (Fig. 6), with the
per-module split. Writes sweeps.json and fig4_params.png, fig6_data.png,
modules.png into --out (default benchmarks/results).

    .venv/bin/python benchmarks/sweeps.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_common import (REPORT, MeanShiftParams, machine, report_data,  # noqa: E402
                           secure_run, write_json)

BASE = dict(points=100, centers=8, radius=0.1, parties=2, dusts=8)
SWEEPS = {
    "dusts": [4, 6, 8, 10, 12],
    "parties": [2, 3, 4],
    "radius": [0.05, 0.1, 0.15, 0.2, 0.25],
    "points": [100, 200, 500, 1000],
    "centers": [4, 6, 8, 10, 12],
}


def one(setting: dict, max_iter: int) -> dict:
    parts = report_data(setting["points"], setting["centers"], setting["parties"])
    p = MeanShiftParams(bandwidth=setting["radius"], bounds=([0, 0], [1, 1]),
                        n_dust=setting["dusts"], kernel="flat", max_iter=max_iter)
    r = secure_run(parts, p)
    r.pop("centroids")
    return {**setting, **r}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two values per sweep, 3 iterations")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--max-iter", type=int, default=20)
    args = ap.parse_args()
    max_iter = 3 if args.quick else args.max_iter
    results = {"machine": machine(), "base": BASE, "report": REPORT, "sweeps": {}}
    for name, values in SWEEPS.items():
        vals = values[:2] if args.quick else values
        rows = []
        for v in vals:
            r = one({**BASE, name: v}, max_iter)
            print(f"{name}={v}: {r['s_per_iteration']:.3f} s/iteration "
                  f"({r['iterations']} iterations)", flush=True)
            rows.append(r)
        results["sweeps"][name] = rows
    base_row = next(r for r in results["sweeps"]["dusts"] if r["dusts"] == BASE["dusts"]) \
        if not args.quick else results["sweeps"]["dusts"][0]
    results["base_s_per_iteration"] = base_row["s_per_iteration"]
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "sweeps.json"), results)
    plot(results, args.out)
    print(f"wrote {args.out}/sweeps.json and plots")
    return 0


def plot(results: dict, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def panel(ax, name, xlabel):
        rows = results["sweeps"][name]
        xs = [r[name] for r in rows]
        ax.plot(xs, [r["s_per_iteration"] for r in rows], "o-", label="this engine")
        rep = results["report"].get(name)
        if rep:
            ax.plot(list(rep), list(rep.values()), "s--", label="report (2021 laptop)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds per iteration")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, (n, lab) in zip(axes, [("dusts", "number of dusts"), ("parties", "number of parties"),
                                   ("radius", "radius R")]):
        panel(ax, n, lab)
    fig.suptitle("Secure mean-shift, parameter sweeps (report Fig. 4); base: 100 points, "
                 "8 centres, R=0.1, 2 parties, 8 dusts")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig4_params.png"), dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (n, lab) in zip(axes, [("points", "number of points"), ("centers", "number of centres")]):
        panel(ax, n, lab)
    fig.suptitle("Data sweeps (report Fig. 6)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig6_data.png"), dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    rows = results["sweeps"]["points"]
    xs = [str(r["points"]) for r in rows]
    bottom = [0.0] * len(rows)
    for key, lab in [("distance_s", "distances (module 2)"), ("kernel_s", "kernel (module 3a)"),
                     ("update_s", "update + division + stop test (module 3b)")]:
        vals = [r["module_split"].get(key, 0.0) for r in rows]
        ax.bar(xs, vals, bottom=bottom, label=lab)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xlabel("number of points")
    ax.set_ylabel("seconds per iteration")
    ax.set_title("Per-module split (merging, module 4, runs once at the end)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "modules.png"), dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
