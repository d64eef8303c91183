"""Dealer phases (correlations.Correlations.phase): a repeated phase asks for all its
correlated values at its start; results stay exact, and a phase that would draw
other values than it did the first time is refused before any value is used."""

import numpy as np
import pytest

from mpc_jobs import phase_job, run_local


@pytest.mark.parametrize("parties", [2, 3])
def test_reserved_phases_give_the_same_products_and_refuse_another_plan(parties):
    out, refused, _ = run_local(phase_job, parties, (4,))[0]
    want = np.arange(6).reshape(2, 3) * 0.25
    for got in out:
        assert np.abs(got - want).max() < 1e-3
    assert "other values than planned" in refused


def test_dealer_refuses_requests_outside_the_protocol_by_rule():
    from secure_meanshift.mpc.dealer_service import Dealing, check_request
    from secure_meanshift.errors import MPCError

    dealing = Dealing([None] * 3)   # three parties (check_request reads only the count)
    for req in ({"kind": "mul", "s0": [2, 3], "s1": [2, 3]}, {"kind": "ltz", "s0": [100]},
                {"kind": "trunc_sq", "s0": [4, 5], "y": 8192, "width": 3}, {"kind": "end"},
                {"kind": "ltz", "s0": [100], "to": 2}):
        check_request(req, dealing)
    for req in ({"kind": "pickle"}, [], {"kind": "mul", "s0": [1 << 20, 1 << 20], "s1": [1]},
                {"kind": "trunc", "s0": [3], "y": 0}, {"kind": "ltz", "s0": [-1]},
                {"kind": "matmul", "s0": [4, 2], "fixed": 7},
                {"kind": "ltz", "s0": [100], "to": 3}, {"kind": "ltz", "s0": [100], "to": -1},
                {"kind": "ltz", "s0": [100], "to": True}, {"kind": "ltz", "s0": [100], "to": "1"}):
        with pytest.raises(MPCError) as err:
            check_request(req, dealing)
        assert "dealer:" in str(err.value) and "1048576" not in str(err.value)


def test_dealer_checks_narrow_widths_and_kernel_product_requests():
    import torch

    from secure_meanshift.mpc.dealer_service import Dealing, check_request
    from secure_meanshift.errors import MPCError

    dealing = Dealing([None] * 3)   # three parties (check_request reads only the count)
    dealing.fixed[3] = torch.zeros(50, 2, dtype=torch.int64)      # a fixed operand (50, 2)
    for req in ({"kind": "ltz", "s0": [100], "bits": 44}, {"kind": "ltz", "s0": [9], "bits": 2},
                {"kind": "b2a", "s0": [640], "fixed": 3, "rows": [12, 50]}):
        check_request(req, dealing)
    for req in ({"kind": "ltz", "s0": [100], "bits": 65}, {"kind": "ltz", "s0": [9], "bits": 1},
                {"kind": "ltz", "s0": [9], "bits": True}, {"kind": "ltz", "s0": [9], "bits": "44"},
                {"kind": "b2a", "s0": [640], "fixed": 4, "rows": [12, 50]},     # unknown operand
                {"kind": "b2a", "s0": [640], "fixed": 3, "rows": [12, 49]},     # wrong shape
                {"kind": "b2a", "s0": [500], "fixed": 3, "rows": [12, 50]},     # beyond the bits
                {"kind": "b2a", "s0": [640], "fixed": 3, "rows": [12]}):
        with pytest.raises(MPCError):
            check_request(req, dealing)


@pytest.mark.parametrize("parties", [pytest.param(2, marks=pytest.mark.slow), 3])
def test_shuffle_by_the_dealers_permutation_mask(parties):
    """Each rank's secret permutation applied on shares (beaver.shuffle_rows):
    the rows come out in the composed order, for O(m) bytes, not O(m^2)."""
    from mpc_jobs import shuffle_job

    rng = np.random.default_rng(5)
    m = 64
    y = rng.normal(size=(m, 3)).round(3)
    perms = [rng.permutation(m) for _ in range(parties)]
    want = y
    for p in perms:
        want = want[p]
    for got, sent in run_local(shuffle_job, parties, (y, perms)):
        assert np.abs(got - want).max() < 1e-3
        # per owner: y - a opened (m x 3 ring elements to each other party) and
        # delta sent by the owner (m indices); then the final opening
        assert sent < 8 * m * 3 * (parties + 2) * parties


def test_dealer_checks_permutation_requests():
    from secure_meanshift.mpc.dealer_service import Dealing, check_request
    from secure_meanshift.errors import MPCError

    dealing = Dealing([None, None, None])
    check_request({"kind": "perm", "s0": [10, 4], "owner": 2}, dealing)
    for req in ({"kind": "perm", "s0": [10, 4], "owner": 3},
                {"kind": "perm", "s0": [10, 4], "owner": True},
                {"kind": "perm", "s0": [40], "owner": 0},
                {"kind": "perm", "s0": [10, 4]}):
        with pytest.raises(MPCError):
            check_request(req, dealing)


@pytest.mark.parametrize("parties", [2, 3])
def test_narrow_products_are_right_modulo_their_width_for_fewer_bytes(parties):
    """beaver.product_low and a narrow fixed operand (the merge's 0/1 matrix at
    many centroids): equal to the full products modulo 2^16, a quarter of the
    bytes opened and of the dealer's corrections."""
    from mpc_jobs import narrow_products_job

    rng = np.random.default_rng(7)
    x, y = rng.integers(-1000, 1000, (40, 40)), rng.integers(-1000, 1000, (40, 40))
    k = rng.integers(0, 2, (3, 40))
    runs = run_local(narrow_products_job, parties, (x, y, k, 16))
    # the corrections (each to its receiver, summed): 2 bytes an element, not 8
    dealt = [sum(r[2][i] for r in runs) for i in range(4)]
    assert dealt[0] <= 0.25 * dealt[1] and dealt[2] <= 0.25 * dealt[3], dealt
    for (low, full, low_mm, full_mm), sent, _ in runs:
        assert np.array_equal(full, x * y) and np.array_equal(full_mm, k @ y)
        assert np.array_equal(low % 2**16, (x * y) % 2**16)
        assert np.array_equal(low_mm % 2**16, (k @ y) % 2**16)
        # x - a and y - b: 2 bytes an element, not 8 (plus the dealer requests' few bytes)
        assert sent[0] < 0.26 * sent[1] and sent[2] < 0.26 * sent[3], sent


@pytest.mark.parametrize("parties", [2, 3])
def test_lift_brings_narrow_shares_to_the_ring_in_one_round(parties):
    """beaver.lift (the flat kernel's weighted sums computed modulo 2^bits):
    exact over the whole bound [-2^(bits-2), 2^(bits-2)), shares garbled above
    bits, one round of ceil(bits/8) bytes per element and peer."""
    from mpc_jobs import lift_job

    rng = np.random.default_rng(11)
    cases = []
    for bits in (30, 9):
        half = 2**(bits - 2)
        cases.append((np.concatenate([[-half, half - 1, 0, -1, 1],
                                      rng.integers(-half, half, 400)]), bits))
    runs = run_local(lift_job, parties, (cases,))
    for k, (v, bits) in enumerate(cases):
        for rank_runs in runs:
            got, sent, rounds, _ = rank_runs[k]
            assert np.array_equal(got, v), bits
            assert rounds == 1
            assert sent <= v.size * ((bits + 7) // 8) * (parties - 1) + 512, (bits, sent)
        # the corrections (q and r's top bit) travel 64 - bits wide, not 8 bytes
        dealt = sum(r[k][3] for r in runs)
        assert 0 < dealt <= 2 * v.size * ((64 - bits + 7) // 8), dealt


def test_dealer_checks_lifting_and_low_requests():
    import torch

    from secure_meanshift.errors import MPCError
    from secure_meanshift.mpc.dealer_service import Dealing, check_request, correction_widths

    dealing = Dealing([None] * 3)   # three parties (check_request reads only the count)
    dealing.fixed[3] = torch.zeros(50, 2, dtype=torch.int64)
    ok = [{"kind": "lift", "s0": [10, 3], "bits": 30},
          {"kind": "mul", "s0": [4], "s1": [4], "low": 16},
          {"kind": "b2a", "s0": [640], "fixed": 3, "rows": [12, 50], "low": 30}]
    for req in ok:
        check_request(req, dealing)
    for req in ({"kind": "lift", "s0": [10], "bits": 63}, {"kind": "lift", "s0": [10]},
                {"kind": "lift", "s0": [10], "bits": 1},
                {"kind": "and", "s0": [4], "s1": [4], "low": 16},        # bits are not narrowed
                {"kind": "b2a", "s0": [64], "low": 16},                  # no product
                {"kind": "mul", "s0": [4], "s1": [4], "low": 64},
                {"kind": "mul", "s0": [4], "s1": [4], "low": True}):
        with pytest.raises(MPCError):
            check_request(req, dealing)
    # what travels: the product's bits and W narrow, the other bits whole
    assert correction_widths(ok[2], 640 + 600 * 2) == [(600, 30), (40, 64), (1200, 30)]
    assert correction_widths(ok[0], 60) == [(60, 34)]


def test_corrections_are_spread_over_the_parties_by_size():
    """Correlations.receiver's rule for a repeated phase (spread): largest
    first to the least-loaded party, from the loads before the phase; a public
    function of sizes, so every party computes the same receivers."""
    from secure_meanshift.mpc.correlations import SPREAD_FROM, spread

    kb = [338, 845, 101, 51, 20, 822, 110, 96]        # one pass, kB (3 parties)
    sizes = [k * 1000 for k in kb]
    to = spread(sizes, [0, 0, 0])
    loads = [sum(s for s, t in zip(sizes, to) if t == p) for p in range(3)]
    assert to[1] != to[5] and max(loads) <= 4 / 3 * sum(sizes) / 3, loads
    assert to == spread(sizes, [0, 0, 0])                   # the same every time
    # a party that has received more so far gets the largest one last
    big = [SPREAD_FROM, 2 * SPREAD_FROM]
    assert spread(big, [0, 0, 10 * SPREAD_FROM]) == [0, 1]
    # small corrections all to party 0 (one frame, one party woken)
    assert spread([SPREAD_FROM - 1] * 5, [0, 0, 0]) == [0] * 5


def test_a_folded_product_is_made_up_for_in_the_next_sign_tests_mask():
    """A product asked for with "fold" (protocol._exact_edge's C.X) gets no
    correction; the next sign test's material is then dealt for
    r* = r - coef * delta (delta: what the parties' shares of the product
    lack), so the opening x + r is x's exact one with r* in r's place. The
    dealer refuses a test that folds nothing and a second fold before the test."""
    import torch

    from secure_meanshift.errors import MPCError
    from secure_meanshift.mpc import csprng
    from secure_meanshift.mpc.dealer_service import Dealing, check_request
    from secure_meanshift.mpc.ring import ring_matmul, sum_ring
    from secure_meanshift.mpc.signtest import mask_material, mask_rows, words

    keys = [csprng.new_key() for _ in range(3)]
    dealing, parties = Dealing([csprng.Stream(k) for k in keys]), [csprng.Stream(k) for k in keys]
    mm = {"kind": "matmul", "s0": [4, 2], "s1": [2, 5], "fold": 32}
    check_request(mm, dealing)
    assert dealing.answer(mm) is None                      # nothing sent to any party
    drawn = [(st.ring((4, 2)), st.ring((2, 5)), st.ring((4, 5))) for st in parties]
    a, b = sum_ring([d[0] for d in drawn]), sum_ring([d[1] for d in drawn])
    delta = ring_matmul(a, b) - sum_ring([d[2] for d in drawn])
    assert bool((delta != 0).any())                        # the shares do lack something
    n, bits, coef = 20, 44, -32                             # ge_times: x = -T - 1
    ltz = {"kind": "ltz", "s0": [n], "bits": bits, "fold": [20, coef]}
    check_request(ltz, dealing)
    correction = dealing.answer(ltz)                        # party 0's
    r = sum_ring([st.ring((n,)) for st in parties])
    material = correction
    for st in parties[1:]:
        material = material ^ st.ring((mask_rows(bits), words(n)))
    assert torch.equal(material, mask_material(r - coef * delta.reshape(-1), bits))
    with pytest.raises(MPCError, match="folds a product it was not asked for"):
        dealing.answer(ltz)
    dealing.answer(mm)
    with pytest.raises(MPCError, match="before the last one's sign test"):
        dealing.answer(mm)
    for bad in ({"kind": "and", "s0": [1, 2], "s1": [1, 2], "fold": 2}, {**mm, "to": 1},
                {**mm, "fold": "2"}, {**mm, "fold": True}, {**mm, "low": 39},
                {**ltz, "fold": [21, 1]}, {**ltz, "fold": [0, 1]}, {**ltz, "fold": 3},
                {**ltz, "fold": [20, 1 << 63]}):
        with pytest.raises(MPCError):
            check_request(bad, dealing)


@pytest.mark.parametrize("parties", [2, 3])
def test_kernel_product_draws_narrow_w_as_four_byte_words(parties):
    """The flat kernel's [x >= 0] @ u from the sign test (ge_zero's times), and
    the bits themselves: right modulo 2^bits for a fixed operand of 28 bits (W drawn as 4-byte words:
    correlations.w_narrow), of 40 bits and on the whole ring (8-byte words); the
    28-bit product draws 4 keystream bytes less per element of W than the
    40-bit one at every party that draws W (all but its correction's receiver)."""
    from mpc_jobs import kernel_product_job

    rng = np.random.default_rng(3)
    x = rng.integers(-2**30, 2**30, (30, 200))
    u = rng.integers(0, 2**20, (200, 3))
    want = (x >= 0).astype(np.int64) @ u
    runs = run_local(kernel_product_job, parties, (x, u, [28, 40, None]))
    drawn = {w: [] for w in (28, 40, None)}
    for got in runs:
        for (k, ku, n), w in zip(got, (28, 40, None)):
            mod = 2**64 if w is None else 2**w      # the bits' shares: that wide too
            assert np.array_equal(k.astype(object) % mod, (x >= 0).astype(object))
            assert np.array_equal(ku.astype(object) % mod, want.astype(object) % mod)
            drawn[w].append(n)
    # every party but the receiver draws W: 4 bytes an element instead of 8
    assert sum(drawn[40]) - sum(drawn[28]) == (parties - 1) * 30 * 200 * 3 * 4, drawn
    assert sum(drawn[None]) == sum(drawn[40]), drawn
