"""seeding="points": every row a seed, scikit-learn's own default
(MeanShift(bin_seeding=False)), and the merge that makes m = N affordable.

Bounds stated here:
- twin against scikit-learn on public data sets: the same number of centres,
  ARI 1.0, every centre within 1e-4 h of scikit-learn's;
- secure against scikit-learn: the same number of centres, ARI 1.0, every centre
  within 1e-3 h (fixed point), and within 1e-3 h of the twin with its iterations;
- the merge on shares: exactly the twin's greedy keep mask, in both modes.
"""

import numpy as np
import pytest

from mpc_jobs import merge_job, run_local
from secure_meanshift import SecureMeanShift
from secure_meanshift.centroid_match import match_error
from secure_meanshift.errors import InputError
from secure_meanshift.params import MAX_POINT_SEEDS, MeanShiftParams
from secure_meanshift.merge import merge_keep_intensity

sk = pytest.importorskip("sklearn")
from sklearn import datasets  # noqa: E402
from sklearn.cluster import MeanShift, estimate_bandwidth  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


def _public(name):
    if name == "iris":
        return datasets.load_iris().data
    if name == "cancer":      # 10 standardised features of the Wisconsin breast cancer set
        return StandardScaler().fit_transform(datasets.load_breast_cancer().data)[:, :10]
    return datasets.make_blobs(600, 5, centers=6, random_state=3)[0]


def _parties(x, k):
    idx = np.random.default_rng(0).permutation(len(x))
    return np.array_split(x[idx], k), idx


def _against_sklearn(est, x, idx, h, bound):
    ref = MeanShift(bandwidth=h).fit(x)
    c, r = est.cluster_centers_, ref.cluster_centers_
    assert len(c) == len(r), f"{len(c)} centres, scikit-learn {len(r)}"
    err, unmatched = match_error(c, r)
    assert unmatched == 0 and err <= bound * h, f"centres {err / h:.2e} h from scikit-learn's"
    ari = adjusted_rand_score(ref.labels_[idx], np.concatenate(est.labels_))
    assert ari == 1.0, f"ARI {ari:.4f}"


@pytest.mark.parametrize("name", ["iris", "cancer", "blobs5d"])
def test_twin_with_point_seeds_is_scikit_learn(name):
    """The cancer and 5-d blob sets are where local-mode seeds ("both") differ:
    scikit-learn keeps high-intensity modes that only a few points lead to."""
    x = _public(name)
    h = estimate_bandwidth(x, quantile=0.3, random_state=0)
    parts, idx = _parties(x, 3)
    est = SecureMeanShift(h, engine="plaintext").fit(parts)
    assert est.params_.seeding == "points"           # the estimator's "auto" for N <= 1000
    _against_sklearn(est, x, idx, h, 1e-4)


@pytest.mark.usefixtures("in_memory_links")       # the subject is not the TLS link
def test_secure_point_seeds_match_scikit_learn_on_iris():
    x = _public("iris")
    h = estimate_bandwidth(x, quantile=0.3, random_state=0)
    parts, idx = _parties(x, 2)
    est = SecureMeanShift(h).fit(parts)                # 2 parties and the dealer (in memory)
    twin = SecureMeanShift(h, engine="plaintext").fit(parts)
    err, unmatched = match_error(est.cluster_centers_, twin.cluster_centers_)
    assert unmatched == 0 and err <= 1e-3 * h and est.n_iter_ == twin.n_iter_
    _against_sklearn(est, x, idx, h, 1e-3)


def _merge_case(m=48, seed=5):
    """Centroids on a line at 0.7 radius spacing (chains: B suppressed by A cannot
    suppress C), copies of one mode, integer intensities with ties, empty ones."""
    rng = np.random.default_rng(seed)
    base = np.stack([0.1 + 0.07 * np.arange(12), np.full(12, 0.5)], axis=1)
    c = base[rng.integers(0, 12, m)] + rng.normal(0, 0.002, (m, 2))
    inten = rng.integers(0, 6, m).astype(float)
    inten[rng.random(m) < 0.1] = 0.0
    return np.clip(c, 0, 1), inten, 0.1


@pytest.mark.parametrize("oblivious", [False, True])
def test_merge_for_many_centroids_is_the_greedy_answer(oblivious):
    c, inten, r = _merge_case()
    want = merge_keep_intensity(c, inten, r, 0.5)
    keep, rounds, opened = run_local(merge_job, 2, (c, inten, r, 0.5, oblivious))[0]
    assert keep.tolist() == want.tolist()
    if oblivious:
        assert opened == []                          # m rounds, nothing opened
    else:
        assert opened and all(s == [1] for s in opened)  # only "changed?" bits
        assert len(opened) <= 6 and rounds < 200, (len(opened), rounds)


def test_point_seeds_have_a_size_limit():
    p = MeanShiftParams(bandwidth=0.1, bounds=([0.0], [1.0]), seeding="points")
    assert p.n_seeds(3, 250) == 250
    with pytest.raises(InputError, match="seeding: 'points'.*at most"):
        p.check_world(3, MAX_POINT_SEEDS + 1)


def test_cli_default_seeds_from_every_point_and_matches_scikit_learn(tmp_path):
    """`secure-meanshift simulate` with its defaults on a small job (and
    --sklearn, its plaintext check): seeding "auto" resolves to "points", and the
    revealed centres are scikit-learn's."""
    import json
    import subprocess
    import sys

    out = tmp_path / "run.json"
    res = subprocess.run([sys.executable, "-m", "meanshift_cli.simulate", "--points", "240",
                          "--parties", "2", "--quiet", "--sklearn", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["seeding"] == "points"
    h = r["bandwidth"]
    assert r["unmatched_centroids"] == 0 and r["max_abs_error"] < 1e-3 * h
    err, unmatched = match_error(np.array(r["centroids"]), np.array(r["sklearn_centroids"]))
    assert len(r["centroids"]) == len(r["sklearn_centroids"]) and unmatched == 0
    assert err < 1e-2 * h, f"{err / h:.2e} h from scikit-learn"


@pytest.mark.usefixtures("in_memory_links")       # the subject is not the TLS link
@pytest.mark.parametrize("tol", [1e-6, 1e3])
def test_secure_per_seed_stop_matches_the_twin_at_extreme_tols(tol):
    """A tiny tol (seeds stop only at their window's fixed point) and one beyond
    the box's diagonal (every seed stops after its first update, as in
    scikit-learn): centres and n_iter_ equal to the twin's."""
    x = _public("iris")[:, :2]
    parts, _ = _parties(x, 2)
    kw = dict(bandwidth=0.5, tol=tol, seeding="dust", n_dust=12)
    est = SecureMeanShift(**kw).fit(parts)
    twin = SecureMeanShift(engine="plaintext", **kw).fit(parts)
    err, unmatched = match_error(est.cluster_centers_, twin.cluster_centers_)
    assert unmatched == 0 and err <= 1e-4 and est.n_iter_ == twin.n_iter_
    if tol > 1:
        assert twin.n_iter_ == 0          # scikit-learn's count: one update, not counted
