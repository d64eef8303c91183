"""The secure engine against scikit-learn on public clustering data sets (the
ones scikit-learn ships: no download), with SecureMeanShift's defaults.

For each set: standardised features, h = sklearn's estimate_bandwidth(quantile
0.3), the rows dealt at random to 3 parties; scikit-learn's MeanShift(bandwidth=h),
the plaintext twin and the secure engine (3 spawned parties and the dealer).
Figures: clusters, ARI of the labels against scikit-learn's, offset (largest
distance from a centre to the nearest scikit-learn centre and back, in h),
secure against twin (in h), iterations, wall time; and the twin with local-mode
seeds (``seeding="both"``) to show what every-point seeding changes.

    .venv/bin/python benchmarks/public_datasets.py [--out benchmarks/results/public_datasets.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from secure_meanshift.centroid_match import match_error  # noqa: E402
from secure_meanshift.estimator import SecureMeanShift  # noqa: E402


def public_sets() -> list:
    from sklearn import datasets
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    def std(x):
        return StandardScaler().fit_transform(x)

    return [
        ("iris", std(datasets.load_iris().data)),
        ("wine", std(datasets.load_wine().data)),
        ("breast cancer (first 10 features)", std(datasets.load_breast_cancer().data)[:, :10]),
        ("digits (PCA, 4 components)", PCA(4, random_state=0).fit_transform(
            std(datasets.load_digits().data))),
        ("blobs (5-D, 6 centres)", datasets.make_blobs(600, 5, centers=6, random_state=3)[0]),
    ]


def offset_h(c, r, h) -> float:
    d = np.linalg.norm(c[:, None] - r[None], axis=2)
    return float(max(d.min(1).max(), d.min(0).max()) / h) if len(c) and len(r) else float("inf")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parties", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "public_datasets.json"))
    a = ap.parse_args(argv)
    from sklearn.cluster import MeanShift, estimate_bandwidth
    from sklearn.metrics import adjusted_rand_score

    rows = []
    for name, x in public_sets():
        h = float(estimate_bandwidth(x, quantile=0.3, random_state=0))
        idx = np.random.default_rng(0).permutation(len(x))
        parts = np.array_split(x[idx], a.parties)
        sk = MeanShift(bandwidth=h).fit(x)
        row = {"data": name, "points": len(x), "dim": int(x.shape[1]), "bandwidth": h,
               "parties": a.parties, "sklearn_clusters": int(len(sk.cluster_centers_))}
        fits = {}
        for label, kw in (("twin", dict(engine="plaintext")), ("secure", {}),
                          ("twin_local_mode_seeds", dict(engine="plaintext", seeding="both"))):
            t = time.perf_counter()
            est = SecureMeanShift(h, timeout_s=900, **kw).fit(parts)
            fits[label] = est
            row[label] = {"seeding": est.params_.seeding, "clusters": int(len(est.cluster_centers_)),
                          "ari": float(adjusted_rand_score(sk.labels_[idx],
                                                           np.concatenate(est.labels_))),
                          "offset_h": offset_h(est.cluster_centers_, sk.cluster_centers_, h),
                          "iterations": int(est.n_iter_), "wall_s": time.perf_counter() - t}
        row["secure_vs_twin_h"] = match_error(fits["secure"].cluster_centers_,
                                              fits["twin"].cluster_centers_)[0] / h
        rows.append(row)
        s, b = row["secure"], row["twin_local_mode_seeds"]
        print(f"{name:36s} N={len(x):5d} sk={row['sklearn_clusters']}  secure ({s['seeding']}) "
              f"{s['clusters']} ARI {s['ari']:.3f} off {s['offset_h']:.1e} h "
              f"vs twin {row['secure_vs_twin_h']:.1e} h {s['wall_s']:.0f} s | "
              f"'both' twin {b['clusters']} ARI {b['ari']:.3f}", flush=True)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as fh:
        json.dump({"rows": rows, "command": "benchmarks/public_datasets.py " + " ".join(
            argv if argv is not None else sys.argv[1:])}, fh, indent=1)
    print("wrote", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
