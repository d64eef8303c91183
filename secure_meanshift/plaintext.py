"""The plaintext twin: numpy, same dust, same kernel, same division guard,
same stopping and merging rules as the secure protocol (see protocol.py).

Works in the unit box; :func:`reference_meanshift` takes and returns data units.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from .binseeds import BIN_SEEDING, bin_seeds, occupied_bins
from .data import check_points, from_unit, quantise_points, to_unit
from .mpc.division import EMPTY_BELOW
from .kernels import KERNELS, on_edge_grid, plain_kernel
from .merge import decisive_ties, merge_keep, merge_with_pairs, sq_distances
from .params import MeanShiftParams, dust_indices, resolve_seeding, resolve_summary
from .privacy import twin_inputs
from .seeds import local_peaks
from .summary import summarize

if TYPE_CHECKING:
    from .moments import Moments


@dataclass
class PlainResult:
    centroids: np.ndarray          # (c, d) data units, merged
    sizes: Optional[np.ndarray]    # (c,) points nearest to each centroid, or None
    iterations: int
    unmerged: np.ndarray           # (m, d) data units, before merging
    intensity: Optional[np.ndarray] = None   # (m,) kernel weight sums at the last pass
    edge_gap: Optional[float] = None   # flat kernel: closest | |c - x| - h | seen (data units)
    ties: Optional[np.ndarray] = None  # intensity merge: decisive_ties rows, data units
    # scaling "standard": the float64 pooled moments (moments.Moments) and the merged
    # centres in standardised units; ``centroids``/``unmerged`` are then in data
    # units, while edge_gap and ties stay in the run's (standardised) units, h's
    moments: Optional["Moments"] = None
    standardised: Optional[np.ndarray] = None

    def tie_gaps(self, apart: float = 0.0) -> tuple[float, float]:
        """(smallest intensity gap, smallest coordinate gap in data units) that
        decided a kept centroid over a suppressed one more than ``apart`` (data
        units) away: the first over pairs whose intensity encodings differ, the
        second over pairs of equal intensity (0 if only the index decided); inf
        when there is none. The greedy answer depends on the order only through
        these pairs (the kept set stays a fixed point while each keeps its
        order), so with ``apart=0`` the secure engine keeps the twin's centroids
        when the intensity gap exceeds its intensities' fixed-point error (0 for
        the flat kernel's counts, unless edge_gap is within the centroids'
        error) and the coordinate gap its centroids' (2^-precision_bits of the
        unit box); otherwise it may keep the other centroid of such a pair."""
        if self.ties is None:
            return np.inf, np.inf
        far = self.ties[self.ties[:, 2] > apart]
        by_intensity = far[np.isinf(far[:, 1]), 0]
        return (float(by_intensity.min()) if len(by_intensity) else np.inf,
                float(far[:, 1].min()) if len(far) else np.inf)

    def tie_spread(self, intensity_error: float) -> float:
        """The largest distance (data units) from a kept centroid to a centroid
        it suppressed whose intensity is within ``intensity_error`` of its own
        (kernels.intensity_error: the secure engine's), 0 if none. Such a pair is
        a near-tie the twin cannot resolve at the engine's precision (copies of one
        gaussian mode differ in intensity only to second order in their distance):
        the secure run may keep either, so its centroid lies within the engine's
        arithmetic error of the twin's kept centroid or of such a copy."""
        if self.ties is None:
            return 0.0
        close = self.ties[self.ties[:, 0] <= intensity_error]
        return float(close[:, 2].max()) if len(close) else 0.0


def initial_seeds(units: Sequence[np.ndarray], weights: Optional[Sequence[np.ndarray]],
                  p: MeanShiftParams) -> np.ndarray:
    """(m, d) initial centroids: dusts, then each party's binned peaks (seeds.py)."""
    x = np.concatenate(units)
    if p.seeding == "points":
        return x.copy()
    if p.seeding == BIN_SEEDING:        # every candidate bin (binseeds.py)
        return bin_seeds(p)
    parts = []
    if p.uses_dust:
        parts.append(x[dust_indices(p.seed, len(x), p.n_dust)])
    if p.uses_bins:
        for i, u in enumerate(units):
            parts.append(local_peaks(u, None if weights is None else weights[i], p.h_unit,
                                     p.seeds_per_party))
    return np.concatenate(parts).copy()


def meanshift_unit(x: np.ndarray, w: np.ndarray, p: MeanShiftParams,
                   seeds: Optional[np.ndarray] = None, occupied: Optional[np.ndarray] = None):
    """Weighted mean-shift in the unit box. x (N, d), w (N,). ``occupied`` (m,) 0/1
    (seeding "sklearn-bins"): a seed whose bin is unoccupied counts as empty at the merge.
    Returns (unmerged centroids (m, d), keep mask (m,), iterations, intensity (m,),
    closest approach of a point to a flat kernel's edge (unit box), the merge's
    decisive_ties (unit box) or None)."""
    c = (x[dust_indices(p.seed, len(x), p.n_dust)] if seeds is None else seeds).copy()
    xw = np.concatenate([x * w[:, None], w[:, None]], axis=1)
    it = 0
    gap = np.inf
    active = np.ones(len(c), bool)      # seeds not yet stopped
    den = np.zeros((len(c), 1))
    grid = on_edge_grid if KERNELS[p.kernel].radius2 is not None else (lambda v: v)
    for it in range(1, p.max_iter + 1):
        sq = sq_distances(grid(c), x)      # the flat kernel's edge: c on the points' grid
        if p.kernel == "flat":
            gap = min(gap, float(np.abs(np.sqrt(np.maximum(sq, 0)) - p.h_unit).min()))
        s = plain_kernel(sq, p) @ xw
        new = np.where(s[:, -1:] >= EMPTY_BELOW, s[:, :-1] / np.maximum(s[:, -1:], EMPTY_BELOW),
                       c)
        if p.oblivious:                 # every seed makes max_iter updates
            c, den = new, s[:, -1:]
            continue
        # scikit-learn's per-seed stop (as the secure engine's, on shares): a seed
        # whose update moves it by at most tol stops there, with this pass's
        # weight sum as its intensity
        den = np.where(active[:, None], s[:, -1:], den)
        new = np.where(active[:, None], new, c)
        active &= ((new - c) ** 2).sum(1) > p.tol_unit ** 2
        c = new
        if not active.any():
            break
    if p.oblivious:     # the secure engine's last pass: weight sums at the final centroids
        sq = sq_distances(grid(c), x)
        if p.kernel == "flat":
            gap = min(gap, float(np.abs(np.sqrt(np.maximum(sq, 0)) - p.h_unit).min()))
        den = plain_kernel(sq, p) @ w[:, None]
    intensity = den[:, 0]
    ties = None
    if p.merge == "intensity":
        top = float(w.sum())          # the secure engine's public bound: the total weight
        inten = intensity if occupied is None else intensity * occupied   # unoccupied: empty
        keep, pairs = merge_with_pairs(c, inten, p.merge_unit, p.keep_threshold,
                                       p.precision_bits, top)
        ties = decisive_ties(c, inten, pairs, p.precision_bits, top)
    else:
        keep = merge_keep(c, p.merge_unit)
    return c, keep, it, intensity, gap, ties


def nearest_sizes(c: np.ndarray, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    if len(c) == 0:        # nothing kept (e.g. DP mode: only noise)
        return np.zeros(0)
    near = np.argmin(sq_distances(c, x), axis=0)
    return np.bincount(near, weights=w, minlength=len(c))


def reference_meanshift(parts: Sequence[np.ndarray], p: MeanShiftParams,
                        weights: Optional[Sequence[np.ndarray]] = None,
                        noise: Optional[np.ndarray] = None) -> PlainResult:
    """Run the twin on the parties' points (data units), concatenated in rank order.

    With ``p.summary`` set, each party's points are summarised exactly as the
    secure run does (summary.py), unless ``weights`` are given explicitly.
    In DP mode (``p.privacy``) the twin runs the same mechanism: the noisy
    histogram on the public grid (privacy.twin_inputs; ``noise`` is the parties'
    total noise per cell, e.g. collected from a secure run), the same clamping,
    seeds and post-processing (rows outside the bounds are clipped). Otherwise
    every party's points are checked as the secure engine's owners check them
    (data.check_points: 2-D, the job's width, not empty, finite, inside the
    bounds), raising InputError. With ``p.scaling`` "standard" the rows are
    standardised first by their float64 pooled moments (moments.plain_moments),
    as the secure run does with its opened ones."""
    if p.standardises:
        return _standardised_twin(parts, p, weights)
    if p.dp:
        x, w, seeds, p = twin_inputs(parts, p, noise)
        return _run_twin(x, w, seeds, p)
    parts = [check_points(q, p.bounds, f"party {i}") for i, q in enumerate(parts)]
    units = [to_unit(q, p.lo, p.scale) for q in parts]
    if p.summary == "auto":      # as the runtime resolves it (explicit weights: as given)
        p = replace(p, summary=None if weights is not None else
                    resolve_summary("auto", sum(len(q) for q in parts)))
    if p.summary is not None and weights is None:
        pairs = [summarize(u, p.h_unit * p.summary) for u in units]
        units, weights = [a for a, _ in pairs], [b for _, b in pairs]
    units = [quantise_points(u) for u in units]    # the engine's 2^-16 grid
    p = replace(p, seeding=resolve_seeding(p.seeding, sum(len(q) for q in parts), p.summary, p))
    x = np.concatenate(units)
    w = (np.concatenate([np.asarray(v, float) for v in weights]) if weights is not None
         else np.ones(len(x)))
    occupied = occupied_bins(units, weights, p) if p.seeding == BIN_SEEDING else None
    return _run_twin(x, w, initial_seeds(units, weights, p), p, occupied)


def _standardised_twin(parts: Sequence[np.ndarray], p: MeanShiftParams,
                       weights: Optional[Sequence[np.ndarray]]) -> PlainResult:
    """scaling "standard": the twin on the standardised rows, reported in data units."""
    from .moments import plain_moments, standardised_params

    parts = [check_points(q, p.bounds, f"party {i}") for i, q in enumerate(parts)]
    m = plain_moments(parts)
    res = reference_meanshift([m.forward(q) for q in parts], standardised_params(p, m),
                              weights)
    return replace(res, centroids=m.inverse(res.centroids), unmerged=m.inverse(res.unmerged),
                   moments=m, standardised=res.centroids)


def _run_twin(x: np.ndarray, w: np.ndarray, seeds: np.ndarray, p: MeanShiftParams,
              occupied: Optional[np.ndarray] = None) -> PlainResult:
    """Weighted mean-shift from these seeds, merge, sizes, suppression (unit box in,
    data units out)."""
    c, keep, it, intensity, gap, ties = meanshift_unit(x, w, p, seeds, occupied)
    sizes = nearest_sizes(c[keep], x, w) if p.return_sizes else None
    if p.min_cluster_size > 1:         # as protocol.suppress_small (sizes before it)
        big = nearest_sizes(c[keep], x, w) >= p.min_cluster_size - 0.5
        sizes = sizes[big] if sizes is not None else None
        keep[np.flatnonzero(keep)[~big]] = False
    cents, order = sort_rows(from_unit(c[keep], p.lo, p.scale))
    sizes = sizes[order] if sizes is not None else None
    if ties is not None:
        ties = ties * np.array([1.0, p.scale, p.scale])
    return PlainResult(cents, sizes, it, from_unit(c, p.lo, p.scale), intensity,
                       None if not np.isfinite(gap) else gap * p.scale, ties)


def sort_rows(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical order (lexicographic by coordinates) for comparing centroid sets."""
    order = np.lexsort(c.T[::-1]) if len(c) else np.arange(0)
    return c[order], order
