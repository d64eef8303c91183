"""Correlated randomness from a dealer that holds no data, and the Beaver-style
protocols that use it.

Set-up: the dealer draws a 256-bit key per party and sends it over that
party's TLS link; party i and the dealer then read the same cryptographic
stream S_i (csprng.py). For every correlated value, every party takes its
shares from its own stream; party 0 alone gets its share of the *product*
part from the dealer, as a correction:

  value            parties' shares from S_i        dealer sends party 0
  ---------------  ------------------------------  ------------------------------
  triple (x, @)    a_i, b_i, c_i (i > 0)           c_0 = op(sum a, sum b) - sum c_i
  square           r_i, s_i (i > 0)                s_0 = (sum r)^2 - sum s_i
  binary triple    a_i, b_i, c_i (i > 0), xor      c_0 = (xor a) & (xor b) ^ xor c_i
  random bit       rb_i (xor), ra_i (i > 0)        ra_0 = (xor rb) - sum ra_i
  ... times fixed  also w_i (i > 0)                w_0 = rho_ij * B_jk - sum w_i
                                                   (B a fixed operand's mask; the
                                                   flat kernel's K @ X, ge_zero_times)
  truncation pair  r_i, t_i (i > 0)                t_0 = (sum r mod 2^64) // 2^f - sum t_i
  ... with square  r_i, t_i, u_i (i > 0)           also u_0 = t * t[:, col] - sum u_i
  sign-test mask   r_i, m_i (i > 0), xor           m_0 = material(sum r) ^ xor m_i
                                                   (r's bit slices and pair products,
                                                   signtest.mask_material; a narrow
                                                   test: its low ``bits`` only)

A multiplication by a *fixed* operand (the same shared points every
iteration, marked with :func:`fixed_operand`) keeps its mask b: the parties
open y - b once, and later triples draw only a fresh a; the dealer remembers
sum b and answers c = a op b.

A correction is c minus values party 0 has never seen (they come from the
other parties' streams), so it is a uniform ring element to party 0. Party 0
asks for each value by kind and shape only (public), before the opening that
uses it (a sign test asks for all its values at once), so the dealer's answer
travels while the parties exchange their masked values: the dealer adds no
round.

Comparisons: every ``_ltz`` (hence ``ge``, ``lt``, ``argmin``) is the sign
test of signtest.py, on the values dealt here.

Phases (:func:`phase`): a stretch of the protocol that repeats with the same
shapes (a pass over the points, the division) records its draws the first
time; every later time all of them are drawn at its start (party 0 sends every
request at once), so no step inside waits for the dealer. Every party runs the
same phases, so the streams stay in step; a phase that would draw anything
else than planned fails. The dealer checks every request against the
protocol's kinds and shape bounds (:func:`check_request`) before drawing.

Truncation with a pair (r, r // 2^f): open c = x + r in one hop, then
x // 2^f = c // 2^f - r // 2^f (up to one unit in the last place), for any
number of parties. It fails, like CrypTen's two-party truncation, when
x + r wraps the ring: probability |x| / 2^64 per element. Two parties keep
the local (SecureML) truncation, which needs no opening at all.

``first-party`` mode: rank 0 plays the dealer itself (it then knows every
party's stream and so every mask: CrypTen's trusted first party). For local
simulation only; the service refuses it.
"""

from __future__ import annotations

import json
from collections import deque
from contextlib import contextmanager
from typing import Optional

import numpy as np
import torch
from torch.distributed import ReduceOp

from . import csprng
from .communicator import from_bytes, to_bytes
from ..errors import MPCError
from .transport import Transport
from .signtest import (FULL_BITS, and_shares, less_than_zero, mask_material, mask_rows,
                       resolve, words)

PROVIDERS = ("dealer", "first-party")


def _broadcast(s0, s1) -> torch.Size:
    n = max(len(s0), len(s1))
    a, b = [1] * (n - len(s0)) + list(s0), [1] * (n - len(s1)) + list(s1)
    if any(x != y and 1 not in (x, y) for x, y in zip(a, b)):
        raise MPCError("shapes do not broadcast")
    return torch.Size(max(x, y) if 1 in (x, y) else x for x, y in zip(a, b))


def _out_size(op: str, s0, s1) -> torch.Size:
    """Shape of op(a, b), by arithmetic on shapes (no tensor is made)."""
    s0, s1 = list(s0), list(s1)
    if op != "matmul":
        return _broadcast(s0, s1)
    if len(s0) == 1 and len(s1) == 1:
        return torch.Size([])
    if len(s0) == 1:
        return torch.Size(s1[:-2] + s1[-1:])
    if len(s1) == 1:
        return torch.Size(s0[:-1])
    return torch.Size(list(_broadcast(s0[:-2], s1[:-2])) + [s0[-2], s1[-1]])


def _udiv(x: torch.Tensor, y: int) -> torch.Tensor:
    """floor(x / y) with x read as an unsigned 64-bit integer."""
    u = x.contiguous().numpy().view(np.uint64) // np.uint64(y)
    return torch.from_numpy(u.view(np.int64).copy())


def _xor_all(ts):
    out = ts[0].clone()
    for t in ts[1:]:
        out ^= t
    return out


class Dealing:
    """What the dealer computes for one request, given every party's stream."""

    def __init__(self, streams: list):
        self.streams = streams
        self.fixed: dict = {}          # fixed operand id -> sum b

    def _draw(self, shared: list, rest) -> tuple:
        """From every party's stream, in the order that party draws them: the
        values every party holds a share of (``shared``: (kind, shape) pairs),
        then, from parties 1.., their share of the product part (``rest``)."""
        got = [[] for _ in shared]
        others = []
        for i, st in enumerate(self.streams):
            for k, (kind, shape) in enumerate(shared):
                got[k].append(_sample(st, kind, shape))
            if i > 0 and rest is not None:
                others.append(_sample(st, *rest))
        return got, others

    def remember(self, req: dict) -> None:
        """A fixed operand's mask b (every party draws its share of b): kept
        for the products that reuse it; nothing to answer."""
        (b,), _ = self._draw([("ring", req["s1"])], None)
        self.fixed[int(req["fixed"])] = sum_ring(b)

    def answer(self, req: dict) -> torch.Tensor:
        """Party 0's correction for one request (kind and shapes only)."""
        kind = req["kind"]
        s0, s1 = req["s0"], req.get("s1")
        if kind in ("mul", "matmul"):
            fix = req.get("fixed")          # a primed operand: its b is known
            drawn = [("ring", s0)] if fix is not None else [("ring", s0), ("ring", s1)]
            got, rest = self._draw(drawn, ("ring", _out_size(kind, s0, s1)))
            a = sum_ring(got[0])
            b = self.fixed[fix] if fix is not None else sum_ring(got[1])
            c = torch.matmul(a, b) if kind == "matmul" else a * b
            return c - sum_ring(rest) if rest else c
        if kind == "ltz":
            n, bits = int(s0[0]), int(req.get("bits", FULL_BITS))
            (r,), rest = self._draw([("ring", s0)], ("bits", (mask_rows(bits), words(n))))
            m = mask_material(sum_ring(r), bits)
            return m ^ _xor_all(rest) if rest else m
        if kind == "and":
            (a, b), rest = self._draw([("bits", s0), ("bits", s1)],
                                      ("bits", _out_size("and", s0, s1)))
            c = _xor_all(a) & _xor_all(b)
            return c ^ _xor_all(rest) if rest else c
        if kind == "b2a":                        # a random bit, xor- and additively shared
            if req.get("fixed") is not None:     # ... with rho_ij * B_jk
                return self._b2a_product(req)
            (rb,), rest = self._draw([("bit", s0)], ("ring", s0))
            return _xor_all(rb) - sum_ring(rest)
        extra = [int(np.prod(s0)) + int(s0[0]) * int(req.get("width", 0))] \
            if kind == "trunc_sq" else s0
        (r,), rest = self._draw([("ring", s0)], ("ring", extra))
        if kind == "square":
            return sum_ring(r) * sum_ring(r) - sum_ring(rest)
        if kind == "trunc":
            return _udiv(sum_ring(r), int(req["y"])) - sum_ring(rest)
        if kind == "trunc_sq":
            t = _udiv(sum_ring(r), int(req["y"]))
            width = int(req["width"])
            out = t.flatten()
            if width:
                out = torch.cat([out, (t[:, :width] * t[:, width - 1:width]).flatten()])
            return out - sum_ring(rest)
        raise MPCError("dealer: unknown request")


    def _b2a_product(self, req: dict) -> torch.Tensor:
        """Random bits rho (n,) and W = rho[:m c].reshape(m, c)[:, :, None] * B[None]
        for the fixed operand's mask B (c, d): party 0's correction of both."""
        m, cols = (int(v) for v in req["rows"])
        b = self.fixed[int(req["fixed"])]
        n, d = int(np.prod(req["s0"])), int(b.shape[1])
        (rb,), rest = self._draw([("bit", req["s0"])], ("ring", (n + m * cols * d,)))
        rho = _xor_all(rb).reshape(-1)
        w = rho[:m * cols].reshape(m, cols, 1) * b.reshape(1, cols, d)
        return torch.cat([rho, w.reshape(-1)]) - sum_ring(rest)


def _sample(stream: csprng.Stream, kind: str, shape) -> torch.Tensor:
    if kind == "ring":
        return stream.ring(shape)
    return stream.bits(shape, 1 if kind == "bit" else 64)


def sum_ring(ts):
    out = ts[0].clone()
    for t in ts[1:]:
        out += t
    return out


class _Pending:
    """A correction party 0 asked for and will read when it needs it."""

    def __init__(self, source: "Correlations", size):
        self.source, self.size, self.value = source, torch.Size(size), None

    def get(self) -> torch.Tensor:
        while self.value is None:
            self.source._resolve_next()
        return self.value


class Correlations:
    """A party's side: its stream with the dealer, and party 0's requests."""

    def __init__(self, rank: int, stream: csprng.Stream, mesh: Optional[Transport],
                 dealer_rank: int, local: Optional[Dealing] = None):
        self.rank = rank
        self.stream = stream
        self.mesh = mesh
        self.dealer_rank = dealer_rank
        self.local = local              # first-party mode: rank 0 deals itself
        self.pending: deque = deque()
        self.requests = 0
        self.fixed_ids = 0
        self.on_request = None          # called with each correction's size in bytes
        self.plans: dict = {}           # phase key -> the draws it made the first time
        self._recording: Optional[list] = None
        self._reserved: deque = deque()

    # ---- phases: every draw of a repeated phase asked for at its start ------
    @contextmanager
    def phase(self, key):
        """The first time ``key`` runs, record its draws (kinds and shapes, all
        public); every later time, make them all at the start (party 0 sends
        every request at once), so no step inside waits for the dealer. Every
        party runs the same phases, so the streams stay in step."""
        plan = self.plans.get(key)
        if plan is None:
            self._recording = []
            try:
                yield
            finally:
                self.plans[key], self._recording = self._recording, None
            return
        self._reserved = deque((name, args, getattr(self, "_" + name)(*args))
                               for name, args in plan)
        try:
            yield
        finally:
            left, self._reserved = len(self._reserved), deque()
        if left:
            raise MPCError("correlated randomness: a phase used fewer values than planned")

    def _use(self, name: str, args: tuple):
        if self._reserved:
            planned, pargs, out = self._reserved.popleft()
            if planned != name or len(pargs) != len(args) or not all(
                    p is a or (not isinstance(p, torch.Tensor) and p == a)
                    for p, a in zip(pargs, args)):
                raise MPCError("correlated randomness: a phase drew other values than planned")
        else:
            if self._recording is not None:
                self._recording.append((name, args))
            out = getattr(self, "_" + name)(*args)
        if self.on_request is not None:     # charged where the value is used
            self.on_request(sum(8 * v.size.numel() for v in out if isinstance(v, _Pending)))
        return out

    def triple(self, op: str, s0, s1, fixed: Optional[int] = None, b=None):
        """(a, b, c = a op b); with ``fixed`` (an id from new_fixed_id) and the
        mask b of fixed_mask or an earlier triple, b is reused and only a is fresh."""
        return self._use("triple", (op, tuple(s0), tuple(s1), fixed, b))

    def square(self, s):
        return self._use("square", (tuple(s),))

    def binary_triple(self, s0, s1):
        return self._use("binary_triple", (tuple(s0), tuple(s1)))

    def random_bit(self, s, product: Optional[tuple] = None):
        """A random bit, XOR- and additively shared; with product = (fixed id,
        m, cols, d) also W = rho_ij * B_jk (signtest.less_than_zero)."""
        return self._use("random_bit", (tuple(s), product))

    def trunc_pair(self, s, y: int):
        return self._use("trunc_pair", (tuple(s), int(y)))

    def ltz_mask(self, n: int, bits: int = FULL_BITS):
        """A sign-test mask for n elements compared on ``bits`` bits: r (ring)
        and the XOR-shared material of signtest.mask_material(r, bits)."""
        return self._use("ltz_mask", (int(n), int(bits)))

    def trunc_square(self, s, y: int, width: int):
        """A truncation pair (r, t = r // y) for an (m, w) value, and u = t[:, :width]
        * t[:, width - 1] (width 0: none): returns r, and a correlated value
        holding t then u, flattened."""
        return self._use("trunc_square", (tuple(s), int(y), int(width)))

    def fixed_mask(self, s1) -> tuple:
        """(id, b): the mask of a fixed operand of shape s1, drawn once; the
        dealer keeps sum b for every later triple with this id."""
        fid = self.new_fixed_id()
        b = self.stream.ring(s1)
        if self.rank == 0:
            req = {"kind": "fixed", "s1": list(s1), "fixed": fid}
            if self.local is not None:
                self.local.remember(req)
            else:
                self.mesh.send(self.dealer_rank, json.dumps(req).encode())
        return fid, b

    def _ask(self, req: dict, size) -> _Pending:
        p = _Pending(self, size)
        self.requests += 1
        if self.local is not None:
            p.value = self.local.answer(req)
        else:
            self.mesh.send(self.dealer_rank, json.dumps(req).encode())
            self.pending.append(p)
        return p

    def _resolve_next(self) -> None:
        p = self.pending.popleft()
        p.value = from_bytes(self.mesh.recv(self.dealer_rank), p.size).clone()

    def _value(self, req: dict, size, draw):
        if self.rank == 0:
            return self._ask(req, size)
        return draw(size)

    def _triple(self, op: str, s0, s1, fixed: Optional[int] = None, b=None):
        a = self.stream.ring(s0)
        if b is None:
            b = self.stream.ring(s1)
        req = {"kind": op, "s0": list(s0), "s1": list(s1)}
        if fixed is not None:
            req["fixed"] = fixed
        c = self._value(req, _out_size(op, s0, s1), self.stream.ring)
        return a, b, c

    def new_fixed_id(self) -> int:
        self.fixed_ids += 1
        return self.fixed_ids

    def _ltz_mask(self, n: int, bits: int = FULL_BITS):
        r = self.stream.ring((n,))
        size = (mask_rows(bits), words(n))
        req = {"kind": "ltz", "s0": [n]}
        if bits != FULL_BITS:
            req["bits"] = bits
        return r, self._value(req, size, self.stream.ring)

    def _square(self, s):
        r = self.stream.ring(s)
        return r, self._value({"kind": "square", "s0": list(s)}, s, self.stream.ring)

    def _binary_triple(self, s0, s1):
        a, b = self.stream.bits(s0), self.stream.bits(s1)
        cs = _out_size("and", s0, s1)
        c = self._value({"kind": "and", "s0": list(s0), "s1": list(s1)}, cs,
                        self.stream.bits)
        return a, b, c

    def _random_bit(self, s, product: Optional[tuple] = None):
        rb = self.stream.bits(s, 1)
        if product is None:
            return rb, self._value({"kind": "b2a", "s0": list(s)}, s, self.stream.ring)
        fid, m, cols, d = product
        req = {"kind": "b2a", "s0": list(s), "fixed": fid, "rows": [m, cols]}
        size = (int(np.prod(s)) + m * cols * d,)
        return rb, self._value(req, size, self.stream.ring)

    def _trunc_square(self, s, y: int, width: int):
        r = self.stream.ring(s)
        size = (int(np.prod(s)) + int(s[0]) * width,)
        req = {"kind": "trunc_sq", "s0": list(s), "y": int(y), "width": int(width)}
        return r, self._value(req, size, self.stream.ring)

    def _trunc_pair(self, s, y: int):
        r = self.stream.ring(s)
        return r, self._value({"kind": "trunc", "s0": list(s), "y": int(y)}, s,
                              self.stream.ring)

    def finish(self) -> None:
        """Tell the dealer the job is over (party 0), so it exits cleanly."""
        if self.rank == 0 and self.local is None and self.mesh is not None:
            while self.pending:          # answers asked for but never used
                self._resolve_next()
            self.mesh.send(self.dealer_rank, b'{"kind": "end"}')
            self.mesh.flush()


# ---- the protocols CrypTen runs, fed by Correlations -------------------------
FIXED = "_sms_fixed_operand"

# The worker's one session (install_protocols, release): its Correlations, its
# opening, and the split Beaver protocols that let several products share one.
_SESSION: dict = {}


def fixed_operand(t):
    """Mark the MPCTensor t as a fixed right operand: its Beaver mask b is drawn
    once and t - b opened once (prime_fixed, or its first product); every
    product x op t then opens x - a only (t's shares must not change). Returns t."""
    setattr(t._tensor, FIXED, {})
    return t


def prime_fixed(*tensors) -> None:
    """Draw the masks of fixed operands and open every t - b now, in one
    round, so that products in later phases all draw alike."""
    _prime([t._tensor for t in tensors])


def _prime(shared: list) -> None:
    if not shared:
        return
    corr = _SESSION["corr"]
    masks = [corr.fixed_mask(t.size()) for t in shared]
    deltas = _SESSION["open"]([t.share - b for t, (_, b) in zip(shared, masks)])
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


def release() -> None:
    """The session is over: forget it."""
    _SESSION.clear()


def square_and_matmul(x, y) -> tuple:
    """(x * x, x @ y) for integer-encoded MPCTensors with ONE opening (x's two
    masked copies travel together): the ring products, scale 1."""
    import crypten

    (sq_open, sq_done), (mm_open, mm_done) = _SESSION["square"](x._tensor), \
        _SESSION["matmul"](x._tensor, y._tensor)
    opened = _SESSION["open"](sq_open + mm_open)
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
    return _udiv(c, y), tu[:n].reshape(share.shape), tu[n:].reshape(share.shape[0], width)


@contextmanager
def phase(key):
    """Correlations.phase of the session, if the session has a dealer's."""
    if "corr" not in _SESSION:
        yield
        return
    with _SESSION["corr"].phase(key):
        yield


def install_protocols(corr: Correlations) -> None:
    """Replace CrypTen's Beaver protocols (which ask a TupleProvider: rank 0 in
    CrypTen's default) by ones fed from ``corr``; any other use of CrypTen's
    providers fails loudly."""
    import crypten
    from crypten.mpc import MPCTensor
    from crypten.mpc.primitives import beaver
    from crypten.mpc.ptype import ptype as Ptype
    from crypten.mpc.primitives.arithmetic import ArithmeticSharedTensor
    from crypten.mpc.primitives.binary import BinarySharedTensor

    comm = crypten.comm.get

    def _open(shares: list, op=ReduceOp.SUM, bits=None) -> list:
        if bits is not None:          # sums right modulo 2^bits only (narrow sign tests)
            return comm().all_reduce_low(shares, bits)
        return comm().all_reduce(shares, op=op, batched=True)

    def _public(z: torch.Tensor) -> torch.Tensor:
        return z if corr.rank == 0 else torch.zeros_like(z)

    def _open_xor(shares: list) -> list:
        return _open(shares, ReduceOp.BXOR)

    def beaver_begin(op: str, x, y):
        """A Beaver product split in two: (values to open, finish(opened) ->
        shares of x op y), so that several products can share one opening."""
        f = getattr(torch, op)
        fixed = getattr(y, FIXED, None)
        if fixed is not None:
            if "id" not in fixed:
                _prime([y])
            # y - b was opened when y was primed: only x - a travels
            a, b, c = corr.triple(op, x.size(), y.size(), fixed["id"], fixed["b"])
            opens = [x.share - a]
        else:
            a, b, c = corr.triple(op, x.size(), y.size())
            opens = [x.share - a, y.share - b]

        def finish(opened: list) -> torch.Tensor:
            eps, delta = (opened[0], fixed["delta"]) if fixed is not None else opened
            return resolve(c) + f(eps, b) + f(a, delta) + _public(f(eps, delta))
        return opens, finish

    def square_begin(x):
        r, s = corr.square(x.size())

        def finish(opened: list) -> torch.Tensor:
            (eps,) = opened
            return resolve(s) + 2 * r * eps + _public(eps * eps)
        return [x.share - r], finish

    def _beaver(op: str, x, y, *args, **kwargs):
        if args or kwargs or op not in ("mul", "matmul"):
            raise MPCError(f"{op}: not supported by this engine")
        opens, finish = beaver_begin(op, x, y)
        return ArithmeticSharedTensor.from_shares(finish(_open(opens)), precision=0)

    def mul(x, y):
        return _beaver("mul", x, y)

    def matmul(x, y):
        return _beaver("matmul", x, y)

    def square(x):
        opens, finish = square_begin(x)
        return ArithmeticSharedTensor.from_shares(finish(_open(opens)), precision=0)

    _SESSION.update(corr=corr, open=_open, square=square_begin,
                    matmul=lambda x, y: beaver_begin("matmul", x, y))

    def AND(x, y):
        return BinarySharedTensor.from_shares(
            and_shares(corr, x.share, y.share, _open_xor, corr.rank == 0))

    def ltz(self):
        """[self < 0] (0/1, scale 1) with the dealer's sign test (signtest.py)."""
        if self.ptype != Ptype.arithmetic:
            return crypten_ltz(self)
        bits = less_than_zero(self.share, corr, _open, _open_xor, corr.rank == 0)
        return MPCTensor.from_shares(bits, precision=0)

    def ltz_widths(x, widths):
        bits = less_than_zero(x._tensor.share, corr, _open, _open_xor, corr.rank == 0,
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
        bits, z, w = less_than_zero(flat, corr, _open, _open_xor, corr.rank == 0, widths,
                                    (fixed["id"], m, cols, u.size(1)))
        k, z = bits[:m * cols].reshape(m, cols), z[:m * cols].reshape(m, cols)
        # sum_j (1 - 2 z_ij) w_ijk, without einsum (an int64 bmm: several times slower)
        ku = torch.matmul(k, fixed["delta"]) + torch.matmul(z, fixed["b"]) + \
            w.sum(dim=1) - 2 * (w * z.unsqueeze(2)).sum(dim=1)
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
        (z,) = _open([xB.share ^ rb], ReduceOp.BXOR)
        share = resolve(ra) * (1 - 2 * z) + _public(z)
        return ArithmeticSharedTensor.from_shares(share, precision=0)

    def truncate(x, y):
        r, t = corr.trunc_pair(x.size(), int(y))
        (c,) = _open([x.share + r])
        x.share = _public(_udiv(c, int(y))) - resolve(t)
        return x

    def _refuse(*args, **kwargs):
        raise MPCError("a protocol step asked CrypTen's own triple provider")

    crypten_ltz = getattr(MPCTensor, "_sms_crypten_ltz", MPCTensor._ltz)
    MPCTensor._sms_crypten_ltz = crypten_ltz
    MPCTensor._ltz = ltz

    for name, fn in (("mul", mul), ("matmul", matmul), ("square", square), ("AND", AND),
                     ("B2A_single_bit", B2A_single_bit), ("truncate", truncate),
                     ("wraps", _refuse), ("conv1d", _refuse), ("conv2d", _refuse),
                     ("conv_transpose1d", _refuse), ("conv_transpose2d", _refuse)):
        setattr(beaver, name, fn)
    crypten.mpc.get_default_provider = _refuse


# ---- set-up and the dealer's own loop ----------------------------------------
def party_setup(mesh: Optional[Transport], rank: int, world: int, provider: str) -> Correlations:
    """Receive this party's dealer key (or, in first-party mode, rank 0 draws
    and hands out every key) and return its Correlations."""
    if provider == "dealer":
        key = bytes(mesh.recv(world))
        return Correlations(rank, csprng.Stream(key), mesh, world)
    if provider != "first-party":
        raise MPCError(f"provider: {provider!r} not available ({', '.join(PROVIDERS)})")
    if rank == 0:
        keys = [csprng.new_key() for _ in range(world)]
        for p in range(1, world):
            mesh.send(p, keys[p])
        mesh.flush()
        local = Dealing([csprng.Stream(k) for k in keys])
        return Correlations(0, csprng.Stream(keys[0]), mesh, world, local=local)
    return Correlations(rank, csprng.Stream(bytes(mesh.recv(0))), mesh, world)


KINDS = {"mul", "matmul", "square", "and", "b2a", "trunc", "trunc_sq", "ltz", "fixed", "end"}
MAX_DEALT = 1 << 28              # ring elements in one request (2 GiB of corrections)


def check_request(req, dealing: Dealing) -> None:
    """Refuse, by rule and never by value, a request outside the protocol
    before the dealer draws anything for it."""
    def shape(v) -> bool:
        return isinstance(v, list) and len(v) <= 4 and all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x for x in v) and \
            int(np.prod(v, dtype=np.float64)) <= MAX_DEALT

    if not isinstance(req, dict) or req.get("kind") not in KINDS:
        raise MPCError("dealer: request of an unknown kind")
    kind = req["kind"]
    if kind == "end":
        return
    if kind == "fixed":
        ok = shape(req.get("s1")) and isinstance(req.get("fixed"), int)
    else:
        ok = shape(req.get("s0")) and ("s1" not in req or shape(req["s1"]))
        if kind in ("mul", "matmul", "and"):
            fix = req.get("fixed")
            ok = ok and shape(req.get("s1")) and (fix is None or fix in dealing.fixed)
        if kind in ("trunc", "trunc_sq"):
            y = req.get("y")
            ok = ok and isinstance(y, int) and 1 < y < (1 << 62)
        if kind == "trunc_sq":
            w = req.get("width")
            ok = ok and isinstance(w, int) and len(req["s0"]) == 2 and \
                0 <= w <= req["s0"][1]
        if kind == "b2a" and req.get("fixed") is not None:
            ok = ok and _b2a_product_ok(req, dealing)
        if kind == "ltz":
            b = req.get("bits", FULL_BITS)
            ok = ok and len(req["s0"]) == 1 and isinstance(b, int) and \
                not isinstance(b, bool) and 2 <= b <= FULL_BITS
    if not ok:
        raise MPCError(f"dealer: a {kind} request outside the protocol's shapes")


def _b2a_product_ok(req: dict, dealing: Dealing) -> bool:
    """A random-bit request with W = rho * B: a known fixed operand (cols, d),
    rows [m, cols] inside the bits asked for, W within MAX_DEALT."""
    fix, rows = req.get("fixed"), req.get("rows")
    if not (isinstance(fix, int) and fix in dealing.fixed and isinstance(rows, list)
            and len(rows) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                       and v >= 0 for v in rows)):
        return False
    b = dealing.fixed[fix]
    m, cols = rows
    return b.dim() == 2 and b.shape[0] == cols and len(req["s0"]) == 1 and \
        m * cols <= req["s0"][0] and m * cols * int(b.shape[1]) <= MAX_DEALT


def serve(mesh: Transport, world: int) -> int:
    """The dealer's whole job: hand each party its key, then answer party 0's
    requests until it says the job is over. Returns the number of requests."""
    keys = [csprng.new_key() for _ in range(world)]
    for p in range(world):
        mesh.send(p, keys[p])
    mesh.flush()
    dealing = Dealing([csprng.Stream(k) for k in keys])
    del keys
    served = 0
    while True:
        try:
            req = json.loads(bytes(mesh.recv(0)))
        except ValueError:
            raise MPCError("dealer: party 0 sent a malformed request") from None
        check_request(req, dealing)
        if req.get("kind") == "end":
            return served
        if req.get("kind") == "fixed":
            dealing.remember(req)
            continue
        mesh.send(0, to_bytes(dealing.answer(req)))
        served += 1
