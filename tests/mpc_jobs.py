"""Functions run inside MPC party processes by the engine tests
(module-level so that 'spawn' can pickle them), and run_local to run them."""

import torch


def run_local(fn, world_size: int, args: tuple = (), **kwargs) -> list:
    """simulate.run_mpc_function over socket pairs between forked ranks, no TLS
    (transport.LocalLinks): for protocol tests whose subject is not the link."""
    from secure_meanshift.simulate import run_mpc_function

    return run_mpc_function(fn, world_size, args, transport="local", **kwargs)


def divide_job(rank, den, q, max_den):
    from secure_meanshift.mpc._compat import import_crypten
    from secure_meanshift.mpc.division import secure_divide

    crypten = import_crypten()
    den_t = torch.tensor(den, dtype=torch.float32).reshape(-1, 1)
    num_t = torch.tensor(q, dtype=torch.float32) * den_t
    d = crypten.cryptensor(den_t, src=0, precision=20)   # the engine divides at 20 bits
    n = crypten.cryptensor(num_t, src=0, precision=20)
    fb = crypten.cryptensor(torch.full(num_t.shape, 0.5), src=0, precision=20)
    out = secure_divide(n, d, fb, max_den).get_plain_text()
    # the quotient of what is actually shared (fixed-point encoded inputs)
    ref = n.get_plain_text() / d.get_plain_text().clamp(min=1e-12)
    return out.double().numpy(), ref.double().numpy()


def crypten_reciprocal_job(rank, den):
    from secure_meanshift.mpc._compat import import_crypten

    crypten = import_crypten()
    d = crypten.cryptensor(torch.tensor(den, dtype=torch.float32), src=0)
    return d.reciprocal().get_plain_text().double().numpy()


def corrupt_division(proto, fault_at: int) -> None:
    """Make the division's output huge once, as a failed truncation would, at
    update number ``fault_at``."""
    original = proto.divide_with_bits
    calls = {"n": 0}

    def corrupted(*args, **kwargs):
        out = original(*args, **kwargs)
        calls["n"] += 1
        return out + 1e4 if calls["n"] == fault_at else out

    proto.divide_with_bits = corrupted


def faulty_division_job(rank, parts, params, fault_at):
    """Run the protocol with one corrupted update (corrupt_division)."""
    import secure_meanshift.protocol as proto

    corrupt_division(proto, fault_at)
    events = []
    res = proto.run_protocol(parts[rank], None, params, events.append)
    return res.centroids, res.iterations, [e for e in events if e.get("stage") == "retry"]


def counted_openings_job(rank, parts, params, fault_at=0):
    """Run the protocol counting every disclosure (disclosure.observe) made
    before the final merge and reveal; optionally corrupt one division."""
    import secure_meanshift.protocol as proto
    from secure_meanshift.disclosure import observe

    if fault_at:
        corrupt_division(proto, fault_at)
    events = []
    with observe() as seen:
        res = proto.run_protocol(parts[rank], None, params, events.append)
    before_end = [e for e in seen if e.why not in ("merge-depth", "result")]
    return res.centroids, res.iterations, len(before_end), events


def comparison_job(rank, values, thresholds):
    """[x >= t] for shared x (from rank 0) and public t; with the round count."""
    from secure_meanshift.mpc._compat import import_crypten

    crypten = import_crypten()
    x = crypten.cryptensor(torch.tensor(values, dtype=torch.float32), src=0)
    crypten.comm.get().reset_communication_stats()
    out = [(x >= t).get_plain_text().numpy() for t in thresholds]
    return out, crypten.comm.get().get_communication_stats()
def exact_edge_job(rank, c, x, radius2, bits, narrow=False, grid=False):
    """The flat kernel's edge test on shares, exact path and the old 16-bit path;
    ``narrow``: the exact path at protocol.edge_width's comparison width;
    ``grid``: as the protocol runs it, c first rounded to the edge grid
    (protocol._on_grid; the exact path then also returns that rounding)."""
    import numpy as np

    from secure_meanshift.kernels import EDGE_GRID_BITS
    from secure_meanshift.mpc._compat import import_crypten
    from secure_meanshift.mpc.fixedpoint import ge_zero, rescale
    from secure_meanshift.protocol import _exact_edge, _int_view, _on_grid, edge_width

    crypten = import_crypten()
    ct = crypten.cryptensor(torch.tensor(c, dtype=torch.float64), src=0, precision=bits)
    pts = crypten.cryptensor(torch.tensor(x, dtype=torch.float32), src=1)      # 16 bits
    xi = np.round(np.asarray(x) * 2.0**16).astype(np.int64)
    xx = crypten.cryptensor(torch.from_numpy((xi * xi).sum(1)).reshape(1, -1), src=1,
                            precision=0)
    cg, at = (_on_grid(ct, bits), EDGE_GRID_BITS) if grid else (ct, bits)
    width = edge_width(ct.size(1), radius2, at) if narrow else None
    (exact,) = ge_zero(_exact_edge(cg, _int_view(pts).t(), xx, radius2, at), bits=[width])
    if grid:
        return exact.get_plain_text().numpy(), cg.get_plain_text().numpy()
    c16 = rescale(ct, 16)
    sq = crypten.cryptensor(torch.tensor((np.asarray(x) ** 2).sum(1, keepdims=True),
                                         dtype=torch.float32), src=1)
    dist = (c16 * c16).sum(dim=1, keepdim=True) - 2.0 * c16.matmul(pts.t()) + sq.t()
    (old,) = ge_zero(radius2 - dist)
    return exact.get_plain_text().numpy(), old.get_plain_text().numpy()


def ring_sign_job(rank, n):
    """[x < 0] for n random ring elements plus the extremes, shared by every rank;
    with the communication of the one comparison."""
    import numpy as np

    from secure_meanshift.mpc._compat import import_crypten

    crypten = import_crypten()
    from crypten.mpc import MPCTensor

    comm = crypten.comm.get()
    world = comm.get_world_size()
    special = np.array([0, -1, 1, 2**63 - 1, -2**63, 2**62, -2**62, 2**62 - 1], np.int64)
    values = np.concatenate([special, np.random.default_rng(7).integers(
        -2**63, 2**63 - 1, size=n, dtype=np.int64)])
    shares = [np.random.default_rng(50 + r).integers(-2**63, 2**63 - 1, size=values.size,
                                                      dtype=np.int64) for r in range(world)]
    shares[0] = values - sum(shares[1:], np.zeros_like(values))   # wraps mod 2^64
    x = MPCTensor.from_shares(torch.from_numpy(shares[rank]), precision=0)
    comm.reset_communication_stats()
    bits = x._ltz()
    stats = comm.get_communication_stats()
    return bits.get_plain_text().long().numpy(), values, stats


def fixed_operand_job(rank, c_rows, x):
    """C_t @ X for two different C_t with X marked fixed: products and bytes per call."""
    import numpy as np

    from secure_meanshift.mpc._compat import import_crypten
    from secure_meanshift.mpc.beaver import fixed_operand

    crypten = import_crypten()
    comm = crypten.comm.get()
    xs = fixed_operand(crypten.cryptensor(torch.tensor(x, dtype=torch.float32), src=1).t())
    out, sent = [], []
    for c in c_rows:
        ct = crypten.cryptensor(torch.tensor(c, dtype=torch.float32), src=0)
        comm.reset_communication_stats()
        prod = ct.matmul(xs)
        sent.append(comm.get_communication_stats()["bytes"])
        out.append(prod.get_plain_text().double().numpy())
    return out, sent, [np.asarray(c) @ np.asarray(x).T for c in c_rows]


def phase_job(rank, rounds):
    """Products inside a repeated dealer phase (recorded, then reserved at its
    start); then the same key with another shape, which must be refused."""
    from secure_meanshift.mpc._compat import import_crypten
    from secure_meanshift.mpc.beaver import phase
    from secure_meanshift.errors import MPCError

    crypten = import_crypten()
    comm = crypten.comm.get()
    x = crypten.cryptensor(torch.arange(6, dtype=torch.float32).reshape(2, 3), src=0)
    y = crypten.cryptensor(torch.full((2, 3), 0.5), src=1)
    out, waits = [], []
    for _ in range(rounds):
        with phase("p"):
            z = (x * y) * y
            (z >= 1.0).get_plain_text()
        out.append(z.get_plain_text().numpy())
    try:
        with phase("p"):
            x[:1] * y[:1]
    except MPCError as exc:
        refused = str(exc)
    else:
        refused = ""
    return out, refused, comm.get_communication_stats()["rounds"]


def merge_job(rank, c, intensity, radius, min_weight, oblivious, max_intensity=1000.0):
    """The intensity merge on shares (protocol._merge_keep_intensity) with the
    rounds it took and the values it opened."""
    from secure_meanshift.mpc._compat import import_crypten
    from secure_meanshift.disclosure import observe
    from secure_meanshift.protocol import _merge_keep_intensity

    crypten = import_crypten()
    ct = crypten.cryptensor(torch.tensor(c, dtype=torch.float64), src=0, precision=20)
    it = crypten.cryptensor(torch.tensor(intensity, dtype=torch.float64).reshape(-1, 1), src=1)
    comm = crypten.comm.get()
    comm.reset_communication_stats()
    with observe() as seen:
        keep = _merge_keep_intensity(ct, it, radius, min_weight, oblivious,
                                     max_intensity=max_intensity)
    rounds = comm.get_communication_stats()["rounds"]
    opened = [list(e.shape) for e in seen]
    return keep.get_plain_text().numpy().reshape(-1) > 0.5, rounds, opened


def shuffle_job(rank, y, perms):
    """beaver.shuffle_rows by every rank in turn, with the given permutations:
    the opened rows and the bytes sent."""
    import numpy as np

    from secure_meanshift.mpc._compat import import_crypten
    from secure_meanshift.mpc.beaver import shuffle_rows

    crypten = import_crypten()
    comm = crypten.comm.get()
    t = crypten.cryptensor(torch.tensor(y, dtype=torch.float32), src=0)
    comm.reset_communication_stats()
    for owner, perm in enumerate(perms):
        t = shuffle_rows(t, owner, np.asarray(perm) if rank == owner else None)
    sent = comm.get_communication_stats()["bytes"]
    return t.get_plain_text().double().numpy(), sent


def narrow_products_job(rank, x, y, k, bits):
    """beaver.product_low(x, y, bits) and k @ y with y a fixed operand of that
    width, each next to the full product: (the four results as ring integers,
    the bytes each of the two narrow and the two full products sent, and the
    dealer's corrections each was charged at rank 0)."""
    from secure_meanshift.mpc._compat import import_crypten
    from secure_meanshift.mpc.beaver import fixed_operand, product_low

    crypten = import_crypten()
    comm = crypten.comm.get()

    def share(v, src):
        return crypten.cryptensor(torch.tensor(v, dtype=torch.long), src=src, precision=0)

    xs, ys, ks = share(x, 0), share(y, 1), share(k, 0)
    out, sent, dealt = [], [], []
    for run in (lambda: product_low(xs, ys, bits), lambda: xs * ys,
                lambda: ks.matmul(fixed_operand(share(y, 1), bits)),
                lambda: ks.matmul(fixed_operand(share(y, 1)))):
        comm.reset_communication_stats()
        r = run()
        stats = comm.get_communication_stats()
        sent.append(stats["bytes"])
        dealt.append(sum(s["dealer_bytes"] for s in stats["steps"].values()))
        out.append(r._tensor.share.clone())
    # open every result at full width: a narrow one is right modulo 2^bits only
    return [comm.all_reduce(o).numpy() for o in out], sent, dealt


def lift_job(rank, cases):
    """beaver.lift of values whose shares are right modulo 2^bits only (each
    rank adds a multiple of 2^bits to its share), per (values, bits) case:
    [(the lifted values opened on the whole ring, bytes this rank sent,
    rounds, dealer bytes at rank 0)]."""
    from secure_meanshift.mpc._compat import import_crypten
    from secure_meanshift.mpc.beaver import lift

    crypten = import_crypten()
    comm = crypten.comm.get()
    out = []
    for values, bits in cases:
        x = crypten.cryptensor(torch.tensor(values, dtype=torch.long), src=0, precision=0)
        x._tensor.share += (rank + 3) * 7919 * 2**bits      # garbage above the width
        comm.reset_communication_stats()
        y = lift(x, bits)
        stats = comm.get_communication_stats()
        out.append((comm.all_reduce(y._tensor.share).numpy(), stats["bytes"],
                    stats["rounds"], stats["dealer_bytes"]))
    return out


def settle_job(rank, parts, params, settle, fault_at=0):
    """Run the protocol with each update settled at once (settle=True: as a
    large pass does, protocol.SETTLE_MIN_PAIRS) or answered in the next pass;
    count the passes and every disclosure before the merge; optionally
    corrupt one division."""
    import secure_meanshift.protocol as proto
    from secure_meanshift.disclosure import observe

    proto.SETTLE_MIN_PAIRS = 0 if settle else 1 << 62
    if fault_at:
        corrupt_division(proto, fault_at)
    passes = {"n": 0}
    one_pass = proto._one_pass

    def counted(*args, **kwargs):
        passes["n"] += 1
        return one_pass(*args, **kwargs)

    proto._one_pass = counted
    events = []
    with observe() as seen:
        res = proto.run_protocol(parts[rank], None, params, events.append)
    opened = [e.why for e in seen if e.why not in ("merge-depth", "result")]
    retries = [e for e in events if e.get("stage") == "retry"]
    return res.centroids, res.iterations, passes["n"], opened, retries


def meta_registrations_job(rank):
    """What a rank process has under torch._meta_registrations, and whether the
    engine's torch ops run there (a product, a comparison)."""
    import sys

    x = torch.arange(6, dtype=torch.int64).reshape(2, 3)
    ok = bool((x @ x.t()).sum() == 83) and bool((x > 2).sum() == 3)
    return hasattr(sys.modules.get("torch._meta_registrations"), "meta_index_Tensor"), ok


def kernel_product_job(rank, x, u, widths):
    """fixedpoint.ge_zero(x, times=u) (the flat kernel's bits and their product
    with a fixed operand, from the sign test's conversion and the dealer's W)
    for u fixed at each width in ``widths`` (None: the ring): per width (the
    bits opened, the product opened on the whole ring (right modulo 2^width
    only), the keystream bytes this rank drew for it)."""
    from secure_meanshift.mpc._compat import import_crypten
    from secure_meanshift.mpc.beaver import _SESSION, fixed_operand
    from secure_meanshift.mpc.fixedpoint import ge_zero

    crypten = import_crypten()
    comm = crypten.comm.get()

    def share(v, src):
        return crypten.cryptensor(torch.tensor(v, dtype=torch.long), src=src, precision=0)

    xs = share(x, 0)
    out = []
    for bits in widths:
        us = fixed_operand(share(u, 1), bits)
        stream = _SESSION["corr"].stream
        before = stream.tell()
        (k,), ku = ge_zero(xs, bits=[40], times=us)
        drawn = stream.tell() - before
        out.append((comm.all_reduce(k._tensor.share.clone()).numpy(),
                    comm.all_reduce(ku._tensor.share.clone()).numpy(), drawn))
    return out
