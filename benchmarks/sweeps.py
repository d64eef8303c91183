"""The report's sweeps on this machine (issue 2): seconds per iteration versus
dusts, parties, radius (the report's Fig. 4) and versus points, centres
(Fig. 6), with the per-module split, next to the report's own figures.

    .venv/bin/python benchmarks/sweeps.py [--quick] [--out DIR] [--repeats N]
                                          [--max-iter N] [--oblivious]

Writes into --out (default benchmarks/results): sweeps.json, fig4_params.png,
fig6_data.png, modules.png. Every sweep varies one value around the report's
base setting (100 points, 8 centres, R = 0.1, 2 parties, 8 dusts, flat
kernel); the base run is shared by all sweeps. With --repeats N every setting
runs N times round-robin and the run with the median s/iteration is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _bench_common import (BASE, REPORT, MeanShiftParams, log, machine,  # noqa: E402
                           report_data, run_settings, write_json)

SWEEPS = {
    "dusts": [4, 6, 8, 10, 12],
    "parties": [2, 3, 4],
    "radius": [0.05, 0.1, 0.15, 0.2, 0.25],
    "points": [100, 200, 500, 1000],
    "centers": [4, 6, 8, 10, 12],
}
# --quick: the base setting plus one other value per sweep
QUICK = {"dusts": [8, 12], "parties": [2, 3], "radius": [0.1, 0.25], "points": [100, 200],
         "centers": [4, 8]}
LABELS = {"dusts": "number of dusts", "parties": "number of parties", "radius": "radius R",
          "points": "number of points", "centers": "number of centres"}


def _key(s: dict) -> tuple:
    return tuple(s[k] for k in sorted(s))


def run_sweeps(quick: bool = False, repeats: int = 1, max_iter: int = 20,
               oblivious: bool = False) -> dict:
    """Run the sweeps; returns the JSON-ready result (also used by scale_report.py)."""
    sweeps = QUICK if quick else SWEEPS
    settings: dict = {}
    for name, values in sweeps.items():
        for v in values:
            s = {**BASE, name: v}
            settings.setdefault(_key(s), s)

    def make(s):
        parts = report_data(s["points"], s["centers"], s["parties"])
        p = MeanShiftParams(bandwidth=s["radius"], bounds=([0, 0], [1, 1]), n_dust=s["dusts"],
                            kernel="flat", max_iter=max_iter, oblivious=oblivious, seeding="dust",
                            summary=None)
        return parts, p, 120.0

    def label(key, r):
        s = settings[key]
        return (f"points={s['points']} centres={s['centers']} R={s['radius']} "
                f"parties={s['parties']} dusts={s['dusts']}: {r['s_per_iteration']:.3f} "
                f"s/iteration ({r['iterations']} iterations, merge {r['merge_s']:.3f} s)")

    runs = run_settings(settings, make, repeats, label)
    results = {
        "machine": machine(), "base": BASE, "report": REPORT, "quick": quick,
        "repeats": repeats, "max_iter": max_iter, "oblivious": oblivious, "kernel": "flat",
        "notes": ("s_per_iteration: mean over iterations of the loop time (distances, "
                  "kernel, update incl. division and stop test), merging excluded; "
                  "s_per_iteration_incl_merge spreads the one-off merge+reveal over the "
                  "iterations. module_split: mean seconds per iteration per module, "
                  "merge_s once per job. Report figures: 2021 laptop, their code."),
        "sweeps": {},
    }
    for name, values in sweeps.items():
        rows = []
        for v in values:
            s = {**BASE, name: v}
            r = dict(runs[_key(s)])
            r.pop("centroids", None)
            rows.append({**s, "value": v, **r})
        results["sweeps"][name] = rows
    base = runs[_key(BASE)]
    results["base_s_per_iteration"] = base["s_per_iteration"]
    results["base_s_per_iteration_incl_merge"] = base["s_per_iteration_incl_merge"]
    results["speedup_vs_report_base"] = REPORT["base"] / max(base["s_per_iteration"], 1e-9)
    results["speedup_vs_report_code_here"] = (REPORT["their_code_here"]
                                              / max(base["s_per_iteration"], 1e-9))
    sp = base["module_split"]
    results["base_module_ratio_distance_to_kernel_update"] = (
        sp["distance_s"] / max(sp["kernel_s"] + sp["update_s"], 1e-12))
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: base plus one value per sweep, 3 iterations")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--repeats", type=int, default=1, help="runs per setting (median kept)")
    ap.add_argument("--max-iter", type=int, default=20,
                    help="iteration limit (default 20, as the report's measured run)")
    ap.add_argument("--oblivious", action="store_true",
                    help="run exactly --max-iter iterations (no early stop)")
    ap.add_argument("--plot-only", metavar="SWEEPS_JSON",
                    help="redraw the plots from an existing sweeps.json, run nothing")
    args = ap.parse_args()
    if args.plot_only:
        with open(args.plot_only) as fh:
            plot(json.load(fh), args.out)
        log(f"wrote plots into {args.out}")
        return 0
    max_iter = 3 if args.quick else args.max_iter
    results = run_sweeps(args.quick, max(1, args.repeats), max_iter, args.oblivious)
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "sweeps.json"), results)
    plot(results, args.out)
    log(f"base: {results['base_s_per_iteration']:.3f} s/iteration "
        f"({results['speedup_vs_report_base']:.0f}x faster than the report's 3.5 s)")
    log(f"wrote {args.out}/sweeps.json, fig4_params.png, fig6_data.png, modules.png")
    return 0


def plot(results: dict, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)

    def panel(ax, name):
        rows = results["sweeps"][name]
        xs = [r["value"] for r in rows]
        ax.plot(xs, [r["s_per_iteration"] for r in rows], "o-", c="C0",
                label="this engine, s/iteration")
        ax.plot(xs, [r["s_per_iteration_incl_merge"] for r in rows], ".:", c="C0", alpha=0.6,
                label="this engine, merge spread over iterations")
        if any(r.get("repeats", 1) > 1 for r in rows):
            ax.fill_between(xs, [r["s_per_iteration_min"] for r in rows],
                            [r["s_per_iteration_max"] for r in rows], color="C0", alpha=0.15,
                            label="min-max over repeats")
        rep = {float(k): v for k, v in results["report"].get(name, {}).items()}
        if rep:
            ax.plot(list(rep), list(rep.values()), "s--", c="C3",
                    label="report (2021 laptop, their code)")
        else:
            ax.text(0.5, 0.5, "no report figures for this sweep", transform=ax.transAxes,
                    ha="center", fontsize=8, color="C3")
        ax.set_xticks(sorted(set(xs) | set(rep)))
        ax.set_xlabel(LABELS[name])
        ax.set_ylabel("seconds per iteration (log)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)

    base = results["base"]
    sub = (f"base: {base['points']} points, {base['centers']} centres, R={base['radius']}, "
           f"{base['parties']} parties, {base['dusts']} dusts, flat kernel; "
           f"{results['machine']['cpus']} cores")
    for fname, names, title in [
            ("fig4_params.png", ["dusts", "parties", "radius"], "Parameter sweeps (report Fig. 4)"),
            ("fig6_data.png", ["points", "centers"], "Data sweeps (report Fig. 6)")]:
        fig, axes = plt.subplots(1, len(names), figsize=(4.8 * len(names), 4.2))
        for ax, n in zip(axes, names):
            panel(ax, n)
        fig.suptitle(f"{title}\n{sub}", fontsize=10)
        fig.tight_layout()
        fig.savefig(os.path.join(out, fname), dpi=100)
        plt.close(fig)

    names = list(results["sweeps"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 4.2), sharey=False)
    mods = [("distance_s", "distances (module 2)"), ("kernel_s", "kernel / comparison (3a)"),
            ("update_s", "update, division, stop test (3b)")]
    for ax, n in zip(axes, names):
        rows = results["sweeps"][n]
        xs = [str(r["value"]) for r in rows]
        bottom = [0.0] * len(rows)
        for i, (k, lab) in enumerate(mods):
            vals = [r["module_split"].get(k, 0.0) for r in rows]
            ax.bar(xs, vals, bottom=bottom, label=lab, color=f"C{i}")
            bottom = [b + v for b, v in zip(bottom, vals)]
        merge = [r["merge_s"] / max(r["iterations_timed"], 1) for r in rows]
        ax.bar(xs, merge, bottom=bottom, label="merge + reveal (4), per iteration",
               color="C3", alpha=0.6)
        ax.set_xlabel(LABELS[n])
        ax.set_ylabel("seconds per iteration")
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7)
    ratio = results.get("base_module_ratio_distance_to_kernel_update", 0.0)
    fig.suptitle("Per-module split (report: module 2 : module 3 about 7 : 4; here at base "
                 f"distances : kernel+update = {ratio:.2f} : 1)", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "modules.png"), dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
