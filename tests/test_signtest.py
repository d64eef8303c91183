"""The dealer-assisted sign test (secure_meanshift/mpc/signtest.py): exact for every
ring element, at most 16 bytes per element per other party, 7 rounds for any
number of parties; and multiplications by a fixed operand open its mask once."""

import numpy as np
import pytest
import torch

from mpc_jobs import fixed_operand_job, ring_sign_job, run_local
from secure_meanshift.mpc import signtest
from secure_meanshift.mpc.communicator import wire_bytes

SPU_SEMI2K_MSB_BITS = 13 * 2 * 64 + 64   # SPU's cost model: a2b + b2a, 2 parties, K = 64


@pytest.mark.parametrize("parties", [2, 3, 4])
def test_sign_is_exact_for_every_ring_element_and_rounds_are_flat(parties):
    n = 1000 if parties == 2 else 130       # 130: two words plus a padded third
    results = run_local(ring_sign_job, parties, (n,))
    bits, values, stats = results[0]
    assert np.array_equal(bits, (values < 0).astype(np.int64))
    assert stats["rounds"] == 7, stats
    # to each other party: c (64 bits per element), then whole words of sliced
    # bits: 55 rows for the AND levels and one for the conversion
    w = signtest.words(values.size)
    per_peer = 8 * values.size + (55 + 1) * 8 * w
    for rank, (_, _, st) in enumerate(results[1:], start=1):   # rank 0 also asks the dealer
        assert st["bytes"] == (parties - 1) * per_peer, (rank, st)
    if parties == 2:
        assert per_peer * 8 / values.size < SPU_SEMI2K_MSB_BITS / 10


def test_bit_slicing_round_trips():
    rng = np.random.default_rng(3)
    for n in (1, 63, 64, 65, 1000):
        v = torch.from_numpy(rng.integers(-2**63, 2**63 - 1, size=n, dtype=np.int64))
        s = signtest.slice_bits(v)
        assert s.shape == (64, signtest.words(n))
        for j in (0, 1, 31, 62, 63):
            want = ((v >> j) & 1).long()
            assert torch.equal(signtest.unpack_bits(s[j], n), want)
        b = torch.from_numpy(rng.integers(0, 2, size=n))
        assert torch.equal(signtest.unpack_bits(signtest.pack_bits(b), n), b)


def test_dealer_material_holds_each_blocks_bit_products():
    v = torch.from_numpy(np.random.default_rng(4).integers(-2**63, 2**63 - 1, size=200,
                                                           dtype=np.int64))
    m = signtest.mask_material(v)
    t = signtest.TRIPLES
    assert m.shape == (signtest.MASK_ROWS, signtest.words(200)) == (64 + 4 * 21, 4)
    for j in range(t):
        a, b, c = ((v >> (3 * j + k)) & 1 for k in (2, 1, 0))
        for k, want in enumerate((a & b, a & c, b & c, a & b & c)):
            assert torch.equal(signtest.unpack_bits(m[64 + k * t + j], 200), want.long())


def test_fixed_operand_mask_is_opened_once():
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, size=(300, 2))
    cs = [rng.uniform(0, 1, size=(8, 2)) for _ in range(3)]
    out, sent, ref = run_local(fixed_operand_job, 2, (cs, x))[0]
    for got, want in zip(out, ref):
        assert np.abs(got - want).max() < 1e-3
    # first product opens C - A (8 x 2) and X - B (2 x 300); later ones C - A only
    assert sent[0] > 8 * 2 * 300
    assert all(s < 8 * (8 * 2) + 512 for s in sent[1:]), sent


def narrow_sign_job(rank, segments):
    """[x < 0] for (count, bits) segments of values in [-2^(bits-1), 2^(bits-1)),
    extremes first, all in one call of less_than_zero; with its communication."""
    import numpy as np

    from secure_meanshift.mpc._compat import import_crypten
    from secure_meanshift.mpc.beaver import less_than_zero_narrow

    crypten = import_crypten()
    from crypten.mpc import MPCTensor

    comm = crypten.comm.get()
    world = comm.get_world_size()
    rng = np.random.default_rng(11)
    parts = []
    for n, bits in segments:
        half = 2 ** (bits - 1)
        special = np.array([half - 1, -half, 0, -1, 1, -(half - 1), half // 2, -half // 2],
                           np.int64)
        rand = rng.integers(-half, half - 1, size=n - special.size, dtype=np.int64,
                            endpoint=True)
        parts.append(np.concatenate([special, rand]))
    values = np.concatenate(parts)
    shares = [np.random.default_rng(60 + r).integers(-2**63, 2**63 - 1, size=values.size,
                                                      dtype=np.int64) for r in range(world)]
    shares[0] = values - sum(shares[1:], np.zeros_like(values))   # wraps mod 2^64
    x = MPCTensor.from_shares(torch.from_numpy(shares[rank]), precision=0)
    comm.reset_communication_stats()
    bits = less_than_zero_narrow(x, segments)
    stats = comm.get_communication_stats()
    return bits.get_plain_text().long().numpy(), values, stats


@pytest.mark.parametrize("parties", [2, 3])
def test_narrow_sign_test_is_exact_within_its_width_and_cheaper(parties):
    # and every block layout: low bits 3t + 0, 1 or 2 (a top block of none, one
    # or two bits), with one AND level or none (widths 2-9, 62, 63)
    segments = [(300, 44), (70, 64), (130, 7), (65, 45)] + \
        [(40, b) for b in (2, 3, 4, 5, 6, 8, 9, 62, 63)]
    results = run_local(narrow_sign_job, parties, (segments,))
    bits, values, stats = results[0]
    assert np.array_equal(bits, (values < 0).astype(np.int64))
    assert stats["rounds"] == 7, stats          # the 64-bit segment sets the depth
    # to each other party: l bits of c per element (communicator.low_bits), the
    # AND levels' sliced words, one B2A word row over the whole call
    per_peer = sum(wire_bytes(n, b) for n, b in segments)
    per_peer += 8 * signtest.words(sum(n for n, _ in segments))
    for n, b in segments:
        per_peer += 8 * signtest.words(n) * sum(      # the lowest pair: no eq
            2 * h if last else 3 * h - 1 for h, last in signtest._levels(signtest._block_count(b)))
    for rank, (_, _, st) in enumerate(results[1:], start=1):
        assert st["bytes"] == (parties - 1) * per_peer, (rank, st)
    wide = (8 + 93 / 8) * sum(n for n, _ in segments)
    assert per_peer < 0.8 * wide


def test_narrow_width_with_few_blocks_takes_fewer_rounds():
    results = run_local(narrow_sign_job, 2, ([(200, 20)],))
    bits, values, stats = results[0]
    assert np.array_equal(bits, (values < 0).astype(np.int64))
    assert stats["rounds"] == 1 + 3 + 1, stats      # 7 blocks: three AND levels


def test_narrow_material_and_width_checks():
    v = torch.from_numpy(np.random.default_rng(4).integers(-2**63, 2**63 - 1, size=100,
                                                           dtype=np.int64))
    assert signtest.mask_material(v).shape == (signtest.MASK_ROWS, signtest.words(100))
    m = signtest.mask_material(v, 44)          # 43 low bits: 14 blocks of three, one alone
    assert m.shape == (signtest.mask_rows(44), signtest.words(100)) == (44 + 4 * 14, 2)
    want = ((v >> 11) & (v >> 10) & (v >> 9) & 1).long()         # abc of block 3
    assert torch.equal(signtest.unpack_bits(m[44 + 3 * 14 + 3], 100), want)
    m = signtest.mask_material(v, 3)           # 2 low bits: one block of two
    assert m.shape == (3 + 1, 2)
    assert torch.equal(signtest.unpack_bits(m[3], 100), ((v >> 1) & v & 1).long())
    for bad in (1, 65, 0, True, 44.0):
        with pytest.raises(ValueError):
            signtest.check_width(bad)


def kernel_times_job(rank, edge, u):
    """ge_zero(..., times=u): the kernel bits, a batched extra test and K @ u,
    against CrypTen's comparison and Beaver product on the same shares."""
    from secure_meanshift.mpc._compat import import_crypten
    from secure_meanshift.mpc.beaver import fixed_operand, prime_fixed
    from secure_meanshift.mpc.fixedpoint import ge_zero

    crypten = import_crypten()
    comm = crypten.comm.get()
    e = crypten.cryptensor(torch.tensor(edge, dtype=torch.float32), src=0)
    extra = crypten.cryptensor(torch.tensor([0.5, -0.25, 0.0, 3.0]), src=1)
    uu = fixed_operand(crypten.cryptensor(torch.tensor(u, dtype=torch.float32), src=1))
    prime_fixed(uu)
    comm.reset_communication_stats()
    (k, x2), s = ge_zero(e, extra, bits=[30, None], times=uu)
    stats = comm.get_communication_stats()
    ref = e.ge(0.0).matmul(uu)
    return (k.get_plain_text().numpy(), x2.get_plain_text().numpy(),
            s.get_plain_text().double().numpy(), ref.get_plain_text().double().numpy(), stats)


@pytest.mark.parametrize("parties", [2, 3])
def test_kernel_times_fixed_operand_needs_no_product_opening(parties):
    rng = np.random.default_rng(8)
    edge = rng.uniform(-100, 100, size=(9, 70))
    edge[0, :5] = [0.0, -2**-16, 2**-16, 99.99, -99.99]
    u = rng.uniform(0, 1, size=(70, 3))
    k, x2, s, ref, stats = run_local(kernel_times_job, parties, (edge, u))[0]
    want = (np.round(edge * 2**16) >= 0).astype(np.float32)
    assert np.array_equal(k, want)
    assert np.array_equal(x2, [1, 0, 1, 1])
    assert np.abs(s - ref).max() < 1e-9
    assert np.abs(s - want @ u).max() < 70 * 2**-16
    assert stats["rounds"] == 7, stats      # the sign test's rounds only: no product round


def test_ring_helpers_give_torchs_values():
    """ring_matmul (column by column) wraps like torch.matmul; minus_all and
    xor_into (in place) equal the expressions they replace."""
    from secure_meanshift.mpc.ring import minus_all, ring_matmul, sum_ring, xor_all, xor_into

    g = torch.Generator().manual_seed(5)

    def ring(*shape):
        return torch.randint(-2**63, 2**63 - 1, shape, dtype=torch.int64, generator=g)

    a = ring(37, 50)
    for b in (ring(50, 2), ring(50, 16), ring(50, 17), ring(2, 50).t(), ring(50, 1)):
        assert torch.equal(ring_matmul(a, b), torch.matmul(a, b))
    assert ring_matmul(ring(3, 4, 5), ring(5, 2)).shape == (3, 4, 2)     # torch.matmul's
    x, ts = ring(40), [ring(40) for _ in range(3)]
    assert torch.equal(minus_all(x.clone(), ts), x - sum_ring(ts))
    assert torch.equal(xor_into(x.clone(), ts), x ^ xor_all(ts))
    assert torch.equal(minus_all(x.clone(), []), x)
