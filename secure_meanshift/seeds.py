"""Initial centroids ("seeds") that cover the data.

Two sources, concatenated in this (public) order:
- dusts: rows of the joint data picked by the public seed (dust_indices);
- binned local density peaks: each party, on its OWN points in the clear, bins
  them on a grid of side h (scikit-learn's ``bin_seeding`` bin size), keeps the
  occupied cells whose count is at least every neighbouring cell's count (3^d
  neighbourhood), ranks them by count and takes exactly ``seeds_per_party`` of
  them (cycling through the list when there are fewer, so the seed count is
  public and reveals nothing). Each seed is the (weighted) mean of its cell's
  points, rounded to the 2^-16 grid the secure engine shares it on. The seeds
  are then secret-shared like points: other parties never see them.

The budget does not grow with N: with C clusters, a party's peaks are roughly
one per cluster it holds points of, plus fringe noise, so a budget of about 2C
per party covers every cluster whatever its size (tested with 30 clusters,
the smallest 0.1% of the points: tests/test_sklearn_parity.py).
"""

from __future__ import annotations

import itertools

import numpy as np

SEED_GRID_BITS = 16     # seeds are shared at CrypTen's default precision


def local_peaks(unit_points: np.ndarray, weights, h_unit: float, budget: int,
                bin_size: float = 1.0) -> np.ndarray:
    """(budget, d) seeds at this party's binned local density peaks (unit box)."""
    x = np.asarray(unit_points, dtype=np.float64)
    n, d = x.shape if x.ndim == 2 else (0, 1)
    if n == 0:
        return np.full((budget, d), 0.5)
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    size = h_unit * bin_size
    cells = np.floor(x / size).astype(np.int64) + 1           # >= 1: room for the -1 offset
    base = int(cells.max()) + 2
    keys = (cells * base ** np.arange(d, dtype=np.int64)).sum(1)
    uniq, inv = np.unique(keys, return_inverse=True)
    inv = inv.reshape(-1)
    count = np.bincount(inv, weights=w)
    sums = np.stack([np.bincount(inv, weights=w * x[:, j]) for j in range(d)], axis=1)
    peak = np.ones(len(uniq), dtype=bool)
    powers = base ** np.arange(d, dtype=np.int64)
    for off in itertools.product((-1, 0, 1), repeat=d):
        if not any(off):
            continue
        nk = uniq + int(np.dot(off, powers))
        pos = np.clip(np.searchsorted(uniq, nk), 0, len(uniq) - 1)
        found = uniq[pos] == nk
        peak &= ~(found & (count[pos] > count))
    idx = np.flatnonzero(peak)
    idx = idx[np.lexsort((idx, -count[idx]))]                 # by count, then cell order
    chosen = idx[np.arange(budget) % len(idx)]
    seeds = sums[chosen] / count[chosen, None]
    q = 2.0 ** SEED_GRID_BITS
    return np.round(seeds * q) / q


def n_peaks(unit_points: np.ndarray, weights, h_unit: float) -> int:
    """How many distinct peaks a party has (to choose a budget; plaintext only)."""
    s = local_peaks(unit_points, weights, h_unit, 10_000)
    return len(np.unique(s, axis=0))
