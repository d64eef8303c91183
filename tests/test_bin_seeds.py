"""seeding="sklearn-bins": scikit-learn's MeanShift(bin_seeding=True) above the
every-point limit (binseeds.py).

Bounds stated here:
- the candidate bins cover scikit-learn's bins: the twin's occupied mask selects
  exactly the bins get_bin_seeds returns (up to the engine's 2^-16 grid);
- twin against MeanShift(bandwidth=h, bin_seeding=True) on scikit-learn's
  generators (1,500-4,000 points): the same number of centres, ARI >= 0.99,
  every centre within 0.05 h of scikit-learn's;
- secure against the twin (3 parties, 1,203 points, min_bin_freq 5, where the
  occupancy mask changes the answer): the same centres (so the same keep mask),
  within 1e-3 h, the same iterations.
"""

import numpy as np
import pytest

from secure_meanshift import SecureMeanShift
from secure_meanshift.binseeds import (BIN_SEEDING, MAX_BIN_SEEDS, bin_seeds, n_bin_seeds,
                                       occupied_bins)
from secure_meanshift.centroid_match import match_error
from secure_meanshift.data import from_unit, to_unit
from secure_meanshift.errors import InputError
from secure_meanshift.params import MeanShiftParams, resolve_seeding
from secure_meanshift.plaintext import reference_meanshift

pytest.importorskip("sklearn")
from sklearn.cluster import MeanShift, estimate_bandwidth, get_bin_seeds  # noqa: E402
from sklearn.datasets import make_blobs, make_moons  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402


def _bounds(x):
    return (tuple(x.min(0)), tuple(x.max(0)))


def _parties(x, k=3):
    idx = np.random.default_rng(0).permutation(len(x))
    return np.array_split(x[idx], k), idx


def _params(x, h, **kw):
    return MeanShiftParams(bandwidth=h, bounds=_bounds(x), seeding=BIN_SEEDING,
                           **{"max_iter": 300, **kw})


def _with_outliers(n=1200):
    """Blobs plus three lone points: their bins hold 1 point (< min_bin_freq 5)."""
    x, _ = make_blobs(n, centers=4, cluster_std=1.0, random_state=1)
    lo, hi = x.min(0), x.max(0)
    out = np.array([[lo[0] - 3, hi[1] + 3], [hi[0] + 3, lo[1] - 3], [hi[0] + 3, hi[1] + 3]])
    return np.concatenate([x, out])


def test_occupied_candidates_are_scikit_learns_bins():
    x, _ = make_moons(1500, noise=0.1, random_state=0)
    h = 0.2
    p = _params(x, h)
    parts, _ = _parties(x)
    occ = occupied_bins([to_unit(q, p.lo, p.scale) for q in parts], None, p).astype(bool)
    ours = from_unit(bin_seeds(p)[occ], p.lo, p.scale)
    theirs = get_bin_seeds(x, h)
    assert len(ours) == len(theirs) and n_bin_seeds(p) == len(bin_seeds(p)) >= len(ours)
    err, unmatched = match_error(ours, theirs)
    assert unmatched == 0 and err <= p.scale * 2.0**-16     # the engine's 2^-16 grid


@pytest.mark.parametrize("case", ["blobs", "moons", "moons-q0.1", "blobs3d", "varied"])
def test_twin_is_scikit_learns_bin_seeding(case):
    kw = {}
    if case == "blobs":
        x, _ = make_blobs(2000, centers=6, random_state=4)
    elif case.startswith("moons"):
        x, _ = make_moons(3000, noise=0.06, random_state=2)
    elif case == "blobs3d":
        x, _ = make_blobs(4000, centers=8, n_features=3, random_state=0)
        kw = {"min_bin_freq": 3}
    else:
        x, _ = make_blobs(1500, centers=4, cluster_std=[0.5, 1.0, 2.0, 0.3], random_state=7)
    # moons at quantile 0.1 gave 11 centres vs 10 while every seed moved on until none
    # moved (on the moons' flat ridges two copies drifted apart): each seed now stops
    # on its own, as in scikit-learn
    h = estimate_bandwidth(x, quantile=0.2 if case == "moons" else 0.1, random_state=0)
    parts, idx = _parties(x)
    ours = reference_meanshift(parts, _params(x, h, **kw))
    ref = MeanShift(bandwidth=h, bin_seeding=True, **kw).fit(x)
    assert len(ours.centroids) == len(ref.cluster_centers_)
    err, unmatched = match_error(ours.centroids, ref.cluster_centers_)
    assert unmatched == 0 and err <= 0.05 * h, f"centres {err / h:.3f} h from scikit-learn's"
    near = ((x[:, None, :] - ours.centroids[None]) ** 2).sum(2).argmin(1)
    assert adjusted_rand_score(ref.labels_, near) >= 0.99


def test_min_bin_freq_drops_sparse_bins_as_scikit_learn():
    x = _with_outliers()
    h = 2.0
    parts, _ = _parties(x)
    for f in (1, 5):
        ours = reference_meanshift(parts, _params(x, h, min_bin_freq=f))
        ref = MeanShift(bandwidth=h, bin_seeding=True, min_bin_freq=f).fit(x)
        err, unmatched = match_error(ours.centroids, ref.cluster_centers_)
        assert unmatched == 0 and err <= 0.05 * h, (f, len(ours.centroids))


def test_auto_picks_bins_above_the_every_point_limit():
    x, _ = make_blobs(1100, centers=3, random_state=0)
    p = MeanShiftParams(bandwidth=1.0, bounds=_bounds(x), seeding="auto")
    assert resolve_seeding("auto", 1100, None, p) == BIN_SEEDING
    assert resolve_seeding("auto", 900, None, p) == "points"
    assert resolve_seeding("auto", 900, 0.25, p) == BIN_SEEDING      # summary mode
    tiny = MeanShiftParams(bandwidth=0.05, bounds=_bounds(x), seeding="auto")
    assert n_bin_seeds(tiny) > MAX_BIN_SEEDS
    assert resolve_seeding("auto", 1100, None, tiny) == "both"       # too many bins
    fine = MeanShiftParams(bandwidth=0.3, bounds=_bounds(x), seeding="auto")
    assert n_bin_seeds(fine) <= MAX_BIN_SEEDS
    assert resolve_seeding("auto", 1100, None, fine) == BIN_SEEDING
    assert resolve_seeding("auto", 20_000, None, fine) == "both"     # m x N above AUTO_BIN_WORK


def test_too_many_bins_or_merge_first_refused_up_front():
    x, _ = make_blobs(100, centers=3, random_state=0)
    with pytest.raises(InputError, match="larger bandwidth, tighter bounds or fewer features"):
        MeanShiftParams(bandwidth=0.05, bounds=_bounds(x), seeding=BIN_SEEDING)
    with pytest.raises(InputError, match="needs merge 'intensity'"):
        MeanShiftParams(bandwidth=1.0, bounds=_bounds(x), seeding=BIN_SEEDING, merge="first")
    with pytest.raises(InputError, match="min_bin_freq"):
        MeanShiftParams(bandwidth=1.0, bounds=_bounds(x), seeding=BIN_SEEDING, min_bin_freq=0)
    with pytest.raises(InputError, match="public grid only"):      # DP mode: its own grid
        MeanShiftParams(bandwidth=1.0, bounds=_bounds(x), seeding=BIN_SEEDING,
                        privacy={"epsilon": 1.0, "delta": 1e-6})
    with pytest.raises(ValueError, match="min_bin_freq"):           # the estimator's check
        SecureMeanShift(1.0, engine="plaintext", min_bin_freq=0).fit(x)


def test_estimator_says_it_switched_to_bin_seeding():
    from secure_meanshift.estimator import SeedingWarning

    x, _ = make_blobs(1100, centers=[[0, 0], [6, 0]], random_state=0)
    with pytest.warns(SeedingWarning, match="'sklearn-bins'.*bin_seeding=True.*seeding_"):
        est = SecureMeanShift(1.5, engine="plaintext").fit(x)
    assert est.seeding_ == BIN_SEEDING
    ref = MeanShift(bandwidth=1.5, bin_seeding=True).fit(x)
    err, unmatched = match_error(est.cluster_centers_, ref.cluster_centers_)
    assert unmatched == 0 and err <= 0.05 * 1.5


def test_secure_matches_twin_with_bin_seeds():
    from secure_meanshift.simulate import run_simulation

    x = _with_outliers()
    h = 2.0
    parts, _ = _parties(x)
    p = _params(x, h, min_bin_freq=5, max_iter=100)
    twin = reference_meanshift(parts, p)
    # the mask matters here: without it the three lone points would be centres
    assert len(twin.centroids) == 3
    got = run_simulation(parts, p, transport="local", timeout_s=60).receiver
    err, unmatched = match_error(got.centroids, twin.centroids)
    assert unmatched == 0 and err <= 1e-3 * h, f"{err / h:.2e} h"
    assert got.iterations == twin.iterations
