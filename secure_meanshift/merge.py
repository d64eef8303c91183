"""The merging rules on plaintext centroids, as the secure protocol applies
them on shares (protocol.py): scikit-learn's keep-by-intensity (its tie
rule included: equal intensities, the lexicographically larger centre) and the
"first" rule. Used by the plaintext twin (plaintext.py) and each party's local
seed finder (seeds.py)."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .mpc.division import EMPTY_BELOW

INTENSITY_BITS = 16   # the intensities' fixed-point scale on shares (mpc.fixedpoint.BULK_BITS)
KEY_WIDTH = 61        # bits of a merge key difference: 2 (K_j - K_i) +- 1 stays in the ring


def sq_distances(c: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(m, n) squared distances as |c|^2 - 2 c.x + |x|^2 (the secure formula)."""
    return (c * c).sum(1)[:, None] - 2.0 * c @ x.T + (x * x).sum(1)[None, :]


def merge_keep(c: np.ndarray, radius: float) -> np.ndarray:
    """The "first" rule: keep_i = no earlier centroid j < i lies within the merge radius."""
    close = sq_distances(c, c) <= radius**2
    earlier = np.tril(np.ones_like(close, dtype=bool), k=-1)
    return ~(close & earlier).any(axis=1)


def key_layout(precision_bits: int, max_intensity: float, dim: int) -> tuple[int, int]:
    """(S, k) of the merge key: K = I 2^(kS) + sum_t C_t 2^((k-1-t)S), with I the
    intensity's encoding (scale 2^INTENSITY_BITS) and C_t coordinate t's
    (scale 2^precision_bits). A coordinate of the unit box (with the range
    check's slack) lies in (-2^(S-1), 2^(S-1)), S = precision_bits + 2, so K's
    order is the lexicographic order of (I, C_0, ..., C_(k-1)). k is the most
    coordinates for which |2 (K_j - K_i) +- 1| stays below 2^63 (the sign test's
    ring) given the public bound ``max_intensity``; 0 leaves the intensity alone."""
    digit = precision_bits + 2
    ibits = _intensity_bits(max_intensity)
    return digit, max(0, min(dim, (KEY_WIDTH - ibits) // digit))


def dominance_width(precision_bits: int, max_intensity: float, dim: int) -> Optional[int]:
    """A PUBLIC sign-test width for 2 (K_j - K_i) +- 1 (key_layout): I < 2^(ibits - 1)
    and |C_t| < 2^(S-1) give |K| < 2^(ibits + kS), so the difference lies in
    [-2^(l-1), 2^(l-1)) for l = ibits + kS + 3 (one bit of margin); None (the
    whole ring) from 64 bits on. 52 bits instead of 64 at 1,000 points."""
    digit, k = key_layout(precision_bits, max_intensity, dim)
    width = _intensity_bits(max_intensity) + k * digit + 3
    return width if width < 64 else None


def _intensity_bits(max_intensity: float) -> int:
    return INTENSITY_BITS + int(math.ceil(math.log2(max(max_intensity, 1.0) + 2.0))) + 1


def merge_keys(c: np.ndarray, intensity: np.ndarray, precision_bits: int,
               max_intensity: float) -> np.ndarray:
    """(m,) int64 merge keys (key_layout) from the exact encodings the secure
    engine would hold for these centroids (unit box) and intensities."""
    digit, k = key_layout(precision_bits, max_intensity, c.shape[1])
    key = np.round(np.asarray(intensity, np.float64) * 2.0**INTENSITY_BITS).astype(np.int64)
    for t in range(k):
        key = key * (1 << digit) + np.round(c[:, t] * 2.0**precision_bits).astype(np.int64)
    return key


def dominance(keys: np.ndarray) -> np.ndarray:
    """dom[i, j] = centroid j outranks i: scikit-learn's order (higher intensity,
    then the lexicographically larger centre: a larger merge key), the lower
    index last. On shares: one sign test of 2 (K_j - K_i) +- 1 per pair."""
    m = len(keys)
    j_lt_i = np.tril(np.ones((m, m), dtype=bool), k=-1)
    dom = (keys[None, :] > keys[:, None]) | ((keys[None, :] == keys[:, None]) & j_lt_i)
    return dom & ~np.eye(m, dtype=bool)


def merge_keep_intensity(c: np.ndarray, intensity: np.ndarray, radius: float,
                         min_weight: float = EMPTY_BELOW, precision_bits: int = 20,
                         max_intensity: Optional[float] = None) -> np.ndarray:
    """scikit-learn's rule: in scikit-learn's order (dominance), keep a centroid
    unless a kept one lies within the radius; drop empty ones. Computed as rounds of
    keep_i = nonempty_i * prod_j (1 - A_ij keep_j), A = dominates & close, from
    keep = nonempty until nothing changes: the greedy answer, reached after at
    most m rounds (the secure engine does the same).
    "Empty" means an intensity below ``min_weight`` (params.keep_threshold).
    ``max_intensity``: the public bound of an intensity the secure engine uses
    (key_layout; default: the largest intensity given)."""
    keep, _ = merge_with_pairs(c, intensity, radius, min_weight, precision_bits,
                               max_intensity)
    return keep


def merge_with_pairs(c: np.ndarray, intensity: np.ndarray, radius: float, min_weight: float,
                     precision_bits: int, max_intensity: Optional[float]) -> tuple:
    """merge_keep_intensity's (keep, the pairs (loser i, kept winner j) that the
    order decided: decisive_ties' input)."""
    m = len(c)
    if max_intensity is None:
        max_intensity = float(np.max(intensity)) if m else 1.0
    keys = merge_keys(c, intensity, precision_bits, max_intensity)
    a = dominance(keys) & (sq_distances(c, c) <= radius**2)
    nonempty = intensity >= min_weight
    keep = greedy_keep(a, nonempty)
    loser, winner = np.nonzero(a & keep[None, :] & nonempty[:, None])
    return keep, (loser, winner)


def greedy_keep(a: np.ndarray, nonempty: np.ndarray) -> np.ndarray:
    """The greedy answer for A = outranks & close: rounds of
    keep_i = nonempty_i * prod_j (1 - A_ij keep_j) from keep = nonempty until
    nothing changes (at most m rounds)."""
    keep = nonempty.copy()
    for _ in range(len(a)):
        new = nonempty & ~(a & keep[None, :]).any(axis=1)
        if np.array_equal(new, keep):      # the fixed point: the greedy answer
            break
        keep = new
    return keep


def decisive_ties(c: np.ndarray, intensity: np.ndarray, pairs: tuple, precision_bits: int,
                  max_intensity: float) -> np.ndarray:
    """One row per pair (a kept centroid j, a nonempty one i within the merge
    radius that j outranks, hence suppresses): [|I_j - I_i|, the gap of the
    coordinate that decided their order (unit box; inf if the intensity
    encodings differ, 0 if only the index did), |c_j - c_i|]. Where such a gap is
    within the secure engine's fixed-point error, the secure run may keep i
    instead of j (PlainResult.tie_gaps)."""
    loser, winner = pairs
    if len(loser) == 0:
        return np.zeros((0, 3))
    _, k = key_layout(precision_bits, max_intensity, c.shape[1])
    q = 2.0**precision_bits
    ienc = np.round(np.asarray(intensity, np.float64) * 2.0**INTENSITY_BITS)
    coord = np.full(len(loser), np.inf)
    same = ienc[winner] == ienc[loser]
    coord[same] = 0.0
    undecided = same.copy()
    for t in range(k):
        differ = undecided & (np.round(c[winner, t] * q) != np.round(c[loser, t] * q))
        coord[differ] = np.abs(c[winner, t] - c[loser, t])[differ]
        undecided &= ~differ
    dist = np.sqrt(((c[winner] - c[loser]) ** 2).sum(1))
    return np.stack([np.abs(intensity[winner] - intensity[loser]), coord, dist], axis=1)
