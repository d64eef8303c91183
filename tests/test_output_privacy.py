"""Output privacy on shares (issue 9): clusters smaller than min_cluster_size are
suppressed before anything is opened; receivers learn only how many."""

import numpy as np
import pytest

from secure_meanshift import MeanShiftParams, reference_meanshift, run_simulation

pytestmark = pytest.mark.timeout(240)


def _data():
    rng = np.random.default_rng(1)
    a = np.concatenate([rng.normal(0.3, 0.01, (12, 2)), [[0.9, 0.9], [0.1, 0.9]]])
    b = rng.normal(0.6, 0.01, (12, 2))
    return [np.clip(a, 0, 1), np.clip(b, 0, 1)]


def test_twin_suppresses_small_clusters():
    parts = _data()
    base = dict(bandwidth=0.02, bounds=([0, 0], [1, 1]), n_dust=26, max_iter=20, seed=3,
                seeding="dust")
    open_ = reference_meanshift(parts, MeanShiftParams(**base))
    kept = reference_meanshift(parts, MeanShiftParams(**base, min_cluster_size=5))
    # dust = N and a tiny bandwidth: without the rule the two isolated points come out
    assert any(np.allclose(c, [0.9, 0.9]) for c in open_.centroids)
    assert not any(np.allclose(c, [0.9, 0.9], atol=0.05) for c in kept.centroids)
    assert len(kept.centroids) < len(open_.centroids)


def test_secure_run_suppresses_on_shares_and_reveals_only_the_count():
    parts = _data()
    p = MeanShiftParams(bandwidth=0.05, bounds=([0, 0], [1, 1]), n_dust=26, max_iter=20,
                        seed=3, min_cluster_size=5, seeding="dust")
    run = run_simulation(parts, p, transport="local")
    ref = reference_meanshift(parts, p)
    got = run.receiver.centroids
    assert len(got) == len(ref.centroids) == 2
    assert np.abs(np.sort(got, 0) - np.sort(ref.centroids, 0)).max() < 1e-3 * p.bandwidth
    assert not any(np.linalg.norm(c - [0.9, 0.9]) < 0.1 for c in got)
