"""Local weighted summaries: each party compresses its own points in the clear
(its own data: nothing leaks) into weighted representatives before sharing.

The secure algorithm then runs weighted mean-shift on (representative, count)
pairs: centroid = sum(w k x) / sum(w k).

- d <= 3: a grid of cell side ``cell`` (unit-box units); one representative per
  occupied cell, at the mean of its points, weighted by their count.
- larger d, or a grid with too many occupied cells: k-means (MiniBatchKMeans)
  with MAX_REPRESENTATIVES centres, each weighted by its cluster size.

Error: a point is replaced by a representative at most one cell diagonal
(cell * sqrt(d)) away, and the summary keeps every cell's exact sum, so a
neighbourhood that contains whole cells has the exact mean. Only cells cut by a
kernel's edge move a centroid; with cell = h / 4 the offset stays well below
h / 10 (measured by benchmarks/scale_report.py).
"""

from __future__ import annotations

import numpy as np

MAX_REPRESENTATIVES = 20_000
GRID_MAX_DIM = 3


def summarize(unit_points: np.ndarray, cell: float, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) points -> (s, d) representatives and (s,) positive weights (counts).

    Deterministic for the same input, so the plaintext twin can reproduce it.
    """
    x = np.asarray(unit_points, dtype=np.float64)
    n, d = x.shape
    if d <= GRID_MAX_DIM:
        reps, w = _grid(x, cell)
        if len(reps) <= MAX_REPRESENTATIVES:
            return reps, w
    if n <= MAX_REPRESENTATIVES:
        return x.copy(), np.ones(n)
    return _kmeans(x, MAX_REPRESENTATIVES, seed)


def _grid(x: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    keys = np.floor(x / cell).astype(np.int64)
    keys -= keys.min(axis=0)
    span = keys.max(axis=0) + 1
    flat = np.ravel_multi_index(keys.T, span) if np.prod(span.astype(float)) < 2**62 \
        else np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)
    uniq, inv, counts = np.unique(flat, return_inverse=True, return_counts=True)
    sums = np.zeros((len(uniq), x.shape[1]))
    for j in range(x.shape[1]):
        sums[:, j] = np.bincount(inv, weights=x[:, j], minlength=len(uniq))
    return sums / counts[:, None], counts.astype(np.float64)


def _kmeans(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=8192, n_init=1,
                         max_iter=20).fit(x)
    labels = km.labels_
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.zeros((k, x.shape[1]))
    for j in range(x.shape[1]):
        sums[:, j] = np.bincount(labels, weights=x[:, j], minlength=k)
    keep = counts > 0
    return sums[keep] / counts[keep, None], counts[keep]
