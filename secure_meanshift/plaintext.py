"""The plaintext twin: numpy, same dust, same kernel, same division guard,
same stopping and merging rules as the secure protocol (see protocol.py).

Works in the unit box; :func:`reference_meanshift` takes and returns data units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .data import from_unit, to_unit
from .division import EMPTY_BELOW
from .kernels import plain_kernel
from .params import MeanShiftParams, dust_indices


@dataclass
class PlainResult:
    centroids: np.ndarray          # (c, d) data units, merged
    sizes: Optional[np.ndarray]    # (c,) points nearest to each centroid, or None
    iterations: int
    unmerged: np.ndarray           # (m, d) data units, before merging


def sq_distances(c: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(m, n) squared distances as |c|^2 - 2 c.x + |x|^2 (the secure formula)."""
    return (c * c).sum(1)[:, None] - 2.0 * c @ x.T + (x * x).sum(1)[None, :]


def merge_keep(c: np.ndarray, radius: float) -> np.ndarray:
    """keep_i = no earlier centroid j < i lies within the merge radius."""
    close = sq_distances(c, c) <= radius**2
    earlier = np.tril(np.ones_like(close, dtype=bool), k=-1)
    return ~(close & earlier).any(axis=1)


def meanshift_unit(x: np.ndarray, w: np.ndarray, p: MeanShiftParams
                   ) -> tuple[np.ndarray, np.ndarray, int]:
    """Weighted mean-shift in the unit box. x (N, d), w (N,).
    Returns (unmerged centroids (m, d), keep mask (m,), iterations)."""
    c = x[dust_indices(p.seed, len(x), p.n_dust)].copy()
    xw = np.concatenate([x * w[:, None], w[:, None]], axis=1)
    it = 0
    for it in range(1, p.max_iter + 1):
        k = plain_kernel(sq_distances(c, x), p)
        s = k @ xw
        den = s[:, -1:]
        new = np.where(den >= EMPTY_BELOW, s[:, :-1] / np.maximum(den, EMPTY_BELOW), c)
        moved = bool((np.abs(new - c) >= p.tol_unit).any())
        c = new
        if not p.oblivious and not moved:
            break
    return c, merge_keep(c, p.merge_unit), it


def nearest_sizes(c: np.ndarray, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    near = np.argmin(sq_distances(c, x), axis=0)
    return np.bincount(near, weights=w, minlength=len(c))


def reference_meanshift(parts: Sequence[np.ndarray], p: MeanShiftParams,
                        weights: Optional[Sequence[np.ndarray]] = None) -> PlainResult:
    """Run the twin on the parties' points (data units), concatenated in rank order.

    With ``p.summary`` set, each party's points are summarised exactly as the
    secure run does (summary.py), unless ``weights`` are given explicitly."""
    units = [to_unit(q, p.lo, p.scale) for q in parts]
    if p.summary is not None and weights is None:
        from .summary import summarize

        pairs = [summarize(u, p.h_unit * p.summary) for u in units]
        units, weights = [a for a, _ in pairs], [b for _, b in pairs]
    x = np.concatenate(units)
    w = (np.concatenate([np.asarray(v, float) for v in weights]) if weights is not None
         else np.ones(len(x)))
    c, keep, it = meanshift_unit(x, w, p)
    sizes = nearest_sizes(c[keep], x, w) if p.return_sizes else None
    if p.min_cluster_size > 1:         # as protocol.suppress_small (sizes before it)
        big = nearest_sizes(c[keep], x, w) >= p.min_cluster_size - 0.5
        sizes = sizes[big] if sizes is not None else None
        keep[np.flatnonzero(keep)[~big]] = False
    cents, order = sort_rows(from_unit(c[keep], p.lo, p.scale))
    sizes = sizes[order] if sizes is not None else None
    return PlainResult(cents, sizes, it,
                       from_unit(c, p.lo, p.scale))


def sort_rows(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical order (lexicographic by coordinates) for comparing centroid sets."""
    order = np.lexsort(c.T[::-1]) if len(c) else np.arange(0)
    return c[order], order
