"""Large openings at three or more parties go through slice kings
(communicator.py): the same opened values as the all-to-all opening, at every
party, with the bytes the formula says; below the threshold and at two parties
they stay all-to-all. The subject is the reduction, not the link: the parties
are threads over the in-memory socket pairs (transport.LocalLinks)."""

import threading

import numpy as np
import pytest
import torch
from torch.distributed import ReduceOp

from secure_meanshift.errors import PeerLost
from secure_meanshift.mpc import communicator as cm
from secure_meanshift.mpc.communicator import MeshCommunicator, king_slices
from secure_meanshift.mpc.transport import LocalLinks, socket_pairs

ABOVE = cm.KING_MIN_BYTES // 8 + 5        # elements: just above (not a multiple of 3 or 4)
BELOW = cm.KING_MIN_BYTES // 8 - 1


def _run(world: int, job, timeout_s: float = 10.0) -> list:
    """job(comm) in one thread per party; returns each party's (result, stats)."""
    ends = socket_pairs(world)
    comms = [MeshCommunicator(LocalLinks(r, dict(ends[r]), timeout_s), world)
             for r in range(world)]
    out: list = [None] * world

    def party(r):
        try:
            out[r] = (job(comms[r]), comms[r].get_communication_stats())
        except BaseException as exc:     # reported by the test thread
            out[r] = exc

    threads = [threading.Thread(target=party, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in comms:
        c.mesh.close()
    return out


def _shares(world: int, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [rng.integers(-2**63, 2**63 - 1, size=n, dtype=np.int64) for _ in range(world)]


def _king_bytes(world: int, rank: int, n: int, width: int) -> int:
    """What one party sends in a king opening of n elements of width bytes."""
    b = king_slices(n, world)
    mine = b[rank + 1] - b[rank]
    return width * ((n - mine) + (world - 1) * mine)


@pytest.mark.parametrize("world", [3, 4])
def test_openings_above_and_below_the_threshold_match_all_to_all(world):
    sizes = (BELOW, ABOVE)
    shares = {n: _shares(world, n, n) for n in sizes}
    xor = _shares(world, ABOVE, 1)

    def job(comm):
        got = []
        for n in sizes:
            got.append(comm.all_reduce(torch.from_numpy(shares[n][comm.rank])))
            got.append(comm.get_communication_stats())
        # batched, by XOR (binary shares): split back into the parts' shapes
        a, b = (torch.from_numpy(xor[comm.rank][:100].copy()).reshape(10, 10),
                torch.from_numpy(xor[comm.rank][100:].copy()))
        got.append(comm.all_reduce([a, b], op=ReduceOp.BXOR, batched=True))
        return got

    results = _run(world, job)
    for rank, res in enumerate(results):
        assert not isinstance(res, BaseException), res
        (small, st1, big, st2, (xa, xb)), _ = res
        assert np.array_equal(small.numpy(), sum(shares[BELOW], np.zeros(BELOW, np.int64)))
        assert np.array_equal(big.numpy(), sum(shares[ABOVE], np.zeros(ABOVE, np.int64)))
        want = np.bitwise_xor.reduce(np.stack(xor))
        assert xa.shape == (10, 10) and np.array_equal(xa.reshape(-1).numpy(), want[:100])
        assert np.array_equal(xb.numpy(), want[100:])
        # all-to-all below: one round, 8 bytes per element to each peer
        assert st1["rounds"] == 1 and st1["bytes"] == 8 * BELOW * (world - 1), st1
        # kings above: two rounds, 2(n-1) transfers per element over all parties
        assert st2["rounds"] == 3, st2
        assert st2["bytes"] - st1["bytes"] == _king_bytes(world, rank, ABOVE, 8), st2
    total = sum(r[0][3]["bytes"] - r[0][1]["bytes"] for r in results)
    assert total == 8 * 2 * (world - 1) * ABOVE < 8 * world * (world - 1) * ABOVE


@pytest.mark.parametrize("world", [3, 4])
def test_narrow_openings_through_kings_match_and_agree(world):
    """all_reduce_low: right modulo 2^bits at every party; through kings every
    party holds the very same value (the low bits, zero above)."""
    widths = [44, 7, 64]
    sizes = [cm.KING_MIN_BYTES // 5 + 5, 3001, 4000]   # 5.5, 7/8 and 8 bytes per element
    small = [50, 10, 20]                       # below: all-to-all
    assert sum(cm.wire_bytes(n, w) for n, w in zip(sizes, widths)) >= cm.KING_MIN_BYTES
    shares = [_shares(world, n, 10 + i) for i, n in enumerate(sizes)]
    few = [_shares(world, n, 20 + i) for i, n in enumerate(small)]

    def job(comm):
        mine = [torch.from_numpy(s[comm.rank]) for s in shares]
        before = comm.get_communication_stats()
        big = comm.all_reduce_low(mine, widths)
        after = comm.get_communication_stats()
        low = comm.all_reduce_low([torch.from_numpy(s[comm.rank]) for s in few], widths)
        return big, low, after["bytes"] - before["bytes"], after["rounds"] - before["rounds"]

    results = _run(world, job)
    for rank, res in enumerate(results):
        assert not isinstance(res, BaseException), res
        (big, low, nbytes, rounds), _ = res
        for got_parts, sh in ((big, shares), (low, few)):
            for got, s, w in zip(got_parts, sh, widths):
                want = sum(s, np.zeros_like(s[0]))
                mask = np.int64(-1) if w == 64 else np.int64((1 << w) - 1)
                assert np.array_equal(got.numpy() & mask, want & mask), (rank, w)
        for got, ref in zip(big, results[0][0][0]):
            assert torch.equal(got, ref)         # the same value at every party
        assert rounds == 2
        want_bytes = 0
        for n, w in zip(sizes, widths):      # my share of each other king's slice,
            b = king_slices(n, world)          # then my slice opened to every peer
            want_bytes += sum(cm.wire_bytes(b[p + 1] - b[p], w) for p in range(world)
                              if p != rank)
            want_bytes += (world - 1) * cm.wire_bytes(b[rank + 1] - b[rank], w)
        assert nbytes == want_bytes, (rank, nbytes, want_bytes)


def test_two_parties_stay_all_to_all():
    shares = _shares(2, ABOVE, 5)
    results = _run(2, lambda comm: comm.all_reduce(torch.from_numpy(shares[comm.rank])))
    for (got, st) in results:
        assert np.array_equal(got.numpy(), shares[0] + shares[1])
        assert st["rounds"] == 1 and st["bytes"] == 8 * ABOVE


def test_a_silent_king_is_named():
    """Rank 2 takes the shares of its slice and never sends the opened slice
    back: the others' timeout names rank 2, the rank they wait on."""
    shares = _shares(3, ABOVE, 6)
    ends = socket_pairs(3)
    comms = [MeshCommunicator(LocalLinks(r, dict(ends[r]), timeout_s=0.2), 3)
             for r in range(3)]
    errors: list = [None, None]

    def party(r):
        try:
            comms[r].all_reduce(torch.from_numpy(shares[r]))
        except PeerLost as exc:
            errors[r] = exc

    threads = [threading.Thread(target=party, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    b = king_slices(ABOVE, 3)
    for p in (0, 1):                       # rank 2: only the first hop
        comms[2].mesh.send(p, cm.to_bytes(torch.from_numpy(shares[2][b[p]:b[p + 1]])))
    comms[2].mesh.flush()
    for t in threads:
        t.join()
    for r in (0, 1):
        assert isinstance(errors[r], PeerLost), errors
        assert errors[r].peers == ("local:2",) and "rank 2" in str(errors[r])
    for c in comms:
        c.mesh.close()


@pytest.mark.slow
@pytest.mark.parametrize("parties", [3, 4])
def test_every_point_job_through_kings_matches_its_twin(parties):
    """A whole every-point job over real TLS links whose large openings (m x N
    = 40,000 pairs) go through kings: the secure centroids are the plaintext
    twin's within the engine's bound (1e-3 h) and every party receives the same ones."""
    from secure_meanshift.centroid_match import match_error
    from secure_meanshift.data import separated_blobs, split_even
    from secure_meanshift.params import MeanShiftParams
    from secure_meanshift.plaintext import reference_meanshift
    from secure_meanshift.simulate import run_simulation

    n = 200
    assert 8 * n * n >= cm.KING_MIN_BYTES        # the distance/kernel openings use kings
    pts, _ = separated_blobs(n, 4, 2, spread=0.012, min_gap=0.4, seed=3)
    parts = split_even(pts, parties, 3)
    p = MeanShiftParams(bandwidth=0.1, bounds=([0, 0], [1, 1]), seeding="points",
                        max_iter=10, seed=parties)
    ref = reference_meanshift(parts, p)
    run = run_simulation(parts, p, transport="tls", timeout_s=300)
    for o in run.outcomes:
        assert o.centroids is not None and len(o.centroids) == len(ref.centroids)
        np.testing.assert_array_equal(o.centroids, run.receiver.centroids)
    err, unmatched = match_error(run.receiver.centroids, ref.centroids)
    assert unmatched == 0 and err < 1e-4, err
    assert run.receiver.iterations == ref.iterations


def test_what_each_party_receives_in_a_king_opening():
    """Party r receives, from each other party p, exactly p's share of slice r
    (what the all-to-all opening sends it for those elements) and then the
    opened slice p: no share of another slice, nothing else."""
    world = 3
    shares = _shares(world, ABOVE, 7)
    total = sum(shares, np.zeros(ABOVE, np.int64))
    b = king_slices(ABOVE, world)
    got: dict = {r: [] for r in range(world)}

    def job(comm):
        recv = comm.mesh.recv

        def recording(rank):
            frame = recv(rank)
            got[comm.rank].append((rank, np.asarray(frame).view(np.int64).copy()))
            return frame

        comm.mesh.recv = recording
        return comm.all_reduce(torch.from_numpy(shares[comm.rank]))

    results = _run(world, job)
    for r in range(world):
        assert not isinstance(results[r], BaseException), results[r]
        assert np.array_equal(results[r][0].numpy(), total)
        others = [p for p in range(world) if p != r]
        first, second = got[r][:world - 1], got[r][world - 1:]
        assert [p for p, _ in first] == others and [p for p, _ in second] == others
        for (p, frame) in first:
            assert np.array_equal(frame, shares[p][b[r]:b[r + 1]])
        for (p, frame) in second:
            assert np.array_equal(frame, total[b[p]:b[p + 1]])


def test_low_bit_frames_round_trip_at_every_width():
    """communicator's low-bit frames (narrow openings, narrow dealer
    corrections): the low bits of each element, rounded up to a nibble,
    packed, and back, at every width and for odd counts."""
    from secure_meanshift.mpc.communicator import (_from_low_bits, low_bits, pack_low,
                                                   unpack_low, wire_bytes)

    rng = np.random.default_rng(9)
    for n in (0, 1, 7, 9, 1000):
        t = torch.from_numpy(rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64))
        for bits in range(1, 65):
            rest = bits % 8
            kept = bits + (4 - rest if 0 < rest <= 4 else (8 - rest) % 8)   # a nibble's
            b = low_bits(t, bits)
            assert b.size == wire_bytes(n, bits) == \
                n * (kept // 8) + (kept % 8 == 4) * ((n + 1) // 2)
            mask = -1 if kept == 64 else (1 << kept) - 1
            assert torch.equal(_from_low_bits(b, n, bits), t & mask), (n, bits)
    assert wire_bytes(1_000_000, 43) == 5_500_000        # 44 bits each, not 6 bytes
    t = torch.from_numpy(rng.integers(-2**63, 2**63 - 1, 90, dtype=np.int64))
    runs = [(30, 30), (20, 64), (40, 9)]
    frame = bytes(pack_low(t, runs))
    assert len(frame) == 30 * 4 + 20 * 8 + 40 + 20
    back = unpack_low(np.frombuffer(frame, np.uint8).copy(), runs, (90,))
    assert torch.equal(back[:30], t[:30] & (2**32 - 1)) and torch.equal(back[30:50], t[30:50])
    assert torch.equal(back[50:], t[50:] & (2**12 - 1))
