"""Issue 18: federated standardisation (SecureStandardScaler): the pooled mean and
variance under MPC, equal to scikit-learn's StandardScaler on the pooled data."""

import numpy as np
import pytest
from sklearn.cluster import MeanShift
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

from secure_meanshift import SecureMeanShift, SecureStandardScaler


def _two_populations():
    """Parties with different populations: standardising each alone is wrong."""
    rng = np.random.default_rng(0)
    a = rng.normal([100.0, 0.001], [20.0, 0.0005], (300, 2))
    b = rng.normal([160.0, 0.004], [5.0, 0.0001], (200, 2))
    return a, b


def test_scikit_learn_checks_pass_with_the_plaintext_engine():
    results = check_estimator(SecureStandardScaler(engine="plaintext"), on_fail=None)
    bad = [(r["check_name"], r["status"]) for r in results if r["status"] != "passed"]
    assert bad == [("check_array_api_input", "skipped")], bad


def test_plaintext_equals_standard_scaler_and_transforms_each_party():
    a, b = _two_populations()
    x = np.r_[a, b]
    sk = StandardScaler().fit(x)
    s = SecureStandardScaler(engine="plaintext").fit([a, b])
    np.testing.assert_allclose(s.mean_, sk.mean_)
    np.testing.assert_allclose(s.scale_, sk.scale_)
    ta, tb = s.transform([a, b])
    np.testing.assert_allclose(np.r_[ta, tb], sk.transform(x))
    np.testing.assert_allclose(s.inverse_transform(ta), a)
    alone = StandardScaler().fit_transform(a)
    assert np.abs(alone - ta).max() > 0.5          # a party standardising alone is off


@pytest.mark.usefixtures("in_memory_links")       # the subject is not the TLS link
def test_secure_pooled_moments_match_scikit_learn():
    a, b = _two_populations()
    sk = StandardScaler().fit(np.r_[a, b])
    s = SecureStandardScaler().fit([a, b])          # 2 parties and the dealer (in memory)
    assert s.n_samples_seen_ == 500
    np.testing.assert_allclose(s.mean_, sk.mean_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(s.var_, sk.var_, rtol=1e-3, atol=1e-9)


def test_standardised_clustering_matches_scikit_learn_pipeline():
    rng = np.random.default_rng(1)
    centres = np.array([[30.0, 20_000.0], [60.0, 60_000.0], [45.0, 100_000.0]])
    x = centres[rng.integers(0, 3, 240)] + rng.normal(0, [3.0, 4_000.0], (240, 2))
    parts = [x[:90], x[90:]]
    scaler = SecureStandardScaler(engine="plaintext").fit(parts)
    ms = SecureMeanShift(0.8, engine="plaintext").fit(scaler.transform(parts))
    sk = MeanShift(bandwidth=0.8).fit(StandardScaler().fit_transform(x))
    assert adjusted_rand_score(np.concatenate(ms.labels_), sk.labels_) == 1.0
    centres_data_units = scaler.inverse_transform(ms.cluster_centers_)
    assert centres_data_units.shape == (len(sk.cluster_centers_), 2)


def test_inputs_are_checked_first():
    a, b = _two_populations()
    b[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"party 1, row 4, column 1: contains NaN"):
        SecureStandardScaler().fit([a, b])
