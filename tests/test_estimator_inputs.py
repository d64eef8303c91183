"""Issue 18: every bad input is answered in the caller's process, in under 2 s,
before any party process starts, naming the party, the row and the column."""

import time
import warnings

import numpy as np
import pytest

from secure_meanshift import InputError, SecureMeanShift
from secure_meanshift import simulate
from secure_meanshift.validation import ColumnOrderWarning, PrecisionWarning

pd = pytest.importorskip("pandas")


@pytest.fixture(autouse=True)
def no_process_may_start(monkeypatch):
    def refuse(self):
        raise AssertionError("a party process was started before the input was checked")

    monkeypatch.setattr(simulate.PartyProcess, "start", refuse)


def _parties(n=30, d=2, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1, (n, d)), rng.normal(0, 1, (n + 3, d))]


def refused(X, match, **kw):
    """Fit with the secure engine (the default); the error must come fast."""
    t = time.perf_counter()
    with pytest.raises(ValueError, match=match) as info:
        SecureMeanShift(**{"bandwidth": 1.0, **kw}).fit(X)
    assert time.perf_counter() - t < 2.0
    return str(info.value)


def test_empty_party():
    a, b = _parties()
    refused([a, b[:0]], r"party 1: found 0 sample\(s\)")


def test_one_dimensional_input():
    refused(np.arange(10.0), r"X: expected a 2-D array.*1-D.*reshape\(-1, 1\)")


def test_one_dimensional_party():
    a, b = _parties()
    refused([a, b[:, 0]], r"party 1: expected a 2-D array")


def test_rows_of_different_lengths():
    refused([[0.0, 1.0], [2.0, 3.0, 4.0]], r"X: row 1 has 3 values, row 0 has 2")


def test_empty_list():
    refused([], r"X: an empty list")


def test_a_single_party_is_not_enough_for_the_secure_engine():
    refused([_parties()[0]], r"at least 2 parties")


def test_zero_features():
    refused([np.zeros((4, 0)), np.zeros((4, 0))], r"party 0: 0 feature\(s\)")


def test_bounds_of_the_wrong_width():
    refused(_parties(), r"bounds: lo has 3 value\(s\) but the data has 2 feature",
            bounds=([-9, -9, -9], [9, 9, 9]))


def test_bounds_not_finite():
    refused(_parties(), r"bounds: hi\[1\] \(column 1\) is not finite",
            bounds=([-9, -9], [9, np.inf]))


def test_bounds_reversed():
    refused(_parties(), r"bounds: hi < lo for column 0", bounds=([9, -9], [-9, 9]))


def test_nan_with_explicit_bounds():
    a, b = _parties()
    b[3, 1] = np.nan
    msg = refused([a, b], r"party 1, row 3, column 1: contains NaN", bounds=([-9, -9], [9, 9]))
    assert "bounds" not in msg


def test_nan_with_default_bounds():
    a, b = _parties()
    b[5, 0] = np.nan
    refused([a, b], r"party 1, row 5, column 0: contains NaN")


def test_infinity():
    a, b = _parties()
    a[2, 1] = -np.inf
    refused([a, b], r"party 0, row 2, column 1: contains infinity")


def test_nan_in_a_dataframe_names_the_column():
    a, b = _parties()
    fa, fb = pd.DataFrame(a, columns=["age", "income"]), pd.DataFrame(b, columns=["age", "income"])
    fb.iloc[4, 1] = np.nan
    refused([fa, fb], r"party 1, row 4, column 1 \('income'\): contains NaN")


def test_not_a_number():
    a, b = _parties()
    obj = b.astype(object)
    obj[7, 0] = "n/a"
    refused([a, obj], r"party 1, row 7, column 0: could not convert")


def test_text_column_in_a_dataframe():
    a, b = _parties()
    fb = pd.DataFrame(b, columns=["age", "income"])
    fb["income"] = fb["income"].astype(str)
    fb.loc[2, "income"] = "high"
    refused([pd.DataFrame(a, columns=["age", "income"]), fb],
            r"party 1, row 2, column 1 \('income'\): could not convert")


def test_different_feature_counts():
    a, _ = _parties()
    refused([a, np.zeros((5, 3))], r"party 1: has 3 features \(columns\), party 0 has 2")


def test_point_outside_explicit_bounds():
    a, b = _parties()
    b[6, 1] = 50.0
    refused([a, b], r"party 1, row 6, column 1: outside the public bounds",
            bounds=([-9, -9], [9, 9]))


def test_dataframes_that_cannot_be_aligned():
    a, b = _parties()
    refused([pd.DataFrame(a, columns=["age", "income"]), pd.DataFrame(b, columns=["age", "debt"])],
            r"party 1: has no column 'income' that party 0 has.*cannot be aligned")


def test_duplicate_column_names():
    a, b = _parties()
    refused([pd.DataFrame(a, columns=["age", "age"]), pd.DataFrame(b, columns=["age", "age"])],
            r"party 0: column 'age' appears twice")


def test_too_few_rows_to_split_a_single_array():
    refused(np.zeros((1, 2)), r"1 sample\(s\) cannot be split among 2 parties")


def test_sparse_input():
    sp = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="sparse"):
        SecureMeanShift(1.0).fit(sp.csr_matrix(np.ones((4, 2))))


def test_bad_parameter_value_is_refused_at_fit():
    refused(_parties(), r"'kernel' parameter of SecureMeanShift must be", kernel="square")
    refused(_parties(), r"'bandwidth' parameter", bandwidth=-1.0)


def test_misspelt_parameter():
    with pytest.raises(ValueError, match="Invalid parameter 'bandwith'"):
        SecureMeanShift().set_params(bandwith=2.0)


def test_too_many_point_seeds():
    rng = np.random.default_rng(0)
    refused([rng.normal(0, 1, (1100, 2)), rng.normal(0, 1, (1100, 2))],
            r"seeding: 'points'.*at most 2000", seeding="points")


def test_reveal_to_a_party_that_does_not_exist():
    refused(_parties(), r"reveal_to: party 5 does not exist", reveal_to=[0, 5])


def test_outlier_makes_the_grid_coarser_than_the_bandwidth():
    """The issue's case: data of about +-10, one point at 1e5, h = 1 (30 clusters
    instead of 13, silently): refused, saying what to do."""
    a, b = _parties(200)
    a = a * 4
    b[17, 0] = 1e5
    msg = refused([a, b], r"fixed-point grid .* coarser than 1/32 of the bandwidth")
    assert "clip or remove outliers" in msg and "column 0" in msg and "2,048 bandwidths" in msg
    assert "100000" not in msg and "1e+05" not in msg          # no data value in the message


def test_a_fine_bandwidth_relative_to_the_range_warns():
    a, b = _parties()
    with pytest.warns(PrecisionWarning, match="coarser than 1/100"):
        SecureMeanShift(0.02, engine="plaintext", seeding="dust").fit([a * 5, b * 5])


def test_the_plaintext_engine_applies_the_same_checks():
    a, b = _parties()
    b[3, 1] = np.nan
    refused([a, b], r"party 1, row 3, column 1: contains NaN", engine="plaintext")
    c, d = _parties()
    d[1, 0] = 30.0
    refused([c, d], r"party 1, row 1, column 0: outside", engine="plaintext",
            bounds=([-9, -9], [9, 9]))


# ---- not refused: reordered columns, single arrays, predict --------------------

def test_dataframe_columns_in_another_order_are_reordered_with_a_warning():
    a, b = _parties()
    fa = pd.DataFrame(a, columns=["age", "income"])
    fb = pd.DataFrame(b[:, ::-1], columns=["income", "age"])
    with pytest.warns(ColumnOrderWarning, match="party 1: its columns are in another order"):
        got = SecureMeanShift(1.0, engine="plaintext").fit([fa, fb])
    want = SecureMeanShift(1.0, engine="plaintext").fit([a, b])
    np.testing.assert_allclose(got.cluster_centers_, want.cluster_centers_)
    assert list(got.feature_names_in_) == ["age", "income"]


def test_an_array_beside_dataframes_is_taken_in_order_with_a_warning():
    a, b = _parties()
    with pytest.warns(ColumnOrderWarning, match="party 1: no column names"):
        SecureMeanShift(1.0, engine="plaintext").fit([pd.DataFrame(a, columns=["x", "y"]), b])


def test_predict_with_the_wrong_width():
    est = SecureMeanShift(1.0, engine="plaintext").fit(_parties())
    t = time.perf_counter()
    with pytest.raises(ValueError, match="X has 3 features, but SecureMeanShift is expecting 2"):
        est.predict(np.zeros((4, 3)))
    assert time.perf_counter() - t < 2.0


def test_predict_with_nan_names_row_and_column():
    est = SecureMeanShift(1.0, engine="plaintext").fit(_parties())
    x = np.zeros((4, 2))
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match="X, row 2, column 1: contains NaN"):
        est.predict(x)


def test_predict_with_other_feature_names():
    a, b = _parties()
    est = SecureMeanShift(1.0, engine="plaintext").fit(
        [pd.DataFrame(a, columns=["x", "y"]), pd.DataFrame(b, columns=["x", "y"])])
    with pytest.raises(ValueError, match="feature names"):
        est.predict(pd.DataFrame(a, columns=["x", "z"]))


def test_a_list_of_rows_is_one_array():
    rows = [[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]]
    est = SecureMeanShift(1.0, engine="plaintext").fit(rows)
    assert isinstance(est.labels_, np.ndarray) and est.labels_.shape == (4,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.predict(rows)
