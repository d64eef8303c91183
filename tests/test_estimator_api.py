"""Issue 18: SecureMeanShift is a scikit-learn estimator (checks, repr, tags,
parameter validation, fitted attributes, n_iter_ and centre order as
scikit-learn's), a progress line, and one small secure fit."""

import io
import time

import numpy as np
import pytest
from sklearn.cluster import MeanShift
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.metrics import adjusted_rand_score
from sklearn.utils.estimator_checks import check_estimator

from secure_meanshift import SecureMeanShift
from secure_meanshift.centroid_match import match_error
from secure_meanshift.estimator import sklearn_n_iter, sklearn_order
from secure_meanshift.progress import ProgressLine


def test_scikit_learn_checks_pass_with_the_plaintext_engine():
    results = check_estimator(SecureMeanShift(engine="plaintext", verbose=0), on_fail=None)
    bad = [(r["check_name"], r["status"], str(r["exception"])[:300]) for r in results
           if r["status"] != "passed"]
    # array API input is only checked with SCIPY_ARRAY_API set (a skip, not a failure)
    assert all(name == "check_array_api_input" and status == "skipped"
               for name, status, _ in bad), bad
    assert len(results) > 40


def test_repr_html_and_tags():
    est = SecureMeanShift(0.5, kernel="gaussian")
    assert repr(est) == "SecureMeanShift(bandwidth=0.5, kernel='gaussian')"
    assert "SecureMeanShift" in est._repr_html_()
    tags = est.__sklearn_tags__()
    assert tags.estimator_type == "clusterer" and not tags.input_tags.allow_nan
    assert tags.non_deterministic          # the secure engine's fixed-point noise
    assert not SecureMeanShift(engine="plaintext").__sklearn_tags__().non_deterministic


def test_get_and_set_params():
    est = SecureMeanShift()
    assert est.get_params()["max_iter"] == 300
    assert est.set_params(bandwidth=2.0).bandwidth == 2.0
    with pytest.raises(ValueError, match="Invalid parameter 'bandwith'"):
        est.set_params(bandwith=2.0)


def test_predict_before_fit():
    with pytest.raises(NotFittedError):
        SecureMeanShift().predict(np.zeros((2, 2)))


def _blobs(n=240, seed=0):
    x, _ = make_blobs(n, centers=[[0, 0], [4, 0], [0, 4]], cluster_std=0.7, random_state=seed)
    return x


def test_n_iter_centre_order_and_labels_as_scikit_learn():
    x = _blobs()
    sk = MeanShift(bandwidth=1.5).fit(x)
    est = SecureMeanShift(1.5, engine="plaintext").fit(x)          # one array: 2 parties
    assert est.n_iter_ == sk.n_iter_
    np.testing.assert_allclose(est.cluster_centers_, sk.cluster_centers_, atol=1e-3)
    assert (est.labels_ == sk.labels_).all()
    assert (est.fit_predict(x) == est.labels_).all()
    assert (est.predict(x) == sk.predict(x)).all()
    assert est.n_features_in_ == 2 and not hasattr(est, "feature_names_in_")


def test_a_list_of_parties_gives_one_label_array_per_party():
    x = _blobs()
    parts = [x[:100], x[100:]]
    est = SecureMeanShift(1.5, engine="plaintext")
    labels = est.fit_predict(parts)
    assert isinstance(labels, list) and [len(lab) for lab in labels] == [100, 140]
    assert (np.concatenate(labels) == SecureMeanShift(1.5, engine="plaintext").fit(x).labels_).all()


def test_feature_names_from_dataframes():
    pd = pytest.importorskip("pandas")
    x = _blobs()
    frames = [pd.DataFrame(x[:100], columns=["a", "b"]), pd.DataFrame(x[100:], columns=["a", "b"])]
    est = SecureMeanShift(1.5, engine="plaintext").fit(frames)
    assert list(est.feature_names_in_) == ["a", "b"]
    assert est.predict(frames[0]).shape == (100,)


def test_sklearn_order_and_n_iter_rules():
    c = np.array([[0.0, 1.0], [2.0, 0.0], [1.0, 5.0]])
    assert sklearn_order(c, np.array([3, 7, 3])).tolist() == [1, 2, 0]   # ties: larger coordinates
    assert sklearn_order(c, None).tolist() == [1, 2, 0]
    assert sklearn_n_iter(5, 300) == 4 and sklearn_n_iter(300, 300) == 300


def test_fitted_attributes_say_what_was_chosen():
    est = SecureMeanShift(engine="plaintext").fit(_blobs())
    assert est.bandwidth_ > 0 and est.seeding_ == "points" and est.params_.bandwidth == est.bandwidth_


def test_progress_line_shows_iterations_elapsed_and_time_left():
    out = io.StringIO()
    line = ProgressLine(verbose=2, max_iter=10, stream=out)
    line({"stage": "shared"})
    for i in range(1, 4):
        line({"stage": "iteration", "iteration": i, "max_iter": 10, "moving": True})
    line.close()
    text = out.getvalue()
    assert "iteration 3/10" in text and "elapsed" in text and "left" in text
    quiet = io.StringIO()
    q = ProgressLine(verbose=0, max_iter=10, stream=quiet)
    q({"stage": "iteration", "iteration": 1, "max_iter": 10})
    q.close()
    assert quiet.getvalue() == ""
    later = io.StringIO()
    short = ProgressLine(verbose=1, max_iter=10, stream=later)    # a short fit prints nothing
    short({"stage": "iteration", "iteration": 1, "max_iter": 10})
    short.close()
    assert later.getvalue() == ""


@pytest.mark.usefixtures("in_memory_links")       # the subject is not the TLS link
def test_small_secure_fit_matches_the_twin_and_scikit_learn(capsys):
    x = _blobs(90, seed=3)
    parts = [x[:40], x[40:]]
    t = time.perf_counter()
    est = SecureMeanShift(1.5, verbose=2).fit(parts)
    wall = time.perf_counter() - t
    twin = SecureMeanShift(1.5, engine="plaintext").fit(parts)
    sk = MeanShift(bandwidth=1.5).fit(x)
    err, unmatched = match_error(est.cluster_centers_, twin.cluster_centers_)
    assert unmatched == 0 and err < 1e-3 * 1.5
    assert est.n_iter_ == twin.n_iter_ == sk.n_iter_
    assert est.cluster_centers_.tolist() == sorted(est.cluster_centers_.tolist(), reverse=True)
    assert adjusted_rand_score(np.concatenate(est.labels_), sk.labels_) == 1.0
    err_sk, _ = match_error(est.cluster_centers_, sk.cluster_centers_)
    assert err_sk < 1e-3 * 1.5
    assert "secure mean-shift" in capsys.readouterr().err, f"no progress line in {wall:.0f} s"


def test_auto_choices_are_resolved_in_the_fitted_attributes():
    x = _blobs()
    est = SecureMeanShift(1.5, engine="plaintext", summary="auto").fit(x)
    assert est.summary_ is None and est.seeding_ == "points"     # 240 points: exact, every point
    big = SecureMeanShift(1.5, summary="auto").make_params(1.5, ([-9, -9], [9, 9]), 30_000)
    assert big.summary == 0.25 and big.seeding == "sklearn-bins"    # 13 x 13 candidate bins


def test_progress_header_names_the_choices():
    out = io.StringIO()
    line = ProgressLine(verbose=2, max_iter=5, stream=out, header="2 parties, 80 points")
    line({"stage": "shared"})
    assert out.getvalue().startswith("secure mean-shift: 2 parties, 80 points\n")


def test_progress_says_an_estimated_bandwidth_and_the_seeding_once_known():
    """The parties estimate h in the clustering's session: the header says so,
    then h and the seeding picked with it are added (before anything was shown)
    or said on lines of their own (after)."""
    early = ProgressLine(verbose=1, stream=io.StringIO(), header="3 parties",
                         announce_seeding=True)
    early({"stage": "bandwidth", "bandwidth": 0.123456789})
    early({"stage": "sizes", "seeding": "sklearn-bins", "seeds": 81})
    assert early.header == ("3 parties; bandwidth 0.123457 (estimated under MPC); "
                            "seeding sklearn-bins (81 seeds)")
    out = io.StringIO()
    late = ProgressLine(verbose=2, stream=out, header="3 parties", announce_seeding=True)
    late({"stage": "shared"})
    late({"stage": "bandwidth", "bandwidth": 2.0})
    assert "secure mean-shift: bandwidth 2 (estimated under MPC)\n" in out.getvalue()
    quiet = io.StringIO()
    ProgressLine(verbose=0, stream=quiet)({"stage": "bandwidth", "bandwidth": 2.0})
    assert quiet.getvalue() == ""


def test_switching_away_from_every_point_seeds_is_said():
    from secure_meanshift.estimator import SeedingWarning

    x, _ = make_blobs(1100, centers=[[0, 0], [6, 0]], random_state=0)
    # h = 0.1: too many candidate bins for scikit-learn's bin seeding (at h = 1.5 it is
    # "sklearn-bins": tests/test_bin_seeds.py)
    with pytest.warns(SeedingWarning, match="candidate bins.*'auto' picked 'both'.*seeding_"):
        est = SecureMeanShift(0.1, engine="plaintext", seeds_per_party=4).fit(x)
    assert est.seeding_ == "both"
