"""Issue 10 (3): scikit-learn's estimate_bandwidth under MPC, revealing only the
bandwidth. Bound: within 5% of scikit-learn on the same points and sample (the
construction gives 2^-17 of the unit box; measured about 1e-5 relative)."""

import numpy as np
import pytest

from secure_meanshift import shapes
from secure_meanshift.bandwidth import plain_bandwidth, sample_indices
from secure_meanshift.simulate import estimate_bandwidth

skc = pytest.importorskip("sklearn.cluster")


def _parts(n=300, parties=2, seed=3):
    x, _ = shapes.touching(seed=seed, n=n)
    return shapes.spread_parties(x, parties, seed)


@pytest.mark.parametrize("quantile", [0.1, 0.3])
def test_twin_equals_sklearn_on_same_sample(quantile):
    parts = _parts(n=600)
    x = np.concatenate(parts)
    idx = sample_indices(0, len(x), 200)
    ref = skc.estimate_bandwidth(x[idx], quantile=quantile)
    got = plain_bandwidth(parts, ([0, 0], [1, 1]), quantile, 200, 0)
    assert got == pytest.approx(ref, rel=1e-3)


@pytest.mark.usefixtures("in_memory_links")       # the subject is not the TLS link
def test_secure_estimate_within_5_percent_of_sklearn():
    parts = _parts()
    x = np.concatenate(parts)
    idx = sample_indices(0, len(x), 120)
    ref = skc.estimate_bandwidth(x[idx], quantile=0.3)
    got = estimate_bandwidth(parts, quantile=0.3, n_samples=120, seed=0,
                             bounds=([0, 0], [1, 1]))
    assert got == pytest.approx(ref, rel=0.05)
    twin = plain_bandwidth(parts, ([0, 0], [1, 1]), 0.3, 120, 0)
    assert abs(got - twin) <= 2.0**-16           # bisection resolution (unit box = data here)


@pytest.mark.slow
@pytest.mark.usefixtures("in_memory_links")       # the subject is not the TLS link
def test_estimator_auto_bandwidth_three_parties():
    from secure_meanshift import SecureMeanShift

    parts = _parts(n=600, parties=3)
    est = SecureMeanShift("auto", quantile=0.2, n_samples=150, seeds_per_party=8,
                          bounds=([0, 0], [1, 1])).fit(parts)
    x = np.concatenate(parts)
    ref = skc.estimate_bandwidth(x[sample_indices(0, len(x), 150)], quantile=0.2)
    assert est.bandwidth_ == pytest.approx(ref, rel=0.05)
    assert len(est.cluster_centers_) >= 1


@pytest.mark.usefixtures("in_memory_links")       # the subject is not the TLS link
def test_estimator_estimates_in_the_clustering_session(monkeypatch):
    """Issue 18 (memory at 1,000,000 points): a secure fit with bandwidth "auto"
    starts one set of party processes, not a second one for the estimate, and
    gets exactly the stand-alone estimate (only the sampled rows are shared)."""
    from secure_meanshift import SecureMeanShift, simulate

    parts = _parts(n=90, parties=2)
    bounds = ([0, 0], [1, 1])
    alone = estimate_bandwidth(parts, quantile=0.3, n_samples=60, seed=0, bounds=bounds)
    starts = []
    original = simulate._start_ranks
    monkeypatch.setattr(simulate, "_start_ranks",
                        lambda procs, cfgs, *a: (starts.append(len(cfgs)),
                                                 original(procs, cfgs, *a)))
    est = SecureMeanShift("auto", n_samples=60, bounds=bounds, max_iter=5, verbose=0).fit(parts)
    assert starts == [3]                  # 2 parties and the dealer, once
    assert est.bandwidth_ == alone
    assert est.params_.bandwidth == alone and est.seeding_ == "points"


@pytest.mark.usefixtures("in_memory_links")
def test_estimated_bandwidth_on_a_coarse_grid_is_refused_before_clustering():
    """The grid check of an estimated h runs in the parties (refuse_coarse_grid):
    bounds that dwarf the data give an InputError, not a clustering."""
    from secure_meanshift import InputError, SecureMeanShift

    parts = _parts(n=60, parties=2)
    with pytest.raises(InputError, match="coarser than 1/32 of the bandwidth"):
        SecureMeanShift("auto", n_samples=40, bounds=([0, 0], [1e5, 1e5]), verbose=0).fit(parts)
