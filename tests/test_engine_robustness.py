"""A corrupted update (CrypTen's truncation fails with probability ~|x|/2^64 per
element) is detected by the in-box range test and recomputed, never returned."""

import pytest

from mpc_jobs import faulty_division_job
from secure_meanshift.compare import match_error
from secure_meanshift.data import separated_blobs, split_even
from secure_meanshift.params import MeanShiftParams
from secure_meanshift.plaintext import reference_meanshift
from secure_meanshift.simulate import run_mpc_function


@pytest.mark.parametrize("max_iter", [20, 2])   # mid-run, and the very last update
def test_corrupted_update_is_detected_and_redone(max_iter):
    pts, _ = separated_blobs(100, 4, 2, 0.02, seed=1)
    parts = split_even(pts, 2)
    p = MeanShiftParams(bandwidth=0.1, bounds=([0, 0], [1, 1]), n_dust=6, max_iter=max_iter)
    cents, iterations, retries = run_mpc_function(faulty_division_job, 2, (parts, p, 2))[0]
    ref = reference_meanshift(parts, p)
    assert len(retries) == 1
    assert iterations == ref.iterations
    err, unmatched = match_error(cents, ref.centroids)
    assert unmatched == 0 and err < 1e-3 * p.bandwidth
