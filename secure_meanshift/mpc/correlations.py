"""Correlated randomness from a dealer that holds no data: each party's side.

Set-up: the dealer draws a 256-bit key per party and sends it over that
party's TLS link; party i and the dealer then read the same cryptographic
stream S_i (csprng.py). For every correlated value, every party takes its
shares from its own stream; one party alone, the receiver (party 0 in the
table; :meth:`Correlations.receiver` spreads them over every party by size),
gets its share of the *product* part from the dealer, as a correction:

  value            parties' shares from S_i        dealer sends party 0
  ---------------  ------------------------------  ------------------------------
  triple (x, @)    a_i, b_i, c_i (i > 0)           c_0 = op(sum a, sum b) - sum c_i
  square           r_i, s_i (i > 0)                s_0 = (sum r)^2 - sum s_i
  binary triple    a_i, b_i, c_i (i > 0), xor      c_0 = (xor a) & (xor b) ^ xor c_i
  random bit       rb_i (xor), ra_i (i > 0)        ra_0 = (xor rb) - sum ra_i
  ... times fixed  also w_i (i > 0)                w_0 = rho_ij * B_jk - sum w_i
                                                   (B a fixed operand's mask; the
                                                   flat kernel's K @ X, ge_zero_times;
                                                   w_i 4-byte words when W is needed
                                                   modulo 2^32 or less: w_narrow)
  truncation pair  r_i, t_i (i > 0)                t_0 = (sum r mod 2^64) // 2^f - sum t_i
  ... with square  r_i, t_i, u_i (i > 0)           also u_0 = t * t[:, col] - sum u_i
  sign-test mask   r_i, m_i (i > 0), xor           m_0 = material(sum r) ^ xor m_i
                                                   (r's bit slices and pair products,
                                                   signtest.mask_material)
  permutation mask a_i, b_i (i > 0); the owner     b_0 = (sum a)[sigma] - sum b_i
  (owner o)        also sigma (from S_o: only o    (beaver.shuffle_rows)
                   and the dealer know it)
  lifting mask     r_i, q_i, t_i (i > 0)           q_0 = (sum r) // 2^L - sum q_i,
  (width L)                                        t_0 = bit L-1 of sum r - sum t_i
                                                   (beaver.lift; both mod 2^(64-L))

A product asked for modulo 2^low (a narrow fixed operand, beaver.product_low)
gets party 0's correction as its low bits only; which runs of a correction
travel at which width is dealer_service.correction_widths (public).

A multiplication by a *fixed* operand (the same shared points every
iteration, marked with beaver.fixed_operand) keeps its mask b: the parties
open y - b once, and later triples draw only a fresh a; the dealer remembers
sum b and answers c = a op b.

A correction is c minus values its receiver has never seen (they come from
the other parties' streams), so it is a uniform ring element to it. Party 0
asks for each value by kind, shape and receiver only (public), before the opening that
uses it (a sign test asks for all its values at once), so the dealer's answer
travels while the parties exchange their masked values: the dealer adds no
round.

Comparisons: every ``_ltz`` (hence ``ge``, ``lt``, ``argmin``) is the sign
test of signtest.py, on the values dealt here; the protocols that consume
these values are in beaver.py, the dealer's own side in dealer_service.py.

Phases (:meth:`Correlations.phase`): a stretch of the protocol that repeats with the same
shapes (a pass over the points, the division) records its draws the first
time; every later time all of them are drawn at its start (party 0 sends every
request at once), so no step inside waits for the dealer. Every party runs the
same phases, so the streams stay in step; a phase that would draw anything
else than planned fails. The dealer checks every request against the
protocol's kinds and shape bounds (dealer_service.check_request) before drawing.

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

from . import csprng
from .communicator import unpack_low, wire_bytes
from .config import PROVIDERS
from .dealer_service import Dealing, correction_widths, w_narrow
from ..errors import MPCError
from .ring import out_size
from .signtest import FULL_BITS, mask_rows, words
from .transport import Transport

SPREAD_FROM = 1 << 16   # bytes: smaller corrections all go to party 0 (Correlations.receiver)


class _Pending:
    """A correction this party receives and will read when it needs it."""

    def __init__(self, source: "Correlations", size, widths: list):
        self.source, self.size, self.value = source, torch.Size(size), None
        self.widths = widths            # (count, bits) runs: what travels (dealer_service)

    @property
    def nbytes(self) -> int:
        return _frame_bytes(self.widths)

    def get(self) -> torch.Tensor:
        while self.value is None:
            self.source._resolve_next()
        return self.value


class _Part:
    """A run [lo, hi) of a correlated value (a tensor or a pending correction),
    cut when it is read (signtest.resolve); dtype: converted (int32 keeps the
    low 32 bits)."""

    def __init__(self, whole, lo: int, hi: int, dtype: Optional[torch.dtype] = None):
        self.whole, self.lo, self.hi, self.dtype = whole, lo, hi, dtype

    def get(self) -> torch.Tensor:
        w = self.whole if isinstance(self.whole, torch.Tensor) else self.whole.get()
        part = w.reshape(-1)[self.lo:self.hi]
        return part if self.dtype is None else part.to(self.dtype)


class Correlations:
    """A party's side: its stream with the dealer, party 0's requests, the
    corrections this party receives."""

    def __init__(self, rank: int, stream: csprng.Stream, mesh: Optional[Transport],
                 dealer_rank: int, local: Optional[Dealing] = None, spreads: bool = True):
        self.rank = rank
        self.spreads = spreads and local is None    # False: every correction to party 0
        self.stream = stream
        self.mesh = mesh
        self.dealer_rank = dealer_rank  # = the number of parties
        self.local = local              # first-party mode: rank 0 deals itself
        self.loads = [0] * dealer_rank  # correction bytes each party receives (receiver)
        self.sizes: list = []           # a recorded phase's correction sizes, in order
        self.receivers: dict = {}       # phase key -> its receivers (spread)
        self._assigned: deque = deque()
        self.pending: deque = deque()   # this party's corrections on their way
        self.requests = 0
        self.fixed_ids = 0
        self.on_request = None          # called with each correction's size in bytes
        self.plans: dict = {}           # phase key -> the draws it made the first time
        self._recording: Optional[list] = None
        self._reserved: deque = deque()
        self._folding: Optional[tuple] = None   # (count, coef): a product for the next ltz

    # ---- phases: every draw of a repeated phase asked for at its start ------
    @contextmanager
    def phase(self, key):
        """The first time ``key`` runs, record its draws (kinds and shapes, all
        public); every later time, make them all at the start (party 0 sends
        every request at once), so no step inside waits for the dealer. Every
        party runs the same phases, so the streams stay in step."""
        plan = self.plans.get(key)
        if plan is None:
            self._recording, self.sizes, before = [], [], list(self.loads)
            try:
                yield
            finally:
                self.plans[key], self._recording = self._recording, None
                self.receivers[key] = spread(self.sizes, before)
            return
        self._assigned = deque(self.receivers[key])
        self._reserved = deque((name, args, getattr(self, "_" + name)(*args))
                               for name, args in plan)
        self._assigned.clear()
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
            pend = {id(v): v for v in (x.whole if isinstance(x, _Part) else x for x in out)
                    if isinstance(v, _Pending)}
            self.on_request(sum(v.nbytes for v in pend.values()))
        return out

    def triple(self, op: str, s0, s1, fixed: Optional[int] = None, b=None,
               low: Optional[int] = None, fold: Optional[int] = None):
        """(a, b, c = a op b); with ``fixed`` (an id from new_fixed_id) and the
        mask b of fixed_mask or an earlier triple, b is reused and only a is
        fresh. low: c is needed modulo 2^low only (party 0's correction travels
        at that width). fold (PUBLIC int): the product enters the input of the
        next sign test only, times fold: no correction is sent, and the shares
        of c are short by the dealer's delta until that test's mask makes up
        for it (dealer_service.Dealing._hold_fold)."""
        return self._use("triple", (op, tuple(s0), tuple(s1), fixed, b, low, fold))

    def square(self, s):
        return self._use("square", (tuple(s),))

    def binary_triple(self, s0, s1):
        return self._use("binary_triple", (tuple(s0), tuple(s1)))

    def random_bit(self, s, product: Optional[tuple] = None):
        """Random bits rho of shape s: (XOR shares packed as signtest.pack_bits
        does, (words(n),), additive shares (s)); with product = (fixed id,
        m, cols, d, low) also W = rho_ij * B_jk (signtest.less_than_zero); low
        (or None): W and the first m cols bits' additive shares are right
        modulo 2^low only."""
        return self._use("random_bit", (tuple(s), product))

    def trunc_pair(self, s, y: int):
        return self._use("trunc_pair", (tuple(s), int(y)))

    def ltz_mask(self, n: int, bits: int = FULL_BITS, sign: int = 1):
        """A sign-test mask for n elements compared on ``bits`` bits: r (ring)
        and the XOR-shared material of signtest.mask_material(r, bits). sign:
        +1 if the test's input is the value as computed, -1 if it is -v - 1;
        a product folded into this test (triple's fold) enters it that way."""
        return self._use("ltz_mask", (int(n), int(bits), int(sign)))

    def trunc_square(self, s, y: int, width: int):
        """A truncation pair (r, t = r // y) for an (m, w) value, and u = t[:, :width]
        * t[:, width - 1] (width 0: none): returns r, and a correlated value
        holding t then u, flattened."""
        return self._use("trunc_square", (tuple(s), int(y), int(width)))

    def lift_mask(self, s, bits: int):
        """(r, qt): a ring mask r of shape s and, flattened, additive shares
        of q = r // 2^bits (r unsigned) then of r's bit bits - 1, both right
        modulo 2^(64 - bits) only (beaver.lift multiplies them by 2^bits)."""
        return self._use("lift", (tuple(s), int(bits)))

    def permutation_mask(self, m: int, cols: int, owner: int):
        """(a, sigma or None, b): an (m, cols) mask a, a uniform permutation
        sigma of range(m) known to the owner alone (and the dealer), and
        b = a[sigma] (shares): beaver.shuffle_rows."""
        return self._use("perm", (int(m), int(cols), int(owner)))

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

    def receiver(self, widths: list) -> int:
        """PUBLIC: the party that receives this request's correction. In a
        repeated phase, the one spread() chose when the phase first ran, from
        the sizes it drew and the loads before it (so the phase asks for exactly
        what it asked for before: the dealer's plan holds); elsewhere the party
        that has received the fewest bytes (ties: the highest rank; party 0
        also sends every request and adds the public terms). Corrections
        under SPREAD_FROM bytes go to party 0: there the dealer sends several
        in one frame, and one party wakes for them, not every party. Every party
        computes it alike from kinds and shapes. Spreads the dealer's bytes
        (and their decryption) over every party's link; first-party mode:
        party 0. ``widths``: the correction's (count, bits) runs
        (dealer_service.correction_widths)."""
        if not self.spreads:
            return 0
        nbytes = _frame_bytes(widths)
        if self._assigned:
            to = self._assigned.popleft()
        else:
            to = _least(self.loads) if nbytes >= SPREAD_FROM else 0
            if self._recording is not None:
                self.sizes.append(nbytes)
        self.loads[to] += nbytes
        return to

    def _ask(self, req: dict, size, to: int, widths: list) -> Optional[_Pending]:
        """Party 0 sends the request; the receiver gets a pending correction
        (no party when ``to`` is -1: a folded product, _triple)."""
        self.requests += 1
        p = _Pending(self, size, widths) if self.rank == to else None
        if self.local is not None:
            value = self.local.answer(req)       # the streams move even when nothing is owed
            if p is not None:
                p.value = value
        else:
            if self.rank == 0:
                self.mesh.send(self.dealer_rank, json.dumps(req).encode())
            if p is not None:
                self.pending.append(p)
        return p

    def _resolve_next(self) -> None:
        p = self.pending.popleft()
        p.value = unpack_low(self.mesh.recv(self.dealer_rank), p.widths, p.size)

    def _value(self, req: dict, size, draw):
        """This party's share of a request's product part: the dealer's
        correction at the receiver, its own stream's draw at every other party."""
        widths = correction_widths(req, torch.Size(size).numel())
        to = self.receiver(widths)
        if to:
            req["to"] = to
        p = self._ask(req, size, to, widths)
        return p if p is not None else draw(size)

    def _triple(self, op: str, s0, s1, fixed: Optional[int] = None, b=None,
                low: Optional[int] = None, fold: Optional[int] = None):
        a = self.stream.ring(s0)
        if b is None:
            b = self.stream.ring(s1)
        req = {"kind": op, "s0": list(s0), "s1": list(s1)}
        if fixed is not None:
            req["fixed"] = fixed
        size = out_size(op, s0, s1)
        if fold is None:
            return a, b, self._value(_narrow(req, low), size, self.stream.ring)
        if self._folding is not None:
            raise MPCError("correlated randomness: a folded product before the last one's test")
        req["fold"] = int(fold)
        self._folding = (torch.Size(size).numel(), int(fold))
        self._ask(req, size, -1, [])          # the dealer draws; no party is corrected
        return a, b, self.stream.ring(size)

    def new_fixed_id(self) -> int:
        self.fixed_ids += 1
        return self.fixed_ids

    def _ltz_mask(self, n: int, bits: int = FULL_BITS, sign: int = 1):
        r = self.stream.ring((n,))
        size = (mask_rows(bits), words(n))
        req = {"kind": "ltz", "s0": [n]}
        if bits != FULL_BITS:
            req["bits"] = bits
        if self._folding is not None:     # the product folded into this test (_triple)
            count, coef = self._folding
            req["fold"], self._folding = [count, sign * coef], None
        return r, self._value(req, size, self.stream.ring)

    def _square(self, s):
        r = self.stream.ring(s)
        return r, self._value({"kind": "square", "s0": list(s)}, s, self.stream.ring)

    def _binary_triple(self, s0, s1):
        a, b = self.stream.bits(s0), self.stream.bits(s1)
        cs = out_size("and", s0, s1)
        c = self._value({"kind": "and", "s0": list(s0), "s1": list(s1)}, cs,
                        self.stream.bits)
        return a, b, c

    def _random_bit(self, s, product: Optional[tuple] = None):
        rb = self.stream.ring((words(int(np.prod(s))),))      # packed: 64 bits a word
        if product is None:
            return rb, self._value({"kind": "b2a", "s0": list(s)}, s, self.stream.ring)
        fid, m, cols, d, low = product
        req = _narrow({"kind": "b2a", "s0": list(s), "fixed": fid, "rows": [m, cols]}, low)
        n, mcd, narrow = int(np.prod(s)), m * cols * d, w_narrow(req)
        # W needed modulo 2^low <= 2^32: 4-byte words (half the keystream and
        # memory); the receiver's correction arrives whole and is cut the same way
        draw = (lambda size: (self.stream.ring((n,)), self.stream.words32((mcd,)))) \
            if narrow else self.stream.ring
        both = self._value(req, (n + mcd,), draw)
        if isinstance(both, tuple):
            return (rb, *both)
        return rb, _Part(both, 0, n), _Part(both, n, n + mcd, torch.int32 if narrow else None)

    def _trunc_square(self, s, y: int, width: int):
        r = self.stream.ring(s)
        size = (int(np.prod(s)) + int(s[0]) * width,)
        req = {"kind": "trunc_sq", "s0": list(s), "y": int(y), "width": int(width)}
        return r, self._value(req, size, self.stream.ring)

    def _lift(self, s, bits: int):
        r = self.stream.ring(s)
        n = int(np.prod(s))
        return r, self._value({"kind": "lift", "s0": list(s), "bits": int(bits)}, (2 * n,),
                              self.stream.ring)

    def _perm(self, m: int, cols: int, owner: int):
        a = self.stream.ring((m, cols))
        sigma = self.stream.permutation(m) if self.rank == owner else None
        req = {"kind": "perm", "s0": [m, cols], "owner": owner}
        return a, sigma, self._value(req, (m, cols), self.stream.ring)

    def _trunc_pair(self, s, y: int):
        r = self.stream.ring(s)
        return r, self._value({"kind": "trunc", "s0": list(s), "y": int(y)}, s,
                              self.stream.ring)

    def finish(self) -> None:
        """Read the answers asked for but never used; party 0 then tells the
        dealer the job is over, so it exits cleanly."""
        if self.local is None and self.mesh is not None:
            while self.pending:
                self._resolve_next()
            if self.rank == 0:
                self.mesh.send(self.dealer_rank, b'{"kind": "end"}')
                self.mesh.flush()


def _frame_bytes(widths: list) -> int:
    """Bytes of a correction with these (count, bits) runs, as it travels."""
    return sum(wire_bytes(c, b) for c, b in widths)


def _least(loads: list) -> int:
    """The least-loaded party; ties: the highest rank."""
    return min(range(len(loads) - 1, -1, -1), key=loads.__getitem__)


def spread(sizes: list, loads: list) -> list:
    """Receivers for corrections of these sizes (bytes): those under
    SPREAD_FROM to party 0, then the others largest first, each to the
    least-loaded party, from these loads (LPT: within 4/3 of the best
    balance)."""
    loads, out = list(loads), [0] * len(sizes)
    loads[0] += sum(n for n in sizes if n < SPREAD_FROM)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        if sizes[i] < SPREAD_FROM:
            break
        out[i] = _least(loads)
        loads[out[i]] += sizes[i]
    return out


def _narrow(req: dict, low: Optional[int]) -> dict:
    """req asking for its product modulo 2^low (dealer_service.correction_widths)."""
    if low is not None and low < FULL_BITS:
        req["low"] = int(low)
    return req


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
    return Correlations(rank, csprng.Stream(bytes(mesh.recv(0))), mesh, world, spreads=False)
