"""A corrupted update (CrypTen's truncation fails with probability ~|x|/2^64 per
element) is detected by the in-box range test and recomputed, never returned."""

import pytest

from mpc_jobs import counted_openings_job, faulty_division_job, run_local
from secure_meanshift.centroid_match import match_error
from secure_meanshift.data import separated_blobs, split_even
from secure_meanshift.params import MeanShiftParams
from secure_meanshift.plaintext import reference_meanshift


@pytest.mark.parametrize("max_iter", [20, 2])   # mid-run, and the very last update
def test_corrupted_update_is_detected_and_redone(max_iter):
    pts, _ = separated_blobs(100, 4, 2, 0.02, seed=1)
    parts = split_even(pts, 2)
    p = MeanShiftParams(bandwidth=0.1, bounds=([0, 0], [1, 1]), n_dust=6, max_iter=max_iter,
                        seeding="dust")
    cents, iterations, retries = run_local(faulty_division_job, 2, (parts, p, 2))[0]
    ref = reference_meanshift(parts, p)
    assert len(retries) == 1
    assert iterations == ref.iterations
    err, unmatched = match_error(cents, ref.centroids)
    assert unmatched == 0 and err < 1e-3 * p.bandwidth


def test_oblivious_opens_nothing_before_the_end_even_after_a_failure():
    """Oblivious mode: no opening at all before the final merge (not a stop bit,
    not a failure count); a corrupted update is dropped on shares (the row keeps
    its position) and the result still equals the twin."""
    parts = split_even(separated_blobs(100, 4, 2, 0.02, seed=3)[0], 2)
    p = MeanShiftParams(bandwidth=0.1, bounds=([0, 0], [1, 1]), n_dust=4, max_iter=8,
                        oblivious=True, seeding="dust")
    ref = reference_meanshift(parts, p)
    for fault_at in (0, 3):
        cents, iterations, opened, events = run_local(
            counted_openings_job, 2, (parts, p, fault_at))[0]
        assert opened == 0, f"{opened} openings before the end (fault_at={fault_at})"
        assert iterations == 8
        assert not [e for e in events if e.get("stage") == "retry"]
        assert match_error(cents, ref.centroids)[0] < 1e-3 * p.bandwidth


def test_non_oblivious_mode_opens_only_its_stop_bits():
    parts = split_even(separated_blobs(100, 4, 2, 0.02, seed=3)[0], 2)
    p = MeanShiftParams(bandwidth=0.1, bounds=([0, 0], [1, 1]), n_dust=4, max_iter=8,
                        seeding="dust")
    cents, iterations, opened, _ = run_local(counted_openings_job, 2, (parts, p))[0]
    # one opening per pass (the failure count with the stop bit), nothing else
    assert 0 < opened <= iterations + 2
