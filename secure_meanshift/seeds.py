"""Initial centroids ("seeds") that cover the data.

Two sources, concatenated in this (public) order:
- dusts: rows of the joint data picked by the public seed (dust_indices);
- local density modes: each party, on its OWN points in the clear, bins them
  on a grid of side h (scikit-learn's ``bin_seeding`` bin size), runs flat
  mean-shift from the occupied cells over its own points, merges modes as
  scikit-learn does, ranks them by local intensity and takes exactly
  ``seeds_per_party`` of them (cycling through the list when there are fewer,
  so the seed count is public and reveals nothing). The seeds are then
  secret-shared like points: other parties never see them.

The budget does not grow with N: with C clusters, a party's local modes are
about one per cluster it holds points of (a single point makes a mode), so a
budget of C per party covers every cluster whatever its size (tested with 30 clusters,
the smallest 0.1% of the points: tests/test_sklearn_parity.py).
"""

from __future__ import annotations

import itertools

import numpy as np

from .merge import merge_keep_intensity

SEED_GRID_BITS = 16     # seeds are shared at CrypTen's default precision
MAX_STARTS = 1024       # local mean-shift starts per party (the most populated cells)
LOCAL_ITERS = 50


def _bins(x: np.ndarray, w: np.ndarray, size: float):
    """Occupied cells of side ``size``: (weighted means (B, d), weights (B,))."""
    d = x.shape[1]
    cells = np.floor(x / size).astype(np.int64)
    cells -= cells.min(0)
    base = int(cells.max()) + 1
    keys = (cells * base ** np.arange(d, dtype=np.int64)).sum(1)
    uniq, inv = np.unique(keys, return_inverse=True)
    inv = inv.reshape(-1)
    count = np.bincount(inv, weights=w)
    sums = np.stack([np.bincount(inv, weights=w * x[:, j]) for j in range(d)], axis=1)
    return sums / count[:, None], count


def _local_meanshift(x, w, c, h: float, iters: int = LOCAL_ITERS, chunk: int = 1 << 22):
    """Flat-kernel mean-shift of the starts c over this party's own rows (plaintext,
    own data). Returns (modes, intensity = weight within h of each mode)."""
    xw = np.concatenate([x * w[:, None], w[:, None]], axis=1)
    sq_x = (x * x).sum(1)
    rows = max(1, chunk // max(1, len(c)))

    def sums(c):
        tot = np.zeros((len(c), xw.shape[1]))
        cc = (c * c).sum(1)[:, None]
        for a in range(0, len(x), rows):
            sq = cc - 2.0 * c @ x[a:a + rows].T + sq_x[None, a:a + rows]
            tot += (sq <= h * h).astype(np.float64) @ xw[a:a + rows]
        return tot

    for _ in range(iters):
        s = sums(c)
        new = np.where(s[:, -1:] > 0, s[:, :-1] / np.maximum(s[:, -1:], 1e-300), c)
        done = np.abs(new - c).max() < 1e-4 * h
        c = new
        if done:
            break
    return c, sums(c)[:, -1]


def local_peaks(unit_points: np.ndarray, weights, h_unit: float, budget: int) -> np.ndarray:
    """(budget, d) seeds at this party's local density modes (unit box).

    The party bins its own rows (cells of side h, scikit-learn's bin seeding),
    runs plaintext flat mean-shift from the occupied cells' means (at most
    MAX_STARTS, the most populated) over its own rows, collapses modes within
    h of a stronger one (scikit-learn's rule), ranks the rest by local intensity
    and takes exactly ``budget`` of them, cycling when there are fewer. Rounded to
    the 2^-16 grid the engine shares them on. Everything here is the party's own
    data in the clear; only the fixed-size result is secret-shared."""
    x = np.asarray(unit_points, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        return np.full((budget, x.shape[1] if x.ndim == 2 else 1), 0.5)
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    starts, count = _bins(x, w, h_unit)
    if len(starts) > MAX_STARTS:
        starts = starts[np.argsort(-count, kind="stable")[:MAX_STARTS]]
    modes, inten = _local_meanshift(x, w, starts, h_unit)
    # starts that reached the same mode: one row each (grid of h / 1000), then
    # scikit-learn's merge, vectorised (merge.merge_keep_intensity)
    key = np.round(modes / (h_unit * 1e-3)).astype(np.int64)
    _, first = np.unique(key, axis=0, return_index=True)
    modes, inten = modes[first], inten[first]
    order = np.lexsort((np.arange(len(modes)), -inten))
    modes, inten = modes[order], inten[order]
    modes = modes[merge_keep_intensity(modes, inten, h_unit, 1e-12)]
    if len(modes) == 0:
        modes = starts[:1]
    chosen = modes[np.arange(budget) % len(modes)]
    q = 2.0 ** SEED_GRID_BITS
    return np.round(chosen * q) / q

