"""SecureMeanShift against scikit-learn's MeanShift on scikit-learn's generators.

Each data set is split over 3 parties, standardised with SecureStandardScaler
(the pooled mean and variance), h = sklearn.cluster.estimate_bandwidth(quantile
0.25) on the standardised pooled data; then SecureMeanShift(h) (default: the
plaintext twin; ``--secure`` also runs the secure engine) against
MeanShift(bandwidth=h). Reports clusters, the adjusted Rand index of the labels
and the largest centre offset (in h). Writes
benchmarks/results/estimator_generators.json and prints a Markdown table.

    .venv/bin/python benchmarks/estimator_generators.py [--secure] [--points 600]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sklearn import datasets  # noqa: E402
from sklearn.cluster import MeanShift, estimate_bandwidth  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from secure_meanshift import SecureMeanShift, SecureStandardScaler  # noqa: E402
from secure_meanshift.centroid_match import match_error  # noqa: E402


def generators(n: int, rs: int = 170) -> dict:
    """scikit-learn's generators, n points each, random_state rs."""
    aniso = datasets.make_blobs(n, random_state=rs)[0] @ np.array([[0.6, -0.6], [-0.4, 0.8]])
    return {
        "moons": datasets.make_moons(n, noise=0.05, random_state=rs)[0],
        "circles": datasets.make_circles(n, factor=0.5, noise=0.05, random_state=rs)[0],
        "anisotropic blobs": aniso,
        "varied-density blobs": datasets.make_blobs(n, cluster_std=[1.0, 2.5, 0.5],
                                                    random_state=rs)[0],
        "blobs 6-D": datasets.make_blobs(n, n_features=6, centers=4, random_state=rs)[0],
        "blobs 10-D": datasets.make_blobs(n, n_features=10, centers=5, random_state=rs)[0],
    }


def one(name: str, x: np.ndarray, secure: bool) -> dict:
    parts = np.array_split(x, 3)
    scaler = SecureStandardScaler(engine="plaintext").fit(parts)
    z = scaler.transform(parts)
    zall = np.concatenate(z)
    h = float(estimate_bandwidth(zall, quantile=0.25))
    sk = MeanShift(bandwidth=h).fit(zall)
    row = {"data": name, "points": len(x), "dim": x.shape[1], "h": h,
           "sklearn_clusters": len(sk.cluster_centers_), "sklearn_n_iter": int(sk.n_iter_)}
    for engine in (("plaintext", "secure") if secure else ("plaintext",)):
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = SecureMeanShift(h, engine=engine, verbose=0, timeout_s=600).fit(z)
        err, unmatched = match_error(est.cluster_centers_, sk.cluster_centers_)
        same_order = (len(est.cluster_centers_) == len(sk.cluster_centers_) and
                      np.abs(est.cluster_centers_ - sk.cluster_centers_).max() < 1e-3 * h)
        row[engine] = {"clusters": len(est.cluster_centers_),
                       "ari": float(adjusted_rand_score(np.concatenate(est.labels_),
                                                        sk.labels_)),
                       "offset_h": float(err / h), "unmatched": int(unmatched),
                       "n_iter": int(est.n_iter_), "same_order": bool(same_order),
                       "wall_s": time.perf_counter() - t}
    return row


def table(rows: list) -> str:
    engines = [e for e in ("plaintext", "secure") if e in rows[0]]
    head = "| data (3 parties, standardised) | points | d | scikit-learn clusters | " + \
        " | ".join(f"{e} clusters / ARI / offset / n_iter = / order =" for e in engines) + " |"
    lines = [head, "|" + " --- |" * (4 + len(engines))]
    for r in rows:
        cells = [f"{r[e]['clusters']} / {r[e]['ari']:.3f} / {r[e]['offset_h']:.4f} h / "
                 f"{'yes' if r[e]['n_iter'] == r['sklearn_n_iter'] else 'no'} / "
                 f"{'yes' if r[e]['same_order'] else 'no'}" for e in engines]
        lines.append(f"| {r['data']} | {r['points']:,} | {r['dim']} | {r['sklearn_clusters']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--secure", action="store_true", help="also run the secure engine")
    ap.add_argument("--points", type=int, default=600)
    a = ap.parse_args()
    rows = []
    for name, x in generators(a.points).items():
        rows.append(one(name, x, a.secure))
        print(json.dumps(rows[-1]), flush=True)
    os.makedirs(os.path.join(ROOT, "benchmarks", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "benchmarks", "results", "estimator_generators.json"), "w") as fh:
        json.dump({"rows": rows}, fh, indent=1)
    print(table(rows))


if __name__ == "__main__":
    main()
