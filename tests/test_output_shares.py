"""Output for receivers outside the parties: every party exports a re-randomised
share of the output (secure_meanshift.output); no rank opens it, and the
combined shares are exactly what a receiving rank opens."""

import numpy as np
import pytest

from secure_meanshift import MeanShiftParams, run_simulation
from secure_meanshift.data import separated_blobs, split_even
from secure_meanshift.output import ShareError, combine_shares

# the subject is the exported shares, not the TLS link: ranks in memory
pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("in_memory_links")]


def _parts():
    pts, _ = separated_blobs(90, 3, 2, 0.02, min_gap=0.35, seed=3)
    return split_even(pts, 2, 3)


def test_exported_shares_combine_to_the_opened_output():
    params = MeanShiftParams(bandwidth=0.12, bounds=([-1, -1], [2, 2]), n_dust=6,
                             max_iter=15, reveal_to=(0,), export_shares=True,
                             return_sizes=True, min_cluster_size=3, seed=5, seeding="dust")
    run = run_simulation(_parts(), params)
    opened = run.outcomes[0]
    assert run.outcomes[1].centroids is None             # rank 1 opens nothing
    shares = [o.share for o in run.outcomes]
    assert shares[0]["values"] != shares[1]["values"]
    got = combine_shares(shares, 2)
    np.testing.assert_allclose(got.centroids, opened.centroids, atol=1e-9)
    np.testing.assert_array_equal(got.sizes, opened.sizes)
    # a share alone is noise: far from every centroid's encoding
    with pytest.raises(ShareError):
        combine_shares(shares[:1], 2)
    with pytest.raises(ShareError):
        combine_shares([shares[0], {**shares[1], "values": shares[1]["values"][:-1]}], 2)


def test_no_rank_opens_when_only_shares_are_exported():
    params = MeanShiftParams(bandwidth=0.12, bounds=([0, 0], [1, 1]), n_dust=6,
                             max_iter=15, reveal_to=(), export_shares=True, seed=5, seeding="dust")
    run = run_simulation(_parts(), params)
    assert all(o.centroids is None for o in run.outcomes)
    assert len(combine_shares([o.share for o in run.outcomes], 2).centroids) == 3
