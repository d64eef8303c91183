"""The secure division is correct for every denominator in [2^-8, 10^7]."""

import numpy as np
import pytest

from mpc_jobs import crypten_reciprocal_job, divide_job, run_local

REL_TOL = 1e-3


@pytest.mark.parametrize("parties", [2, 3, 4])
def test_division_relative_error_over_full_range(parties):
    rng = np.random.default_rng(parties)
    den = np.geomspace(2.0**-8, 1e7, 240)
    q = rng.uniform(0.05, 1.0, size=(240, 2))      # centroid coordinates in the unit box
    out, ref = run_local(divide_job, parties, (den, q, 1e7))[0]
    rel = np.abs(out - ref) / np.abs(ref)
    assert rel.max() < REL_TOL, f"worst relative error {rel.max():.2e} at den={den[rel.max(1).argmax()]:.3g}"


def test_empty_rows_keep_fallback():
    den = np.array([0.0, 2.0**-10, 1.0, 5.0])
    q = np.full((4, 2), 0.8)
    out, _ = run_local(divide_job, 2, (den, q, 100.0))[0]
    assert np.allclose(out[:2], 0.5, atol=1e-3)
    assert np.allclose(out[2:], 0.8, atol=1e-3)


def test_crypten_default_reciprocal_is_wrong_where_ours_is_right():
    """Documents why the engine has its own division (the report's flaw)."""
    den = np.array([300.0, 5000.0])
    got = run_local(crypten_reciprocal_job, 2, (den,))[0]
    assert np.any(np.abs(got * den - 1) > 0.5)
    out, ref = run_local(divide_job, 2, (den, np.ones((2, 1)), 1e4))[0]
    assert np.allclose(out, ref, rtol=REL_TOL)


@pytest.mark.parametrize("parties", [2, 3, 4])
def test_comparisons_are_exact_and_cost_the_same_rounds_for_more_parties(parties):
    """Comparisons (every kernel, division and stop test rests on them) with the
    dealer's correlated randomness: exact signs, and for three or more parties
    the dealer's conversion (one opening, one adder) keeps the rounds flat."""
    from mpc_jobs import comparison_job

    rng = np.random.default_rng(parties)
    values = np.concatenate([rng.normal(0, 100, 400), [0.0, -1e-4, 1e-4, 3.5, 3.49]])
    thresholds = [0.0, 3.5, -50.0]
    out, stats = run_local(comparison_job, parties, (values, thresholds))[0]
    for got, t in zip(out, thresholds):
        want = (np.round(values * 2**16) >= round(t * 2**16)).astype(float)
        assert np.array_equal(got, want), f"threshold {t}"
    assert stats["rounds"] <= 3 * 17, stats    # CrypTen's k-party conversion: ~26 per comparison
