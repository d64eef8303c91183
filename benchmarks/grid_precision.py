"""How coarse may the engine's 2^-16 point grid be relative to the bandwidth?

The plaintext twin (the secure engine's arithmetic grid, every point a seed)
against scikit-learn's MeanShift on blobs of sd h/2 within +-10 h, with one
point moved farther and farther out, so that the bounds (and the grid step,
2^-16 of the widest span) grow. Writes benchmarks/results/grid_precision.json.
The estimator's refusal (step > h/32) and warning (step > h/100) thresholds in
secure_meanshift/validation.py come from this.

    .venv/bin/python benchmarks/grid_precision.py
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sklearn.cluster import MeanShift  # noqa: E402
from sklearn.datasets import make_blobs  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from secure_meanshift.data import data_bounds  # noqa: E402
from secure_meanshift.params import MeanShiftParams  # noqa: E402
from secure_meanshift.data import POINT_BITS  # noqa: E402
from secure_meanshift.plaintext import reference_meanshift  # noqa: E402

OUTLIERS = [None, 300, 655, 1000, 1500, 2048, 3300, 8000, 20000, 100_000]


def one(x: np.ndarray, h: float = 1.0) -> dict:
    sk = MeanShift(bandwidth=h).fit(x)
    b = data_bounds([x])
    p = MeanShiftParams(bandwidth=h, bounds=b, seeding="points", max_iter=300)
    half = len(x) // 2
    ref = reference_meanshift([x[:half], x[half:]], p)
    lab = np.argmin(((x[:, None] - ref.centroids[None]) ** 2).sum(-1), 1)
    step = float(np.max(np.subtract(b[1], b[0]))) * 2.0 ** -POINT_BITS
    return {"step_over_h": step / h, "sklearn_clusters": len(sk.cluster_centers_),
            "twin_clusters": len(ref.centroids),
            "ari": float(adjusted_rand_score(sk.labels_, lab))}


def main() -> None:
    rows = []
    for rs, n, centres in ((3, 600, 13), (5, 500, 10)):
        base, _ = make_blobs(n, centers=centres, center_box=(-10, 10), cluster_std=0.5,
                             random_state=rs)
        for out in OUTLIERS:
            x = base.copy()
            if out is not None:
                x[0, 0] = out
            row = {"random_state": rs, "outlier": out, **one(x)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    os.makedirs(os.path.join(ROOT, "benchmarks", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "benchmarks", "results", "grid_precision.json"), "w") as fh:
        json.dump({"rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
