"""The merging rules on plaintext centroids, as the secure protocol applies
them on shares (protocol.py): scikit-learn's keep-by-intensity and the
"first" rule. Used by the plaintext twin (plaintext.py) and each party's local
seed finder (seeds.py)."""

from __future__ import annotations

import numpy as np

from .mpc.division import EMPTY_BELOW

TIE = 1.0 / 64      # intensities closer than this tie; the lower seed index wins


def sq_distances(c: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(m, n) squared distances as |c|^2 - 2 c.x + |x|^2 (the secure formula)."""
    return (c * c).sum(1)[:, None] - 2.0 * c @ x.T + (x * x).sum(1)[None, :]


def merge_keep(c: np.ndarray, radius: float) -> np.ndarray:
    """The "first" rule: keep_i = no earlier centroid j < i lies within the merge radius."""
    close = sq_distances(c, c) <= radius**2
    earlier = np.tril(np.ones_like(close, dtype=bool), k=-1)
    return ~(close & earlier).any(axis=1)


def dominance(intensity: np.ndarray) -> np.ndarray:
    """dom[i, j] = centroid j outranks i: higher intensity, or a tie (within TIE)
    and a lower index. One sign test per pair, exactly as on shares."""
    m = len(intensity)
    j_lt_i = np.tril(np.ones((m, m), dtype=bool), k=-1)
    t = np.where(j_lt_i, TIE, -TIE)
    dom = intensity[None, :] - intensity[:, None] + t >= 0
    return dom & ~np.eye(m, dtype=bool)


def merge_keep_intensity(c: np.ndarray, intensity: np.ndarray, radius: float,
                         min_weight: float = EMPTY_BELOW) -> np.ndarray:
    """scikit-learn's rule: in decreasing intensity, keep a centroid unless a kept
    one lies within the radius; drop empty ones. Computed as rounds of
    keep_i = nonempty_i * prod_j (1 - A_ij keep_j), A = dominates & close, from
    keep = nonempty until nothing changes: the greedy answer, reached after at
    most m rounds (the secure engine does the same).
    "Empty" means an intensity below ``min_weight`` (params.keep_threshold)."""
    m = len(c)
    a = dominance(intensity) & (sq_distances(c, c) <= radius**2)
    nonempty = intensity >= min_weight
    keep = nonempty.copy()
    for _ in range(m):
        new = nonempty & ~(a & keep[None, :]).any(axis=1)
        if np.array_equal(new, keep):      # the fixed point: the greedy answer
            break
        keep = new
    return keep
