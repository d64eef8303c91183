"""What one mean-shift iteration costs on the wire, per protocol step, against
the figures SecretFlow SPU reached for the same job on this machine
(../shared/docs/anchors.md and issue 11: SEMI2K 156 KB per iteration at 100
points and 2 parties, ABY3 about 0.5 MB at 3 parties). Counted by the engine
itself (MeshCommunicator), so a regression in bytes fails here, not only in a
benchmark."""

import numpy as np
import pytest

from secure_meanshift.data import split_even, synthetic_blobs
from secure_meanshift.params import MeanShiftParams
from secure_meanshift.simulate import run_simulation

SPU_BYTES_PER_ITERATION = {2: 156e3, 3: 486e3}
ITERATION_STEPS = ("distance", "kernel", "update", "division", "stop")


@pytest.mark.parametrize("parties", [2, 3])
def test_bytes_per_iteration_below_spu_including_the_dealer(parties):
    pts, _ = synthetic_blobs(100, 8, 2, 0.03, 0)
    parts = split_even(pts, parties, 0)
    p = MeanShiftParams(bandwidth=0.1, bounds=([0, 0], [1, 1]), n_dust=8, max_iter=20,
                        seeding="dust")
    run = run_simulation(parts, p, transport="local", timeout_s=60)
    it = run.receiver.iterations
    total = sum(o.communication["bytes"] for o in run.outcomes)
    dealer = sum(o.communication["dealer_bytes"] for o in run.outcomes)
    # every byte is charged to exactly one protocol step
    for o in run.outcomes:
        steps = o.communication["steps"]
        assert sum(s["bytes"] for s in steps.values()) == o.communication["bytes"]
        assert sum(s["rounds"] for s in steps.values()) == o.communication["rounds"]
        assert set(ITERATION_STEPS) <= set(steps)
    per_iteration = sum(o.communication["steps"][s]["bytes"] + o.communication["steps"][s][
        "dealer_bytes"] for o in run.outcomes for s in ITERATION_STEPS) / it
    assert per_iteration < SPU_BYTES_PER_ITERATION[parties], per_iteration
    # the whole job (sharing, merge and reveal included) still averages below
    assert (total + dealer) / it < SPU_BYTES_PER_ITERATION[parties]
    # the flat kernel's sign tests dominate: 8 x 100 of them per iteration, each
    # about 20 bytes per peer and party (signtest.py)
    kernel = sum(o.communication["steps"]["kernel"]["bytes"] for o in run.outcomes) / (it + 1)
    assert kernel < 1.2 * 800 * 20 * parties * (parties - 1), kernel


def test_every_point_pass_costs_per_pair_three_parties():
    """Every-point seeding (m = N), 3 parties (issue 19): the kernel's sign tests
    are narrow (c mod 2^35 on the edge grid: 4.5 bytes, 29 tree bits, 1 conversion
    bit per pair and directed link, about 8 bytes instead of 20) and K @ X opens nothing of its
    own (the dealer's rho * B instead of a Beaver opening of K - A: 48 bytes per
    pair before)."""
    pts, _ = synthetic_blobs(120, 8, 2, 0.03, 0)
    parts = split_even(pts, 3, 0)
    p = MeanShiftParams(bandwidth=0.1, bounds=([0, 0], [1, 1]), seeding="points",
                        max_iter=2, oblivious=True)
    run = run_simulation(parts, p, transport="local", timeout_s=60)
    passes, pairs = p.max_iter + 1, 120 * 120
    step = lambda s, k: sum(o.communication["steps"].get(s, {}).get(k, 0)  # noqa: E731
                            for o in run.outcomes)
    kernel = step("kernel", "bytes") / passes / pairs
    assert kernel < 6 * 9, kernel          # 6 directed links, 36 + 29 + 1 bits each
    assert step("update", "bytes") / passes / pairs < 1.0
    # the dealer's part per pair: the sign test's material, triples and random
    # bits (about 12), rho and rho * B (8 (d + 1) = 24, whole below
    # NARROW_SUMS_MIN_PAIRS pairs); the distance triple C.X is folded
    # into the sign test's mask (protocol._exact_edge): none of its 8 bytes
    assert step("distance", "dealer_bytes") / passes / pairs < 0.5
    dealer = sum(step(s, "dealer_bytes") for s in ("distance", "kernel", "update")) \
        / passes / pairs
    assert dealer < 38, dealer
    print(f"per pair and pass: kernel {kernel:.1f} B, dealer {dealer:.1f} B")
