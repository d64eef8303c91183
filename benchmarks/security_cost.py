"""What the secure runtime costs (issue 8): cryptographic randomness, the dealer
and TLS links against the engine before them (gloo, CrypTen's trusted first
party, MT19937), measured side by side in one run.

    git worktree add /tmp/sms-baseline b46582d      # the engine before issue 8
    .venv/bin/python benchmarks/security_cost.py --baseline /tmp/sms-baseline [--repeats 3]
    .venv/bin/python benchmarks/security_cost.py --quick       # smaller, no 100k run

Every run is the ``secure-meanshift simulate`` CLI of a checkout (its own
processes, its own --json report), so both engines run exactly as a user runs
them. Variants of this checkout: dealer + TLS (the default), dealer + plaintext
links, first-party + plaintext (rank 0 deals, as before; for the ratio only).
Settings run round-robin, --repeats times each; the median is kept.

Writes security_cost.json (and security_cost.png) into --out (default
benchmarks/results): s/iteration, bytes/iteration between parties and from the
dealer, and the ratios the issue budgets (secure / baseline <= 1.1; TLS /
plaintext; 4 parties / 2 parties <= 2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

VARIANTS = {
    "secure": ["--provider", "dealer", "--transport", "tls"],
    "dealer_plaintext": ["--provider", "dealer", "--transport", "trusted-network"],
    "first_party_plaintext": ["--provider", "first-party", "--transport", "trusted-network"],
}


def settings(quick: bool) -> dict:
    base = ["--centers", "8", "--bandwidth", "0.1", "--seeding", "dust", "--dust", "8",
            "--summary", "exact", "--no-sklearn", "--quiet"]
    s = {
        "base_100_2p": dict(args=base + ["--points", "100", "--parties", "2"]),
        "points_1000_2p": dict(args=base + ["--points", "1000", "--parties", "2"]),
        "points_1000_3p": dict(args=base + ["--points", "1000", "--parties", "3"]),
        "points_1000_4p": dict(args=base + ["--points", "1000", "--parties", "4"]),
    }
    if not quick:
        s["points_100k_2p_flat"] = dict(args=base + ["--points", "100000", "--parties", "2",
                                                     "--oblivious", "--max-iter", "3"])
    return s


def run_cli(checkout: str, args: list, timeout: float) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    env = dict(os.environ, PYTHONPATH=checkout)
    cmd = [sys.executable, "-m", "meanshift_cli", "simulate", *args, "--json", out]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True,
                         timeout=timeout)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed in {checkout}: {res.stderr[-400:]}")
    with open(out) as fh:
        r = json.load(fh)
    os.unlink(out)
    n_it = max(1, len(r["timings"]["per_iteration"]))
    comm = r["communication"]
    return {"s_per_iteration": r["timings"]["mean_iteration_s"],
            "bytes_per_iteration": comm["bytes"] / n_it,
            "dealer_bytes_per_iteration": comm.get("dealer_bytes", 0) / n_it,
            "rounds_per_iteration": comm["rounds"] / n_it,
            "iterations": len(r["timings"]["per_iteration"]), "wall_s": wall,
            "max_abs_error": r["max_abs_error"], "provider": r.get("provider", "TFP"),
            "transport": r.get("transport", "gloo")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", help="checkout of the engine before issue 8 (optional)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--timeout", type=float, default=1800.0)
    args = ap.parse_args(argv)

    runs: dict = {}
    plan = []
    for name, s in settings(args.quick).items():
        for v, extra in VARIANTS.items():
            plan.append((name, v, ROOT, s["args"] + extra))
        if args.baseline:
            plan.append((name, "baseline", os.path.abspath(args.baseline), s["args"]))
    for rep in range(args.repeats):
        for name, v, checkout, a in plan:
            r = run_cli(checkout, a, args.timeout)
            runs.setdefault(name, {}).setdefault(v, []).append(r)
            print(f"[{rep + 1}/{args.repeats}] {name:<22} {v:<22} "
                  f"{r['s_per_iteration']:.4f} s/it  {r['bytes_per_iteration'] / 1e6:7.2f} MB/it"
                  f"  dealer {r['dealer_bytes_per_iteration'] / 1e6:6.2f} MB/it", flush=True)

    table: dict = {}
    for name, by_v in runs.items():
        table[name] = {v: {k: statistics.median(r[k] for r in rs)
                           for k in ("s_per_iteration", "bytes_per_iteration",
                                     "dealer_bytes_per_iteration", "rounds_per_iteration",
                                     "max_abs_error")}
                       for v, rs in by_v.items()}
    ratios: dict = {}
    for name, t in table.items():
        sec = t["secure"]["s_per_iteration"]
        r = {"tls_over_plaintext": sec / t["dealer_plaintext"]["s_per_iteration"],
             "secure_over_first_party_plaintext":
                 sec / t["first_party_plaintext"]["s_per_iteration"]}
        if "baseline" in t:
            r["secure_over_baseline"] = sec / t["baseline"]["s_per_iteration"]
            r["budget_secure_over_baseline"] = 1.1
            r["met"] = r["secure_over_baseline"] <= 1.1
        ratios[name] = r
    if "points_1000_4p" in table and "points_1000_2p" in table:
        for v in table["points_1000_2p"]:
            ratios[f"4p_over_2p_at_1000_{v}"] = (table["points_1000_4p"][v]["s_per_iteration"]
                                                 / table["points_1000_2p"][v]["s_per_iteration"])
    if "base_100_2p" in table:
        ratios["base_secure_s_per_iteration"] = table["base_100_2p"]["secure"]["s_per_iteration"]
    report = {"what": "issue 8: cost of CSPRNG + dealer + TLS, side by side",
              "repeats": args.repeats, "baseline": args.baseline,
              "variants": {"baseline": "the checkout given by --baseline (gloo, TFP)",
                           **{k: " ".join(v) for k, v in VARIANTS.items()}},
              "median": table, "ratios": ratios, "runs": runs,
              "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "security_cost.json")
    with open(path, "w") as fh:
        json.dump(report, fh, indent=2)
    print(f"wrote {path}")
    try:
        _plot(table, os.path.join(args.out, "security_cost.png"))
    except Exception as exc:  # noqa: BLE001 - the JSON is the result; the plot is a view
        print(f"no plot ({type(exc).__name__})")
    for name, r in ratios.items():
        print(f"{name}: {r}")
    return 0


def _plot(table: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(table)
    variants = [v for v in ("baseline", "first_party_plaintext", "dealer_plaintext", "secure")
                if any(v in table[n] for n in names)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    x = np.arange(len(names))
    w = 0.8 / len(variants)
    for i, v in enumerate(variants):
        t = [table[n].get(v, {}).get("s_per_iteration", np.nan) for n in names]
        b = [table[n].get(v, {}).get("bytes_per_iteration", np.nan) / 1e6 for n in names]
        axes[0].bar(x + i * w, t, w, label=v)
        axes[1].bar(x + i * w, b, w, label=v)
    for ax, title in zip(axes, ("s / iteration", "MB sent between parties / iteration")):
        ax.set_xticks(x + 0.4 - w / 2)
        ax.set_xticklabels(names, rotation=20, fontsize=8)
        ax.set_yscale("log")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
