"""Large passes settle each update at once (protocol._iterate_settled): the
update's range and move tests, the count of seeds still moving and ONE opening
of [failure count, stop bit] right after it, so the pass after the last update
is never run. Same centroids and iterations as answering the tests inside the
next pass; a corrupted update is still caught and redone."""

import numpy as np
import pytest

from mpc_jobs import run_local, settle_job
from secure_meanshift.centroid_match import match_error
from secure_meanshift.data import separated_blobs, split_even
from secure_meanshift.params import MeanShiftParams
from secure_meanshift.plaintext import reference_meanshift


def _job(seeding: str, max_iter: int = 300):
    parts = split_even(separated_blobs(120, 4, 2, 0.02, seed=5)[0], 3)
    p = MeanShiftParams(bandwidth=0.1, bounds=([0, 0], [1, 1]), n_dust=6, max_iter=max_iter,
                        seeding=seeding)
    return parts, p


@pytest.mark.parametrize("seeding", ["dust", "points"])
def test_settled_updates_give_the_same_result_one_pass_sooner(seeding):
    parts, p = _job(seeding)
    ref = reference_meanshift(parts, p)
    got = {}
    for settle in (True, False):
        cents, iterations, passes, opened, retries = run_local(
            settle_job, 3, (parts, p, settle))[0]
        assert not retries
        assert iterations == ref.iterations
        err, unmatched = match_error(cents, ref.centroids)
        assert unmatched == 0 and err < 1e-3 * p.bandwidth, (settle, err)
        # one opening an iteration, [failure count, stop bit], nothing else (the
        # next-pass way opens the first pass's failure count on its own)
        assert opened == ["failure-count"] * (not settle) + ["stop-bit"] * iterations, \
            (settle, opened)
        got[settle] = cents, passes
    assert got[True][1] == ref.iterations            # a pass per update, none after
    assert got[False][1] == ref.iterations + 1       # the last pass only said "stop"
    # the same up to the truncations' last-unit rounding (random masks)
    assert np.abs(got[True][0] - got[False][0]).max() < 2.0 ** -16


@pytest.mark.parametrize("max_iter", [20, 2])   # mid-run, and the very last update
def test_settled_corrupted_update_is_detected_and_redone(max_iter):
    parts, p = _job("dust", max_iter)
    ref = reference_meanshift(parts, p)
    cents, iterations, passes, opened, retries = run_local(settle_job, 3, (parts, p, True, 2))[0]
    assert len(retries) == 1 and iterations == ref.iterations
    assert passes == iterations + 1                  # the corrupted update's pass, again
    assert opened == ["stop-bit"] * (iterations + 1)
    assert match_error(cents, ref.centroids)[0] < 1e-3 * p.bandwidth


def test_a_large_job_settles_through_the_cli(tmp_path):
    """Real processes and TLS links: every-point seeds at 520 points (270,400
    (centroid, point) pairs, above protocol.SETTLE_MIN_PAIRS) settle each
    update, so the run makes exactly one pass per iteration, and equals the
    twin (iterations, centres)."""
    import json
    import subprocess
    import sys

    from secure_meanshift.protocol import SETTLE_MIN_PAIRS

    assert 520 * 520 >= SETTLE_MIN_PAIRS
    out = tmp_path / "run.json"
    res = subprocess.run([sys.executable, "-m", "meanshift_cli.simulate", "--points", "520",
                          "--parties", "3", "--bandwidth", "0.1", "--no-sklearn", "--quiet",
                          "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["seeding"] == "points"
    assert r["passes"] == r["iterations"] == r["reference_iterations"]
    assert r["unmatched_centroids"] == 0 and r["max_abs_error"] < 1e-4 * r["bandwidth"]
