"""The dust job at 1,000 points, 2 and 4 parties, this tree's engine against
another checkout's, side by side: issue 19's "4 parties at most 1.5x the
2-party time" (benchmarks/results/peers_scaling.json measured 1.85x with
peers.py --only 2p_1000,4p_1000 --mode lan).

    .venv/bin/python benchmarks/king_scaling.py --engine base=/tmp/base --repeats 3

Each run is benchmarks/peers.py's ``run_ours`` of that checkout (the simulator
CLI, TLS on loopback, dealer; s/iteration = the report's mean_iteration_s),
round-robin over repeats, settings and engines; the median per engine and
setting is kept. ``--seeding points --parties 3`` runs the every-point job
instead. No SPU. Writes --out/king_scaling.json (--name to change the name).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _bench_common import machine, write_json  # noqa: E402


def _peers_module(root: str):
    """benchmarks/peers.py of the checkout at root (its run_ours runs that engine)."""
    spec = importlib.util.spec_from_file_location(
        f"peers_{abs(hash(root))}", os.path.join(root, "benchmarks", "peers.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", action="append", default=[], metavar="NAME=ROOT")
    ap.add_argument("--parties", type=int, nargs="*", default=[2, 4])
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeding", choices=("dust", "points"), default="dust")
    ap.add_argument("--name", default="king_scaling")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args()
    engines = {"this": ROOT, **dict(e.split("=", 1) for e in a.engine)}
    mods = {e: _peers_module(r) for e, r in engines.items()}
    runs: dict = {e: {p: [] for p in a.parties} for e in engines}
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="king-scaling-") as tmp:
        for rep in range(a.repeats):
            for p in a.parties:
                for e, mod in mods.items():
                    s = dict(parties=p, points=a.points,
                             extra=["--seeding", a.seeding] if a.seeding != "dust" else [])
                    o = mod.run_ours(s, "lan", {}, 1800.0, tmp)
                    runs[e][p].append(o)
                    print(f"[{rep + 1}/{a.repeats}] {e} {p}p: {o['s_per_iteration']:.4f} s/it, "
                          f"{o['total_bytes_per_iteration'] / 1e3:.0f} kB/it, "
                          f"wall {o['wall_s']:.1f} s, "
                          f"err {o['max_abs_error']:.2e}", flush=True)
    table = {}
    for e in engines:
        table[e] = {}
        for p in a.parties:
            rs = runs[e][p]
            table[e][str(p)] = {
                "s_per_iteration_median": statistics.median(r["s_per_iteration"] for r in rs),
                "s_per_iteration_all": [r["s_per_iteration"] for r in rs],
                "wall_s_median": statistics.median(r["wall_s"] for r in rs),
                "wall_s_all": [r["wall_s"] for r in rs],
                "bytes_per_iteration": statistics.median(r["bytes_per_iteration"] for r in rs),
                "dealer_bytes_per_iteration": statistics.median(
                    r["dealer_bytes_per_iteration"] for r in rs),
                "rounds_per_iteration_job": statistics.median(
                    r["rounds_per_iteration_job"] for r in rs),
                "max_abs_error": max(r["max_abs_error"] for r in rs)}
        lo, hi = str(min(a.parties)), str(max(a.parties))
        if lo != hi:
            table[e][f"ratio_{hi}p_over_{lo}p"] = round(
                table[e][hi]["s_per_iteration_median"] / table[e][lo]["s_per_iteration_median"],
                3)
            print(e, f"{hi}p/{lo}p time ratio", table[e][f"ratio_{hi}p_over_{lo}p"])
    for e in list(engines)[1:]:          # this tree over each other engine, per setting
        for p in map(str, a.parties):
            mine, other = table["this"][p], table[e][p]
            ratios = {k: round(mine[k] / other[k], 3) for k in
                      ("s_per_iteration_median", "wall_s_median", "bytes_per_iteration")}
            table[f"this_over_{e}"] = {**table.get(f"this_over_{e}", {}), p: ratios}
            print(f"this/{e} {p}p:", ratios)
    data = {"what": __doc__.split("\n\n")[0], "command": " ".join(sys.argv),
            "engines": engines, "machine": machine(), "load_at_start": load0,
            "load_at_end": os.getloadavg(), "points": a.points, "seeding": a.seeding,
            "table": table}
    os.makedirs(a.out, exist_ok=True)
    write_json(os.path.join(a.out, f"{a.name}.json"), data)


if __name__ == "__main__":
    main()
