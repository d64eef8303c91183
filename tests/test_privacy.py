"""Differential privacy in the engine (issue 17): calibration and accounting
(OpenDP), parameter checks, an empirical DP test of the local mechanism (with a
negative control), the secure run against the twin with the same noise, and the
differencing attack of the issue on the twin."""

import math

import numpy as np
import pytest
import yaml
from scipy.stats import beta

from secure_meanshift import privacy
from secure_meanshift.errors import InputError
from secure_meanshift.params import MeanShiftParams
from secure_meanshift.plaintext import reference_meanshift
from secure_meanshift.privacy import PrivacySpec, noise_scale, spent_epsilon

pytestmark = pytest.mark.timeout(240)
UNIT = ([0.0, 0.0], [1.0, 1.0])


# ---- calibration and accounting ------------------------------------------------

def test_noise_scale_monotone_in_epsilon_and_delta():
    eps = [noise_scale(PrivacySpec(e, 1e-6)) for e in (0.1, 1, 10)]
    assert all(a > b > 0 for a, b in zip(eps, eps[1:]))
    dts = [noise_scale(PrivacySpec(1.0, d)) for d in (1e-9, 1e-6, 5e-3)]
    assert all(a > b for a, b in zip(dts, dts[1:]))
    assert noise_scale(PrivacySpec(1.0, 1e-6)) == noise_scale(PrivacySpec(1, 1e-6))


@pytest.mark.parametrize("eps", [0.1, 1.0, 10.0])
def test_one_job_spends_its_epsilon(eps):
    s = noise_scale(PrivacySpec(eps, 1e-6))
    got = spent_epsilon([s], 1e-6)
    assert got <= eps * (1 + 1e-6) and got >= eps * (1 - 1e-6)


def test_composition_grows_and_empty_is_zero():
    s = noise_scale(PrivacySpec(1.0, 1e-6))
    spent = [spent_epsilon([s] * k, 1e-6) for k in (1, 2, 4, 16)]
    assert all(a < b for a, b in zip(spent, spent[1:]))
    assert spent[1] < 2.0            # zCDP composes better than adding epsilons
    assert spent_epsilon([], 1e-6) == 0.0


# ---- validation ------------------------------------------------------------------

@pytest.mark.parametrize("kw, text", [
    (dict(epsilon=0), "privacy.epsilon"), (dict(epsilon=101), "privacy.epsilon"),
    (dict(epsilon=float("nan")), "privacy.epsilon"), (dict(delta=0), "privacy.delta"),
    (dict(delta=0.05), "privacy.delta"), (dict(epsilon="1"), "privacy.epsilon")])
def test_privacy_spec_refuses_bad_values(kw, text):
    with pytest.raises(ValueError, match=text):
        PrivacySpec(**kw)


@pytest.mark.parametrize("kw, text", [
    (dict(bandwidth=0.005), "40000"),
    (dict(bandwidth=0.5, bounds=([0] * 4, [1] * 4)), "at most 3 features"),
    (dict(seeding="dust"), "public grid only"),
    (dict(seeding="both"), "public grid only"),
    (dict(kernel="gaussian"), "flat kernel"),
    (dict(privacy={"eps": 1}), "privacy.eps: unknown")])
def test_dp_params_refused_with_a_clear_reason(kw, text):
    base = dict(bandwidth=0.1, bounds=UNIT, privacy={"epsilon": 1, "delta": 1e-6})
    with pytest.raises(InputError, match=text):
        MeanShiftParams(**{**base, **kw})


def test_dp_params_defaults_and_round_trip():
    p = MeanShiftParams(bandwidth=0.1, bounds=UNIT, privacy={})
    assert (p.seeding, p.summary, p.privacy) == ("grid", 0.5, PrivacySpec(1.0, 1e-6))
    assert MeanShiftParams(**p.to_dict()) == p
    assert MeanShiftParams(bandwidth=0.1, bounds=UNIT).seeding == "auto"   # PARAMS' default
    with pytest.raises(InputError, match="grid"):
        MeanShiftParams(bandwidth=0.1, bounds=UNIT, seeding="grid")


def test_job_spec_privacy_key():
    from meanshift_rpc import jobspec

    d = {"name": "demo", "parties": [{"id": "hospital-a", "dataset": "patients"},
                                     {"id": "hospital-b", "dataset": "patients"}],
         "bandwidth": 0.1, "bounds": {"lo": [0, 0], "hi": [1, 1]}, "dealer": "dealer-1",
         "reveal_to": ["hospital-a", "analyst:alice"], "summary": "auto"}
    spec = jobspec.parse(yaml.safe_dump({**d, "privacy": {"epsilon": 0.5, "delta": 1e-7}}))
    assert jobspec.privacy_of(spec) == PrivacySpec(0.5, 1e-7)
    p = MeanShiftParams(**jobspec.engine_params(spec, 7))
    assert p.privacy == PrivacySpec(0.5, 1e-7) and p.seeding == "grid"
    assert jobspec.parse(jobspec.to_yaml(spec)) == spec
    exact = jobspec.parse(yaml.safe_dump({**d, "privacy": None}))
    assert jobspec.privacy_of(exact) is None
    for bad, text in [({"bandwidth": "auto"}, "bandwidth: 'auto' is refused"),
                      ({"seeding": "bins"}, "seeding"), ({"bandwidth": 0.004}, "cells"),
                      ({"privacy": {"epsilon": -1}}, "privacy.epsilon"),
                      ({"privacy": "yes"}, "privacy: expected")]:
        with pytest.raises(jobspec.SpecError, match=text):
            jobspec.parse(yaml.safe_dump({**d, "privacy": {"epsilon": 1}, **bad}))


def test_estimator_and_cli_refuse_data_dependent_choices(capsys):
    from secure_meanshift import SecureMeanShift
    from meanshift_cli.simulate import main

    parts = [np.full((3, 2), 0.5), np.full((3, 2), 0.4)]
    with pytest.raises(InputError, match="public bounds"):
        SecureMeanShift(0.1, engine="plaintext", privacy={"epsilon": 1}).fit(parts)
    with pytest.raises(InputError, match="auto"):
        SecureMeanShift("auto", bounds=UNIT, engine="plaintext", privacy={}).fit(parts)
    assert main(["--bandwidth", "auto", "--epsilon", "1"]) == 2
    assert main(["--bandwidth", "0.1", "--epsilon", "0"]) == 2
    err = capsys.readouterr().err
    assert "refused in DP mode" in err and "privacy.epsilon" in err and "Traceback" not in err


# ---- the mechanism -----------------------------------------------------------------

def test_grid_is_public_and_clipping_changes_one_count():
    p = MeanShiftParams(bandwidth=0.2, bounds=([0, 0], [2, 1]), privacy={})
    cells = privacy.grid_cells(p)
    assert cells.shape == (int(np.prod(privacy.grid_shape(p))), 2)
    assert cells.min() > 0 and cells[:, 0].max() < 1 and cells[:, 1].max() < 0.5
    x = np.array([[0.5, 0.5], [1.0, 0.2]])
    base = privacy.local_counts(x, p)
    for extra in ([[5.0, -3.0]], [[2.0, 1.0]], [[1.3, 0.7]]):   # outside, corner, inside
        diff = privacy.local_counts(np.concatenate([x, extra]), p) - base
        assert diff.sum() == 1 and diff.max() == 1 and diff.min() == 0
    assert len(privacy.grid_seeds(p)) <= privacy.MAX_GRID_SEEDS


def _release_counts(points, p, cell, runs):
    return np.array([privacy.local_release(points, p).counts[cell] for _ in range(runs)])


def _observed_loss(a, b, delta, alpha=1e-4):
    """Largest ln((P[S|b] - delta) / P[S|a]) over threshold sets S = {count >= t}
    and {count <= t}, with one-sided Clopper-Pearson bounds in the test's favour
    of the mechanism (lower bound on top, upper bound below)."""
    n = len(a)
    worst = -np.inf
    for t in range(int(min(a.min(), b.min())), int(max(a.max(), b.max())) + 1):
        for x, y in (((a >= t).sum(), (b >= t).sum()), ((b <= t).sum(), (a <= t).sum())):
            hi_x = beta.ppf(1 - alpha, x + 1, n - x) if x < n else 1.0
            lo_y = beta.ppf(alpha, y, n - y + 1) if y > 0 else 0.0
            if lo_y - delta > 0:
                worst = max(worst, math.log((lo_y - delta) / hi_x))
    return worst


def _empirical_loss(runs=2500):
    p = MeanShiftParams(bandwidth=1.0, bounds=UNIT, privacy={"epsilon": 1.0, "delta": 1e-6})
    rng = np.random.default_rng(5)
    d = rng.uniform(0, 1, (20, 2))
    d2 = np.concatenate([d, [[0.1, 0.1]]])             # one record added
    cell = int(privacy.cell_index(np.array([[0.1, 0.1]]), p)[0])
    a, b = _release_counts(d, p, cell, runs), _release_counts(d2, p, cell, runs)
    return _observed_loss(a, b, 1e-6), p.privacy.epsilon


def test_empirical_privacy_loss_within_epsilon():
    loss, eps = _empirical_loss()
    assert loss <= eps, f"observed privacy loss {loss:.3f} > epsilon {eps}"


def test_empirical_test_detects_too_little_noise(monkeypatch):
    real = privacy.noise_scale
    monkeypatch.setattr(privacy, "noise_scale", lambda spec: real(spec) / 10)
    loss, eps = _empirical_loss()
    assert loss > eps, f"negative control not detected: loss {loss:.3f}"


def test_twin_dp_finds_blobs_and_repeats_with_the_same_noise():
    from secure_meanshift.centroid_match import match_error
    from secure_meanshift.data import separated_blobs, split_even

    pts, centres = separated_blobs(3000, 4, seed=3)
    parts = split_even(pts, 3)
    p = MeanShiftParams(bandwidth=0.1, bounds=UNIT, privacy={"epsilon": 1, "delta": 1e-6},
                        max_iter=50)
    r = reference_meanshift(parts, p)
    err, unmatched = match_error(r.centroids, centres)
    assert unmatched == 0 and err < 0.2 * p.bandwidth
    cells = len(privacy.grid_cells(p))
    noise = np.random.default_rng(0).integers(-20, 20, cells)
    one, two = (reference_meanshift(parts, p, noise=noise) for _ in range(2))
    assert np.array_equal(one.centroids, two.centroids)


# ---- secure engine vs twin with the same noise -------------------------------------------

def test_secure_dp_matches_twin_with_the_same_noise():
    from secure_meanshift.data import separated_blobs, split_even
    from secure_meanshift.simulate import run_simulation

    pts, _ = separated_blobs(600, 3, seed=4)
    parts = split_even(pts, 2)
    parts[1] = np.concatenate([parts[1], [[1.5, -0.2]]])      # clipped, not refused
    p = MeanShiftParams(bandwidth=0.25, bounds=UNIT, privacy={"epsilon": 1, "delta": 1e-6},
                        return_sizes=True, min_cluster_size=5, max_iter=20)
    run = run_simulation(parts, p, keep_noise=True, transport="local")
    got = run.receiver
    assert run.dp_noise is not None and run.dp_noise.shape == (len(privacy.grid_cells(p)),)
    ref = reference_meanshift(parts, p, noise=run.dp_noise)
    assert len(got.centroids) == len(ref.centroids) >= 2
    assert np.abs(got.centroids - ref.centroids).max() < 1e-3 * p.bandwidth
    assert np.array_equal(got.sizes, ref.sizes)
    assert "dp_noise" not in got.to_dict()


# ---- the differencing attack of issue 17, on the twin ---------------------------------

ATTACK_BOUNDS = ([0.1, 0.1], [0.35, 0.35])   # span 0.25: the 0.02 bandwidth gives 625 seeds
SPAN = 0.25


def _attack_parts(rng):
    group = rng.normal([0.2, 0.2], 0.002, (5, 2))
    lone = np.array([[0.23, 0.2]])                      # 0.03 away from the group
    other = rng.uniform(0.27, 0.35, (40, 2))            # another party's unrelated rows
    return [np.concatenate([group, lone]), other], lone[0]


def _attack(parts, eps, run):
    """Job 1 (h 0.02, min size 5) and job 2 (h 0.05), sizes returned; the estimate
    (n2 c2 - n1 c1) / (n2 - n1) from the clusters nearest to the group (None when
    a job returns no cluster there: the attacker has nothing to difference)."""
    priv = {"epsilon": eps, "delta": 1e-6}
    out = []
    for h in (0.02, 0.05):
        p = MeanShiftParams(bandwidth=h, bounds=ATTACK_BOUNDS, privacy=priv, max_iter=30,
                            return_sizes=True, min_cluster_size=5)
        c, s = run(parts, p)
        near = [i for i in range(len(c)) if np.linalg.norm(c[i] - [0.2, 0.2]) < 0.06]
        if not near:
            return None
        i = max(near, key=lambda j: s[j])
        out.append((c[i], s[i]))
    (c1, n1), (c2, n2) = out
    if n2 == n1:
        return None
    return (n2 * c2 - n1 * c1) / (n2 - n1)


def _twin_run(parts, p):
    r = reference_meanshift(parts, p)
    return r.centroids, r.sizes


def _attack_fails(estimate, lone):
    return estimate is None or np.linalg.norm(estimate - lone) > 0.1 * SPAN


def test_differencing_attack_exact_mode_succeeds_dp_mode_fails():
    rng = np.random.default_rng(17)
    parts, lone = _attack_parts(rng)

    def exact_run(parts, p):        # the same jobs without DP (seeding every point)
        from dataclasses import replace
        q = replace(p, privacy=None, seeding="points", summary=None, min_cluster_size=5)
        r = reference_meanshift(parts, q)
        return r.centroids, r.sizes

    est = _attack(parts, 1.0, exact_run)
    assert est is not None and np.linalg.norm(est - lone) < 1e-3     # the attack works
    fails = sum(_attack_fails(_attack(_attack_parts(rng)[0], 1.0, _twin_run), lone)
                for _ in range(100))
    assert fails >= 95, f"the attack came within 0.1 of the span in {100 - fails} trials"


def test_differencing_attack_through_the_secure_engine():
    from secure_meanshift.simulate import run_simulation

    def secure_run(parts, p):
        r = run_simulation(parts, p, transport="local").receiver
        return r.centroids, r.sizes

    rng = np.random.default_rng(18)
    parts, lone = _attack_parts(rng)
    assert _attack_fails(_attack(parts, 1.0, secure_run), lone)


def test_noise_is_integer_and_uses_no_numpy_or_torch_generator(monkeypatch):
    import torch

    def refuse(*a, **k):
        raise AssertionError("a numpy/torch generator was used for DP noise")

    for name in ("default_rng", "normal", "randint", "random", "laplace"):
        monkeypatch.setattr(np.random, name, refuse)
    for name in ("randn", "randint", "normal", "rand"):
        monkeypatch.setattr(torch, name, refuse)
    p = MeanShiftParams(bandwidth=0.5, bounds=UNIT, privacy={"epsilon": 1, "delta": 1e-6})
    rel = privacy.local_release(np.full((4, 2), 0.3), p, keep_noise=True)
    assert rel.counts.dtype == np.int64 and rel.noise.dtype == np.int64
    assert np.array_equal(rel.counts - rel.noise, privacy.local_counts(np.full((4, 2), 0.3), p))
    assert rel.noise.std() > 0
