"""Seeding "sklearn-bins" (scikit-learn's bin_seeding=True) against
MeanShift(bandwidth=h, bin_seeding=True), and its cost against "both".

Each generator data set (above the every-point limit) is split over 3 parties,
standardised with SecureStandardScaler (pooled), h = estimate_bandwidth(quantile
0.25); the plaintext twin with "sklearn-bins" and with "both" (dusts and local
modes) against scikit-learn's bin seeding: clusters, ARI of nearest-centre
labels, largest centre offset in h. Summary mode (cell h/4, as "auto" above
20,000 points) is measured the same way. ``--secure N``: also the secure engine
(3 parties, transport "local") on the first data set at N points with both
seedings: wall seconds, seeds, iterations. Writes
benchmarks/results/bin_seeds.json (+ bin_seeds.png with --secure).

    .venv/bin/python benchmarks/bin_seeds.py [--points 3000] [--secure 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sklearn import datasets  # noqa: E402
from sklearn.cluster import MeanShift, estimate_bandwidth  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from secure_meanshift import SecureStandardScaler  # noqa: E402
from secure_meanshift.binseeds import MAX_BIN_SEEDS, n_bin_seeds  # noqa: E402
from secure_meanshift.centroid_match import match_error  # noqa: E402
from secure_meanshift.params import MeanShiftParams  # noqa: E402
from secure_meanshift.plaintext import reference_meanshift  # noqa: E402

OUT = os.path.join(ROOT, "benchmarks", "results")


def generators(n: int) -> dict:
    rs = 170
    aniso = datasets.make_blobs(n, random_state=rs)[0] @ np.array([[0.6, -0.6], [-0.4, 0.8]])
    return {
        "blobs": datasets.make_blobs(n, centers=5, random_state=rs)[0],
        "moons": datasets.make_moons(n, noise=0.05, random_state=rs)[0],
        "circles": datasets.make_circles(n, factor=0.5, noise=0.05, random_state=rs)[0],
        "anisotropic blobs": aniso,
        "varied-density blobs": datasets.make_blobs(n, cluster_std=[1.0, 2.5, 0.5],
                                                    random_state=rs)[0],
        "blobs 3-D": datasets.make_blobs(n, n_features=3, centers=4, random_state=rs)[0],
    }


def _standardised(x: np.ndarray) -> tuple:
    parts = np.array_split(x, 3)
    z = SecureStandardScaler(engine="plaintext").fit(parts).transform(parts)
    zall = np.concatenate(z)
    return z, zall, float(estimate_bandwidth(zall, quantile=0.25))


def _compare(centres: np.ndarray, sk, zall: np.ndarray, h: float) -> dict:
    near = ((zall[:, None, :] - centres[None]) ** 2).sum(2).argmin(1)
    err, unmatched = match_error(centres, sk.cluster_centers_)
    return {"clusters": len(centres), "ari": float(adjusted_rand_score(sk.labels_, near)),
            "offset_h": (err / h) if unmatched == 0 else None}


def twin_rows(n: int) -> list:
    rows = []
    for name, x in generators(n).items():
        z, zall, h = _standardised(x)
        sk = MeanShift(bandwidth=h, bin_seeding=True).fit(zall)
        base = MeanShiftParams(bandwidth=h, bounds=(tuple(zall.min(0)), tuple(zall.max(0))),
                               max_iter=300, seeding="both")
        row = {"data": name, "points": n, "dim": x.shape[1], "h": h,
               "bins": n_bin_seeds(base), "sklearn_clusters": len(sk.cluster_centers_)}
        for mode, summary in (("exact", None), ("summary", 0.25)):
            for seeding in ("sklearn-bins", "both"):
                if seeding == "sklearn-bins" and row["bins"] > MAX_BIN_SEEDS:
                    continue
                p = replace(base, seeding=seeding, summary=summary)
                t = time.perf_counter()
                r = reference_meanshift(z, p)
                row[f"{mode} {seeding}"] = {**_compare(r.centroids, sk, zall, h),
                                            "twin_s": time.perf_counter() - t}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def secure_rows(n: int) -> list:
    from secure_meanshift.simulate import run_simulation

    x = generators(n)["blobs"]
    z, zall, h = _standardised(x)
    sk = MeanShift(bandwidth=h, bin_seeding=True).fit(zall)
    rows = []
    for seeding in ("sklearn-bins", "both"):
        p = MeanShiftParams(bandwidth=h, bounds=(tuple(zall.min(0)), tuple(zall.max(0))),
                            max_iter=300, seeding=seeding)
        t = time.perf_counter()
        got = run_simulation(z, p, transport="local", timeout_s=300).receiver
        row = {"seeding": seeding, "points": n, "parties": 3, "h": h,
               "seeds": p.n_seeds(3, n), "wall_s": time.perf_counter() - t,
               "iterations": got.iterations, **_compare(got.centroids, sk, zall, h)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _plot(rows: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar([f"{r['seeding']}\n{r['seeds']} seeds" for r in rows], [r["wall_s"] for r in rows])
    ax.set_ylabel("secure wall (s), 3 parties")
    ax.set_title(f"blobs, {rows[0]['points']:,} points")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=3000)
    ap.add_argument("--secure", type=int, default=0, help="secure runs at this many points")
    a = ap.parse_args()
    out = {"twin": twin_rows(a.points)}
    if a.secure:
        out["secure"] = secure_rows(a.secure)
        _plot(out["secure"], os.path.join(OUT, "bin_seeds.png"))
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "bin_seeds.json"), "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
