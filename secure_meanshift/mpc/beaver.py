"""The protocols CrypTen runs in this engine, fed by the dealer's correlated
randomness (correlations.py) instead of CrypTen's tuple providers: Beaver
products (a fixed operand's mask drawn once), squares, truncation by one
opening of x + r, the binary AND, the bit conversion and the sign test
(signtest.py). :func:`start` builds them for one session; crypten_patches.py
installs them into CrypTen. Every opening here is of a masked value, uniform
to every party (docs/leakage.md).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Optional

import numpy as np
import torch
from torch.distributed import ReduceOp

from ._compat import import_crypten
from .correlations import Correlations
from ..errors import MPCError
from .ring import ring_matmul, udiv
from .signtest import and_shares, check_width, less_than_zero, resolve, unpack_bits

FIXED = "_sms_fixed_operand"

# The worker's one session (start, release): its Correlations, its
# opening, and the split Beaver protocols that let several products share one.
_SESSION: dict = {}


def fixed_operand(t, bits: Optional[int] = None):
    """Mark the MPCTensor t as a fixed right operand: its Beaver mask b is drawn
    once and t - b opened once (prime_fixed, or its first product); every
    product x op t then opens x - a only (t's shares must not change). Returns t.

    bits (PUBLIC): the products are needed modulo 2^bits only (say, a count that
    a narrow sign test reads next): t - b and every x - a are then opened at
    that width (the low bits of the same uniform values), and the products'
    shares are right modulo 2^bits only. t itself need only be right modulo
    2^bits."""
    setattr(t._tensor, FIXED, {} if bits is None else {"bits": check_width(bits)})
    return t


def _open_at(parts: list, widths: list) -> list:
    """One batched opening; a part with a width is right modulo 2^width only."""
    if all(w is None for w in widths):
        return _SESSION["open"](parts)
    return _SESSION["open"](parts, bits=[64 if w is None else w for w in widths])


def product_low(x, y, bits: int):
    """x * y, elementwise, for integer-encoded MPCTensors (scale 1), right modulo
    2^bits only (PUBLIC): x - a and y - b are opened at that width, a quarter of
    the bytes at 16 bits. For values a narrow sign test or a narrow fixed
    operand reads next (the merge's 0/1 matrix). None outside a dealer's session."""
    if "mul" not in _SESSION:
        return None
    crypten = import_crypten()
    w = check_width(bits)
    opens, finish = _SESSION["mul"](x._tensor, y._tensor, w)
    return crypten.mpc.MPCTensor.from_shares(finish(_open_at(opens, [w] * len(opens))),
                                             precision=0)


def prime_fixed(*tensors) -> None:
    """Draw the masks of fixed operands and open every t - b now, in one
    round, so that products in later phases all draw alike."""
    _prime([t._tensor for t in tensors])


def _prime(shared: list) -> None:
    if not shared:
        return
    corr = _SESSION["corr"]
    masks = [corr.fixed_mask(t.size()) for t in shared]
    deltas = _open_at([t.share - b for t, (_, b) in zip(shared, masks)],
                      [getattr(t, FIXED).get("bits") for t in shared])
    for t, (fid, b), delta in zip(shared, masks, deltas):
        getattr(t, FIXED).update(id=fid, b=b, delta=delta)


def less_than_zero_narrow(x, widths: list):
    """[x < 0] (0/1 MPCTensor, scale 1) for a flat MPCTensor x whose (count,
    bits) segments lie in [-2^(bits-1), 2^(bits-1)) by a PUBLIC bound
    (signtest.less_than_zero); None outside a session with a dealer's sign
    test (the caller then uses CrypTen's comparison)."""
    fn = _SESSION.get("ltz")
    return None if fn is None else fn(x, widths)


def ge_zero_times(parts: list, widths: list, u):
    """([p >= 0] for every part, K @ u) with K = [parts[0] >= 0] for an (m, cols)
    first part, u a fixed operand (cols, d); ring integers in the (count,
    bits) segments ``widths`` (PUBLIC bounds). No opening beyond the sign
    test's: K = z + (1 - 2z) rho (z the conversion's public b ^ rho),
    u = F + B (F opened once), so K u = K F + z B + sum_j (1 - 2 z_ij)
    [rho_ij B_jk], the last from the dealer. None outside a dealer's session."""
    fn = _SESSION.get("ge_times")
    return None if fn is None else fn(parts, widths, u)


def lift(x, bits: int):
    """x's value on the whole ring, for an MPCTensor x whose shares are right
    modulo 2^bits only and whose ring integer lies in [-2^(bits-2),
    2^(bits-2)) (a PUBLIC bound; bits <= 62): the flat kernel's weighted sums
    computed narrow (fixed_operand's bits). With the dealer's lifting mask r
    (uniform ring element): open c = (v + r) mod 2^bits, v = x + 2^(bits-2)
    in [0, 2^(bits-1)) (c is uniform), and then, exactly,
        v = c - r + 2^bits (q + (1 - c_(bits-1)) r_(bits-1)),  q = r // 2^bits,
    since v + r mod 2^bits wraps past 2^bits exactly when r's top bit is set
    and c's is not. One round, bits/8 bytes per element. x itself outside a
    dealer's session (its products were whole)."""
    corr = _SESSION.get("corr")
    if corr is None:
        return x
    crypten = import_crypten()
    t = x._tensor
    bits = check_width(bits)
    if bits > 62:
        raise ValueError(f"lift: width {bits} above 62")
    r, qt = corr.lift_mask(t.share.size(), bits)
    off = torch.tensor(1 << (bits - 2), dtype=torch.int64)
    (c,) = _SESSION["open"]([t.share + r + _SESSION["public"](off)], bits=[bits])
    c = c & ((1 << bits) - 1)
    qt = resolve(qt)
    n = c.numel()
    q, top = qt[:n].reshape(c.shape), qt[n:].reshape(c.shape)
    wrap = (q + (1 - ((c >> (bits - 1)) & 1)) * top) << bits
    share = _SESSION["public"](c - off) - r + wrap
    out = crypten.mpc.MPCTensor.from_shares(share, precision=0)
    out.encoder = x.encoder
    return out


def shuffle_rows(y, owner: int, perm):
    """y's rows in the order ``perm`` (row r is y[perm[r]]), a secret of the
    ``owner`` (None on the other ranks), on shares. With the dealer's
    permutation mask (a; b = a[sigma]; sigma known to the owner alone): open
    z = y - a (uniform), the owner sends delta = sigma^-1[perm] (uniform to the
    other parties, who do not know sigma; the dealer, who does, never sees it),
    and y[perm] = z[perm] + b[delta]. That is m cols ring elements opened and
    m indices sent, where a Beaver product with the m x m permutation matrix
    opens m^2 + m cols. None outside a dealer's session."""
    corr = _SESSION.get("corr")
    if corr is None:
        return None
    crypten = import_crypten()
    comm = crypten.comm.get()
    t = y._tensor
    m, cols = t.share.shape
    a, sigma, b = corr.permutation_mask(m, cols, owner)
    (z,) = _SESSION["open"]([t.share - a])
    mine = comm.get_rank() == owner
    delta = torch.from_numpy(np.argsort(sigma)[perm]) if mine else \
        torch.zeros(m, dtype=torch.int64)
    delta = comm.broadcast(delta, owner)
    if not mine and not bool(torch.equal(torch.sort(delta).values, torch.arange(m))):
        raise MPCError("shuffle: a party sent something other than a permutation")
    share = resolve(b)[delta]
    if mine:
        share = share + z[torch.from_numpy(perm)]
    out = crypten.mpc.MPCTensor.from_shares(share, precision=0)
    out.encoder = y.encoder
    return out


def release() -> None:
    """The session is over: forget it."""
    _SESSION.clear()


def square_and_matmul(x, y, fold: Optional[int] = None) -> tuple:
    """(x * x, x @ y) for integer-encoded MPCTensors with ONE opening (x's two
    masked copies travel together): the ring products, scale 1; x @ y right
    modulo 2^bits only for a narrow fixed operand y (fixed_operand).

    fold (PUBLIC int): x @ y is used once, times ``fold``, inside the input
    of the very next sign test (protocol._exact_edge): the dealer then sends
    no correction for it and deals that test's mask to make up for it
    (Correlations.triple). The x @ y returned is then short by the dealer's
    delta: good for that test only."""
    crypten = import_crypten()

    (sq_open, sq_done), (mm_open, mm_done) = _SESSION["square"](x._tensor), \
        _SESSION["matmul"](x._tensor, y._tensor, fold)
    low = getattr(y._tensor, FIXED, {}).get("bits")
    opened = _open_at(sq_open + mm_open, [None] * len(sq_open) + [low] * len(mm_open))
    k = len(sq_open)
    return (crypten.mpc.MPCTensor.from_shares(sq_done(opened[:k]), precision=0),
            crypten.mpc.MPCTensor.from_shares(mm_done(opened[k:]), precision=0))


def open_truncated(share: torch.Tensor, y: int, width: int) -> tuple:
    """Truncate an (m, w) value v by y with one opening of v + r, keeping what
    the next product needs: (E public, t shares, u shares) with v // y = E - t
    (up to one unit in the last place) and u = t[:, :width] * t[:, width - 1]
    from the dealer (width 0: none). Used by division.py's Goldschmidt steps
    for three or more parties."""
    corr = _SESSION["corr"]
    r, tu = corr.trunc_square(share.shape, y, width)
    (c,) = _SESSION["open"]([share + r])
    tu, n = resolve(tu), share.numel()
    return udiv(c, y), tu[:n].reshape(share.shape), tu[n:].reshape(share.shape[0], width)


@contextmanager
def phase(key):
    """Correlations.phase of the session, if the session has a dealer's."""
    if "corr" not in _SESSION:
        yield
        return
    with _SESSION["corr"].phase(key):
        yield


def _openers(corr: Correlations) -> tuple:
    """(open, open_xor, public): one batched opening by sum / by XOR over the
    session's communicator, and a public value as party 0's share."""
    comm = import_crypten().comm.get

    def open_(shares: list, op=ReduceOp.SUM, bits=None) -> list:
        if bits is not None:          # sums right modulo 2^bits only (narrow sign tests)
            return comm().all_reduce_low(shares, bits)
        return comm().all_reduce(shares, op=op, batched=True)

    def open_xor(shares: list) -> list:
        return open_(shares, ReduceOp.BXOR)

    def public(z: torch.Tensor) -> torch.Tensor:
        return z if corr.rank == 0 else torch.zeros_like(z)
    return open_, open_xor, public


def _split_products(corr: Correlations) -> tuple:
    """(beaver_begin, square_begin): products split in two, (values to open,
    finish(opened) -> shares of the result), so that several products can share
    one opening."""
    def beaver_begin(op: str, x, y, low: Optional[int] = None, fold: Optional[int] = None):
        """low: the product is needed modulo 2^low only (the dealer's correction
        travels at that width); a narrow fixed operand's own width by default.
        fold: see square_and_matmul (no correction at any width)."""
        f = ring_matmul if op == "matmul" else torch.mul
        fixed = getattr(y, FIXED, None)
        if fixed is not None:
            if "id" not in fixed:
                _prime([y])
            # y - b was opened when y was primed: only x - a travels
            low = fixed.get("bits", low)
            a, b, c = corr.triple(op, x.size(), y.size(), fixed["id"], fixed["b"], low, fold)
            opens = [x.share - a]
        else:
            a, b, c = corr.triple(op, x.size(), y.size(), low=low, fold=fold)
            opens = [x.share - a, y.share - b]

        def finish(opened: list) -> torch.Tensor:
            eps, delta = (opened[0], fixed["delta"]) if fixed is not None else opened
            out = resolve(c) + f(eps, b) + f(a, delta)
            # the public term: one party adds it (the others would compute it to drop it)
            return out + f(eps, delta) if corr.rank == 0 else out
        return opens, finish

    def square_begin(x):
        r, s = corr.square(x.size())

        def finish(opened: list) -> torch.Tensor:
            (eps,) = opened
            out = resolve(s) + 2 * r * eps
            return out + eps * eps if corr.rank == 0 else out
        return [x.share - r], finish
    return beaver_begin, square_begin


def _arithmetic(corr: Correlations, open_, public, beaver_begin, square_begin) -> dict:
    """CrypTen's arithmetic Beaver protocols (crypten.mpc.primitives.beaver):
    mul, matmul, square, truncate."""
    from crypten.mpc.primitives.arithmetic import ArithmeticSharedTensor  # CrypTen: loaded late

    def product(op: str, x, y, *args, **kwargs):
        if args or kwargs or op not in ("mul", "matmul"):
            raise MPCError(f"{op}: not supported by this engine")
        opens, finish = beaver_begin(op, x, y)
        bits = getattr(y, FIXED, {}).get("bits")       # a narrow fixed operand's width
        return ArithmeticSharedTensor.from_shares(finish(_open_at(opens, [bits] * len(opens))),
                                                  precision=0)

    def square(x):
        opens, finish = square_begin(x)
        return ArithmeticSharedTensor.from_shares(finish(open_(opens)), precision=0)

    def truncate(x, y):
        r, t = corr.trunc_pair(x.size(), int(y))
        (c,) = open_([x.share + r])
        x.share = public(udiv(c, int(y))) - resolve(t)
        return x
    return {"mul": lambda x, y: product("mul", x, y),
            "matmul": lambda x, y: product("matmul", x, y),
            "square": square, "truncate": truncate}


def _binary(corr: Correlations, open_, open_xor, public, crypten_ltz) -> dict:
    """The binary protocols: AND and B2A_single_bit (CrypTen's beaver module),
    and ``_ltz`` (MPCTensor's comparison; ``crypten_ltz``: CrypTen's own, kept
    for binary-shared values)."""
    from crypten.mpc import MPCTensor  # CrypTen: loaded late
    from crypten.mpc.primitives.arithmetic import ArithmeticSharedTensor
    from crypten.mpc.primitives.binary import BinarySharedTensor
    from crypten.mpc.ptype import ptype as Ptype

    def AND(x, y):
        return BinarySharedTensor.from_shares(
            and_shares(corr, x.share, y.share, open_xor, corr.rank == 0))

    def ltz(self):
        """[self < 0] (0/1, scale 1) with the dealer's sign test (signtest.py)."""
        if self.ptype != Ptype.arithmetic:
            return crypten_ltz(self)
        bits = less_than_zero(self.share, corr, open_, open_xor, corr.rank == 0)
        return MPCTensor.from_shares(bits, precision=0)

    def ltz_widths(x, widths):
        bits = less_than_zero(x._tensor.share, corr, open_, open_xor, corr.rank == 0,
                              widths)
        return MPCTensor.from_shares(bits, precision=0)

    def ge_times(parts, widths, u):
        """[p >= 0] for every part, and [parts[0] >= 0] @ u for the (m, cols)
        first part and the fixed operand u: one sign test."""
        fixed = getattr(u._tensor, FIXED)
        if "id" not in fixed:
            _prime([u._tensor])
        m, cols = parts[0].size()
        flat = torch.cat([p._tensor.share.reshape(-1) for p in parts])
        flat = -flat - (1 if corr.rank == 0 else 0)        # x >= 0 <=> -x - 1 < 0, exactly
        bits, z, w = less_than_zero(flat, corr, open_, open_xor, corr.rank == 0, widths,
                                    (fixed["id"], m, cols, u.size(1), fixed.get("bits")),
                                    sign=-1)
        k, z = bits[:m * cols].reshape(m, cols), z[:m * cols].reshape(m, cols)
        # sum_j (1 - 2 z_ij) w_ijk, without einsum (an int64 bmm: several times
        # slower), in w's memory (this party's own draw) and dtype: int32 when W
        # is right modulo 2^32 only (the sum comes back int64, right modulo 2^32)
        w.mul_((1 - 2 * z).to(w.dtype).unsqueeze(2))
        ku = ring_matmul(k, fixed["delta"]) + ring_matmul(z, fixed["b"]) + w.sum(dim=1)
        out = MPCTensor.from_shares(ku, precision=0)
        out.encoder = u.encoder
        got, at = [], 0
        for p in parts:
            got.append(MPCTensor.from_shares(bits[at:at + p.nelement()].reshape(p.size()),
                                             precision=0))
            at += p.nelement()
        return got, out

    _SESSION["ltz"] = ltz_widths
    _SESSION["ge_times"] = ge_times

    def B2A_single_bit(xB):
        rb, ra = corr.random_bit(xB.size())
        rb = unpack_bits(rb, xB.share.numel()).reshape(xB.size())
        (z,) = open_([xB.share ^ rb], ReduceOp.BXOR)
        share = resolve(ra) * (1 - 2 * z) + public(z)
        return ArithmeticSharedTensor.from_shares(share, precision=0)
    return {"AND": AND, "B2A_single_bit": B2A_single_bit, "_ltz": ltz}


def start(corr: Correlations, crypten_ltz) -> dict:
    """Begin the worker's session on ``corr``; returns the protocols for
    CrypTen, by name: those of its beaver module, and ``_ltz`` for MPCTensor."""
    open_, open_xor, public = _openers(corr)
    beaver_begin, square_begin = _split_products(corr)
    _SESSION.update(corr=corr, open=open_, public=public, square=square_begin,
                    matmul=lambda x, y, fold=None: beaver_begin("matmul", x, y, fold=fold),
                    mul=lambda x, y, low=None: beaver_begin("mul", x, y, low))
    return {**_arithmetic(corr, open_, public, beaver_begin, square_begin),
            **_binary(corr, open_, open_xor, public, crypten_ltz)}
