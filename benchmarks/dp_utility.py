"""Utility and cost of the differentially private mode (issue 17, docs/privacy.md).

Data: 5 well-separated blobs in 2-D (data.separated_blobs, spread 0.02, centres
>= 0.3 apart) in the unit box, dealt to 3 parties; h = 0.1; per job
delta = 1e-6. For epsilon 0.1 / 1 / 10 and 1,000 / 10,000 / 100,000 points:

- ours: the plaintext twin running the DP mechanism (each party's own discrete
  Gaussian noise on the public grid, fresh every repetition), REPEATS runs;
- diffprivlib's KMeans (central DP: a trusted curator holds all rows; told the
  true k = 5; same epsilon, delta 0), REPEATS runs;
- both against scikit-learn's MeanShift(bandwidth=h) on the pooled rows
  (bin_seeding for 100,000 points): ARI of the labels (nearest centre), the
  offset (largest distance from a centre to the nearest scikit-learn centre and
  back, in units of h), the number of centres.

The secure engine (3 party processes and the dealer) runs epsilon = 1 at 10,000
points (the issue's target: ARI >= 0.95, every centre within 0.1 h), and, side
by side in one run with the same points and the same number of seeds, DP mode
and the exact oblivious mode for 3 iterations each: seconds per iteration.

    .venv/bin/python benchmarks/dp_utility.py [--repeats 5] [--out benchmarks/results/dp_utility.json]

diffprivlib comes from the ``bench`` extra (``pip install -e ".[bench]"``).
diffprivlib 0.6.6's tree models do not import with scikit-learn >= 1.6
(``sklearn.tree._tree.DOUBLE`` is gone); KMeans does not use them, so this
program stands in an empty module for ``diffprivlib.models.forest``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from secure_meanshift.data import separated_blobs, split_even  # noqa: E402
from secure_meanshift.estimator import assign_labels  # noqa: E402
from secure_meanshift.params import MeanShiftParams  # noqa: E402
from secure_meanshift.plaintext import reference_meanshift  # noqa: E402
from secure_meanshift.privacy import noise_scale  # noqa: E402

H = 0.1
K = 5
PARTIES = 3
DELTA = 1e-6
EPSILONS = (0.1, 1.0, 10.0)
SIZES = (1000, 10_000, 100_000)
BOUNDS = ([0.0, 0.0], [1.0, 1.0])


def dp_kmeans_class():
    """diffprivlib's KMeans (see the module docstring for the stand-in module)."""
    if "diffprivlib.models.forest" not in sys.modules:
        stub = types.ModuleType("diffprivlib.models.forest")
        stub.RandomForestClassifier = stub.DecisionTreeClassifier = None
        sys.modules["diffprivlib.models.forest"] = stub
    from diffprivlib.models import KMeans

    return KMeans


def offset_h(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Hausdorff distance between two centre sets, in units of h."""
    if len(a) == 0 or len(b) == 0:
        return float("inf")
    d = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)
    return float(max(d.min(1).max(), d.min(0).max()) / H)


def score(points, labels_ref, centres_ref, centres) -> dict:
    from sklearn.metrics import adjusted_rand_score

    lab = assign_labels(points, centres, H) if len(centres) else np.zeros(len(points), int)
    return {"ari": float(adjusted_rand_score(labels_ref, lab)),
            "offset_h": offset_h(np.asarray(centres), centres_ref),
            "centres": int(len(centres))}


def summarise(runs: list) -> dict:
    ari = [r["ari"] for r in runs]
    off = [r["offset_h"] for r in runs]
    return {"ari_median": float(np.median(ari)), "ari_min": float(np.min(ari)),
            "offset_h_median": float(np.median(off)), "offset_h_max": float(np.max(off)),
            "centres": [r["centres"] for r in runs], "runs": len(runs)}


def data(n: int):
    pts, _ = separated_blobs(n, K, seed=11)
    return pts, split_even(pts, PARTIES, seed=11)


def sklearn_reference(pts: np.ndarray):
    from sklearn.cluster import MeanShift

    ms = MeanShift(bandwidth=H, bin_seeding=len(pts) > 20_000).fit(pts)
    return ms.labels_, ms.cluster_centers_


def dp_params(eps: float, **kw) -> MeanShiftParams:
    return MeanShiftParams(**{"bandwidth": H, "bounds": BOUNDS, "max_iter": 50,
                              "privacy": {"epsilon": eps, "delta": DELTA}, **kw})


def utility_grid(repeats: int) -> list:
    KMeans = dp_kmeans_class()
    rows = []
    for n in SIZES:
        pts, parts = data(n)
        t0 = time.perf_counter()
        labels, centres = sklearn_reference(pts)
        print(f"n={n}: scikit-learn {len(centres)} centres in {time.perf_counter() - t0:.1f} s",
              flush=True)
        for eps in EPSILONS:
            ours = [score(pts, labels, centres, reference_meanshift(parts, dp_params(eps)).centroids)
                    for _ in range(repeats)]
            theirs = []
            for _ in range(repeats):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    km = KMeans(n_clusters=K, epsilon=eps, bounds=tuple(BOUNDS)).fit(pts)
                theirs.append(score(pts, labels, centres, km.cluster_centers_))
            row = {"points": n, "epsilon": eps, "ours_twin": summarise(ours),
                   "diffprivlib_kmeans": summarise(theirs)}
            print(f"  eps={eps:g}: ours ARI {row['ours_twin']['ari_median']:.3f} "
                  f"(min {row['ours_twin']['ari_min']:.3f}), offset "
                  f"{row['ours_twin']['offset_h_max']:.3f} h; diffprivlib ARI "
                  f"{row['diffprivlib_kmeans']['ari_median']:.3f}, offset "
                  f"{row['diffprivlib_kmeans']['offset_h_max']:.3f} h", flush=True)
            rows.append(row)
    return rows


def per_iteration(run) -> float:
    it = run.receiver.per_iteration
    return float(np.mean([t["total_s"] - t["merge_s"] for t in it])) if it else 0.0


def secure_runs() -> dict:
    from secure_meanshift.simulate import run_simulation

    n = 10_000
    pts, parts = data(n)
    labels, centres = sklearn_reference(pts)
    p = dp_params(1.0)
    t0 = time.perf_counter()
    run = run_simulation(parts, p, timeout_s=300, keep_noise=True)
    wall = time.perf_counter() - t0
    got = run.receiver
    twin = reference_meanshift(parts, p, noise=run.dp_noise)
    res = {"points": n, "epsilon": 1.0, "delta": DELTA, **score(pts, labels, centres,
                                                                    got.centroids),
           "iterations": got.iterations, "wall_s": wall, "s_per_iteration": per_iteration(run),
           "secure_vs_twin_h": offset_h(got.centroids, twin.centroids),
           "cells": got.rows, "seeds": p.n_seeds(PARTIES, 0)}
    print(f"secure DP, 10,000 points, eps 1: ARI {res['ari']:.3f}, offset "
          f"{res['offset_h']:.3f} h, {res['s_per_iteration']:.2f} s/iteration", flush=True)
    m = p.n_seeds(PARTIES, 0)
    dp_obl = dp_params(1.0, oblivious=True, max_iter=3)
    exact = MeanShiftParams(bandwidth=H, bounds=BOUNDS, oblivious=True, max_iter=3,
                            seeding="dust", n_dust=m, summary=None)
    cost = {"seeds": m, "iterations": 3, "points": n}
    for name, q in (("dp_oblivious", dp_obl), ("exact_oblivious", exact)):
        r = run_simulation(parts, q, timeout_s=300)
        cost[name] = {"s_per_iteration": per_iteration(r), "share_s": r.receiver.share_s,
                      "rows": r.receiver.rows,
                      "bytes": int(sum(o.communication.get("bytes", 0) for o in r.outcomes))}
        print(f"{name}: {cost[name]['s_per_iteration']:.2f} s/iteration over "
              f"{cost[name]['rows']} rows", flush=True)
    cost["ratio_dp_to_exact"] = (cost["dp_oblivious"]["s_per_iteration"]
                                 / cost["exact_oblivious"]["s_per_iteration"])
    return {"dp_run": res, "cost_per_iteration": cost}


def plot(rows: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for n, style in zip(SIZES, ("o", "s", "^")):
        sel = [r for r in rows if r["points"] == n]
        eps = [r["epsilon"] for r in sel]
        for key, colour, label in (("ours_twin", "C0", "DP mean-shift (ours)"),
                                   ("diffprivlib_kmeans", "C3", "diffprivlib KMeans")):
            axes[0].plot(eps, [r[key]["ari_median"] for r in sel], style + "-", color=colour,
                         label=f"{label}, {n:,} pts")
            axes[1].plot(eps, [min(r[key]["offset_h_max"], 10) for r in sel], style + "-",
                         color=colour, label=f"{label}, {n:,} pts")
    axes[0].set(xscale="log", xlabel="epsilon (per job, delta 1e-6)",
                ylabel="ARI vs scikit-learn MeanShift (median)", ylim=(-0.05, 1.05))
    axes[1].set(xscale="log", yscale="log", xlabel="epsilon",
                ylabel="largest centre offset / h (capped at 10)")
    axes[1].axhline(0.1, color="grey", lw=0.8, ls="--")
    axes[0].legend(fontsize=7)
    fig.suptitle("5 blobs, 3 parties, h = 0.1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "dp_utility.json"))
    ap.add_argument("--no-secure", action="store_true", help="skip the secure runs")
    args = ap.parse_args()
    t0 = time.perf_counter()
    out = {"setting": {"bandwidth": H, "blobs": K, "parties": PARTIES, "delta": DELTA,
                       "bounds": BOUNDS, "repeats": args.repeats,
                       "noise_scale_per_party": {str(e): noise_scale(dp_params(e).privacy)
                                                 for e in EPSILONS}},
           "utility": utility_grid(args.repeats)}
    if not args.no_secure:
        out["secure"] = secure_runs()
    out["wall_s"] = time.perf_counter() - t0
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=2)
    plot(out["utility"], os.path.splitext(args.out)[0] + ".png")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
