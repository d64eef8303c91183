"""The dealer's side of correlated randomness (a rank that holds no data).

At set-up the dealer draws a 256-bit key per party and sends it over that
party's TLS link, so that it can read every party's stream (csprng.py); then it
answers party 0's requests, each named by kind, shapes and receiver only
(public), with the receiver's correction (:class:`Dealing`; the table of kinds is in
correlations.py). It checks every request against the protocol's kinds and
shape bounds (:func:`check_request`) before drawing anything. While party 0
computes, the dealer answers ahead the requests it expects next (:class:`Ahead`),
and sends each answer only once it is asked for. In first-party mode
(simulation only) rank 0 runs a :class:`Dealing` itself.
"""

from __future__ import annotations

import json
import math
from collections import deque
from typing import Callable, Optional

import torch

from . import csprng
from ..errors import MPCError
from .communicator import pack_low
from .csprng import WORDS32
from .ring import minus_all, out_size, ring_matmul, sum_ring, udiv, xor_all, xor_into
from .signtest import FULL_BITS, mask_material, mask_rows, unpack_bits, words
from .transport import Transport


class Dealing:
    """What the dealer computes for one request, given every party's stream."""

    def __init__(self, streams: list):
        self.streams = streams
        self.fixed: dict = {}          # fixed operand id -> sum b
        self.folded: Optional[torch.Tensor] = None   # a folded product's shortfall (fold)

    def _draw(self, shared: list, rest, to: int = 0) -> tuple:
        """From every party's stream, in the order that party draws them: the
        values every party holds a share of (``shared``: (kind, shape) pairs),
        then, from every party but the receiver ``to``, its share of the
        product part (``rest``).
        One keystream call per stream (most requests are tiny: the per-call
        cost, times the number of parties, was most of the dealer's work)."""
        got = [[] for _ in shared]
        others = []
        specs = [_spec(kind, shape) for kind, shape in shared]
        with_rest = specs + [_spec(*rest)] if rest is not None else specs
        for i, st in enumerate(self.streams):
            parts = st.draw(with_rest if i != to else specs)
            for k in range(len(shared)):
                got[k].append(parts[k])
            if i != to and rest is not None:
                others.append(parts[-1])
        return got, others

    def remember(self, req: dict) -> None:
        """A fixed operand's mask b (every party draws its share of b): kept
        for the products that reuse it; nothing to answer."""
        (b,), _ = self._draw([("ring", req["s1"])], None)
        self.fixed[int(req["fixed"])] = sum_ring(b)

    def answer(self, req: dict) -> Optional[torch.Tensor]:
        """The receiver's correction for one request (kind and shapes only;
        the receiver, ``to``, defaults to party 0); None for a folded product
        (nothing to send: _hold_fold)."""
        kind, to = req["kind"], int(req.get("to", 0))
        s0, s1 = req["s0"], req.get("s1")
        if kind in ("mul", "matmul"):
            fix = req.get("fixed")          # a primed operand: its b is known
            drawn = [("ring", s0)] if fix is not None else [("ring", s0), ("ring", s1)]
            fold = req.get("fold") is not None
            got, rest = self._draw(drawn, ("ring", out_size(kind, s0, s1)), -1 if fold else to)
            a = sum_ring(got[0])
            b = self.fixed[fix] if fix is not None else sum_ring(got[1])
            c = ring_matmul(a, b) if kind == "matmul" else a * b
            if fold:
                self._hold_fold(minus_all(c, rest))
                return None
            return minus_all(c, rest)             # c is fresh: corrected in place
        if kind == "ltz":
            n, bits = int(s0[0]), int(req.get("bits", FULL_BITS))
            (r,), rest = self._draw([("ring", s0)], ("bits", (mask_rows(bits), words(n))), to)
            m = mask_material(self._fold_into(sum_ring(r), req.get("fold")), bits)
            return xor_into(m, rest)
        if kind == "and":
            (a, b), rest = self._draw([("bits", s0), ("bits", s1)],
                                      ("bits", out_size("and", s0, s1)), to)
            c = xor_all(a) & xor_all(b)
            return xor_into(c, rest)
        if kind == "perm":
            return self._permutation(int(s0[0]), int(s0[1]), int(req["owner"]), to)
        if kind == "lift":
            return self._lift(s0, int(req["bits"]), to)
        if kind == "b2a":                        # a random bit, xor- and additively shared
            if req.get("fixed") is not None:     # ... with rho_ij * B_jk
                return self._b2a_product(req, to)
            (rb,), rest = self._draw([("bit", s0)], ("ring", s0), to)
            n = math.prod(s0)
            return minus_all(unpack_bits(xor_all(rb), n).reshape(s0), rest)
        extra = [math.prod(s0) + int(s0[0]) * int(req.get("width", 0))] \
            if kind == "trunc_sq" else s0
        (r,), rest = self._draw([("ring", s0)], ("ring", extra), to)
        if kind == "square":
            return minus_all(sum_ring(r) * sum_ring(r), rest)
        if kind == "trunc":
            return minus_all(udiv(sum_ring(r), int(req["y"])), rest)
        if kind == "trunc_sq":
            t = udiv(sum_ring(r), int(req["y"]))
            width = int(req["width"])
            out = t.flatten()
            if width:
                out = torch.cat([out, (t[:, :width] * t[:, width - 1:width]).flatten()])
            return minus_all(out, rest)            # out: t (fresh) or a fresh cat
        raise MPCError("dealer: unknown request")


    # ---- a product folded into the next sign test's mask ----------------------
    # A product asked for with "fold" (beaver.square_and_matmul) gets no
    # correction: every party keeps its own draw, so the parties' shares sum
    # to c - delta. Its only use is linear, coef * c inside the input x of the
    # next sign test, so the parties open x - coef * delta + r. The dealer
    # deals the bits of r* = r - coef * delta for that test instead of r's:
    # the opening is x + r*, r* is as uniform as r, and the test compares
    # with r*. One correction of the test's width travels instead of two.
    def _hold_fold(self, delta: torch.Tensor) -> None:
        if self.folded is not None:
            raise MPCError("dealer: a folded product before the last one's sign test")
        self.folded = delta.reshape(-1)

    def _fold_into(self, r: torch.Tensor, fold) -> torch.Tensor:
        """r, or r* = r - coef * delta on its first count elements (fold:
        [count, coef] of the sign test that consumes the held product)."""
        if fold is None:
            return r
        count, coef = fold
        if self.folded is None or self.folded.numel() != count or count > r.numel():
            raise MPCError("dealer: a sign test folds a product it was not asked for")
        r[:count] -= coef * self.folded
        self.folded = None
        return r

    def _permutation(self, m: int, cols: int, owner: int, to: int) -> torch.Tensor:
        """b_to = a[sigma] - sum b_i: a from every stream, sigma from the owner's
        (drawn after its a, as the owner does), b_i from every other party."""
        a, sigma, rest = None, None, []
        for i, st in enumerate(self.streams):
            part = st.ring((m, cols))
            a = part if a is None else a + part
            if i == owner:
                sigma = st.permutation(m)
            if i != to:
                rest.append(st.ring((m, cols)))
        return minus_all(a[torch.from_numpy(sigma)], rest)

    def _lift(self, s0, bits: int, to: int) -> torch.Tensor:
        """A lifting mask (beaver.lift): r from every stream; the receiver's
        corrections of q = r // 2^bits (r unsigned) and of r's bit bits - 1."""
        n = math.prod(s0)
        (r,), rest = self._draw([("ring", s0)], ("ring", (2 * n,)), to)
        r = sum_ring(r).reshape(-1)
        out = torch.empty(2 * n, dtype=torch.int64)
        torch.bitwise_and(r >> bits, (1 << (64 - bits)) - 1, out=out[:n])
        torch.bitwise_and(r >> (bits - 1), 1, out=out[n:])
        return minus_all(out, rest)

    def _b2a_product(self, req: dict, to: int) -> torch.Tensor:
        """Random bits rho (n,) and W = rho[:m c].reshape(m, c)[:, :, None] * B[None]
        for the fixed operand's mask B (c, d): the receiver's correction of both.
        W needed modulo 2^32 or less (correlations.w_narrow): every other party
        drew its W as 4-byte words after its ring part, and W is formed modulo 2^32."""
        m, cols = (int(v) for v in req["rows"])
        b = self.fixed[int(req["fixed"])]
        n, d = math.prod(req["s0"]), int(b.shape[1])
        mc, mcd, narrow = m * cols, m * cols * d, w_narrow(req)
        (rb,), rest = self._draw([("bit", req["s0"])], ("ring", (n,) if narrow else (n + mcd,)),
                                 to)
        out = torch.empty(n + mcd, dtype=torch.int64)   # [rho, W], written in place
        rho = out[:n]
        rho.copy_(unpack_bits(xor_all(rb), n))
        if not narrow:
            torch.mul(rho[:mc].reshape(m, cols, 1), b.reshape(1, cols, d),
                      out=out[n:].view(m, cols, d))
            return minus_all(out, rest)
        _, ws = self._draw([], (WORDS32, (mcd,)), to)
        w = torch.mul(rho[:mc].to(torch.int32).reshape(m, cols, 1),
                      b.to(torch.int32).reshape(1, cols, d))       # modulo 2^32
        out[n:].copy_(minus_all(w.reshape(-1), ws))
        minus_all(rho, rest)                      # rho is out[:n]: corrected in place
        return out


def _spec(kind: str, shape) -> tuple:
    """(shape, bit length) of a draw for csprng.Stream.draw, as the parties
    draw it: whole ring elements; random bits packed 64 a word (signtest.pack_bits)."""
    if kind == "bit":
        return (words(math.prod(shape)),), 64
    if kind == WORDS32:                 # 4-byte words (csprng.Stream.words32)
        return shape, WORDS32
    return shape, 64



def correction_widths(req: dict, n: int) -> list:
    """(count, bits) runs of the receiver's correction of n elements for ``req``, in
    order: a run narrower than 64 bits travels as its low bits (communicator.low_bits) and is right
    modulo 2^bits only (its consumer reads no more). PUBLIC: kinds and widths.
    "low" asks a product for its result modulo 2^low (beaver.fixed_operand's
    bits); a random bit times a fixed operand then has its product's bits and
    W narrow and its other bits whole. A lifting mask's q and bit are only
    ever multiplied by 2^bits."""
    kind, low = req.get("kind"), req.get("low")
    if kind == "lift":
        return [(n, 64 - int(req["bits"]))]
    if low is None:
        return [(n, 64)]
    if kind == "b2a":
        m, cols = req["rows"]
        bits = math.prod(req["s0"])
        return [(m * cols, low), (bits - m * cols, 64), (n - bits, low)]
    return [(n, low)]


def w_narrow(req: dict) -> bool:
    """PUBLIC rule, the parties' and the dealer's: a random bit times a fixed
    operand whose W is needed modulo 2^low with low <= 32 draws W as 4-byte
    words (csprng.Stream.words32)."""
    low = req.get("low")
    return req.get("fixed") is not None and low is not None and int(low) <= 32


KINDS = {"mul", "matmul", "square", "and", "b2a", "trunc", "trunc_sq", "ltz", "fixed", "perm",
         "lift", "end"}
LOW_KINDS = {"mul", "matmul", "b2a"}     # products that may be asked for modulo 2^low
MAX_DEALT = 1 << 28              # ring elements in one request (2 GiB of corrections)


def check_request(req, dealing: Dealing) -> None:
    """Refuse, by rule and never by value, a request outside the protocol
    before the dealer draws anything for it."""
    def shape(v) -> bool:
        return isinstance(v, list) and len(v) <= 4 and all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x for x in v) and \
            math.prod(v) <= MAX_DEALT          # exact (Python integers), and fast

    if not isinstance(req, dict) or req.get("kind") not in KINDS:
        raise MPCError("dealer: request of an unknown kind")
    kind = req["kind"]
    if kind == "end":
        return
    if kind == "fixed":
        ok = shape(req.get("s1")) and isinstance(req.get("fixed"), int)
    else:
        parties = len(dealing.streams)     # "to": the party that receives the correction
        ok = _int_in(req.get("to", 0), 0, parties - 1)
        ok = ok and shape(req.get("s0")) and ("s1" not in req or shape(req["s1"]))
        if kind in ("mul", "matmul", "and"):
            fix = req.get("fixed")
            ok = ok and shape(req.get("s1")) and (fix is None or fix in dealing.fixed)
        if "fold" in req:               # a product folded into the next sign test
            ok = ok and (_fold_ok(req) if kind == "ltz" else kind in ("mul", "matmul") and
                         _int_in(req["fold"], *_INT62) and "to" not in req and "low" not in req)
        if kind in ("trunc", "trunc_sq"):
            ok = ok and _int_in(req.get("y"), 2, _INT62[1])
        if kind == "trunc_sq":
            w = req.get("width")
            ok = ok and isinstance(w, int) and len(req["s0"]) == 2 and \
                0 <= w <= req["s0"][1]
        if kind == "b2a" and req.get("fixed") is not None:
            ok = ok and _b2a_product_ok(req, dealing)
        if kind == "perm":
            ok = ok and len(req["s0"]) == 2 and _int_in(req.get("owner"), 0, parties - 1)
        if kind == "ltz":
            ok = ok and len(req["s0"]) == 1 and _width_ok(req.get("bits", FULL_BITS), 64)
        if kind == "lift":
            ok = ok and _width_ok(req.get("bits"), 62)
        if "low" in req:
            ok = ok and kind in LOW_KINDS and _width_ok(req["low"], 63) and \
                (kind != "b2a" or req.get("fixed") is not None)
    if not ok:
        raise MPCError(f"dealer: a {kind} request outside the protocol's shapes")


_INT62 = (-(1 << 62), (1 << 62) - 1)     # coefficients and divisors: no int64 overflow


def _int_in(v, lo: int, hi: int) -> bool:
    """v is an int (not a bool) in [lo, hi]."""
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _fold_ok(req: dict) -> bool:
    """A sign test's "fold": [count, coef], count within its elements."""
    f = req["fold"]
    return isinstance(f, list) and len(f) == 2 and _int_in(f[0], 1, req["s0"][0]) and \
        _int_in(f[1], *_INT62)


def _width_ok(b, most: int) -> bool:
    return _int_in(b, 2, most)


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


# Answers to requests that arrived together are held and sent together up to
# this many bytes: one TLS record and one wake-up of party 0 for several small
# corrections (a phase's requests come at once), not one per answer.
HOLD_BYTES = 1 << 16
AHEAD_ELEMENTS = 1 << 24         # answers drawn ahead: at most 128 MiB ...
AHEAD_BATCHES = 2                # ... of the next two batches


class Ahead:
    """Answers drawn before party 0 asks for them. A repeated phase sends the
    same requests (kinds and shapes: public) every time, after the same
    batch as the time before; while party 0 is busy, the dealer answers the
    batches it expects next, and stops as soon as a request comes. A request
    that differs from the expected one takes the streams back to where that
    answer began (csprng.Stream.seek), so every answer is the one the dealer
    would have drawn when asked."""

    def __init__(self, dealing: Dealing):
        self.dealing = dealing
        self.follows: dict = {}          # a batch of requests -> the batch after it
        self.last: tuple = ()
        self.batch: list = []            # the requests of the current batch (texts)
        self.ready: deque = deque()      # (text, answer, stream positions before it)
        self.plan: deque = deque()       # requests expected after those (texts)

    def answer(self, text: bytes, req: dict) -> Optional[torch.Tensor]:
        """Party 0's correction for an (already checked) request; None for a
        fixed operand or a folded product (nothing to answer)."""
        self.batch.append(text)
        if self.ready and self.ready[0][0] == text:
            return self.ready.popleft()[1]
        self._take_back()
        if req["kind"] == "fixed":
            self.dealing.remember(req)
            return None
        return self.dealing.answer(req)

    def _take_back(self) -> None:
        if self.ready:
            at, folded = self.ready[0][2]
            for st, pos in zip(self.dealing.streams, at):
                st.seek(pos)
            self.dealing.folded = folded
        self.ready.clear()
        self.plan.clear()

    def batch_done(self, asked: Callable[[], bool]) -> None:
        """Party 0 has nothing more queued: learn which batch followed the last
        one, then answer ahead, until ``asked()`` says a request came: the
        plan left, or else the two batches that followed this one before (a
        pass and the division after it: the next pass's answers are ready
        when it starts)."""
        done, self.batch = tuple(self.batch), []
        if self.last:
            self.follows[self.last] = done
        self.last = done
        if not self.ready and not self.plan:
            expect = done
            for _ in range(AHEAD_BATCHES):
                expect = self.follows.get(expect, ())
                if len(expect) < 2:      # requests one at a time: no repeated phase
                    break
                self.plan.extend(expect)
        budget = AHEAD_ELEMENTS - sum(_numel(out) for _, out, _ in self.ready)
        while self.plan and budget > 0 and not asked():
            req = json.loads(self.plan[0])
            if req["kind"] in ("fixed", "end"):
                self.plan.clear()        # a fixed operand is remembered only when sent
                return
            # where the streams and a held folded product were: a request that
            # differs from the plan takes both back (_take_back)
            before = ([st.tell() for st in self.dealing.streams], self.dealing.folded)
            out = self.dealing.answer(req)
            self.ready.append((self.plan.popleft(), out, before))
            budget -= _numel(out)


def _numel(out: Optional[torch.Tensor]) -> int:
    return 0 if out is None else out.numel()


def serve(mesh: Transport, world: int) -> int:
    """The dealer's whole job: hand each party its key, then answer party 0's
    requests until it says the job is over. Returns the number of requests."""
    keys = [csprng.new_key() for _ in range(world)]
    for p in range(world):
        mesh.send(p, keys[p])
    mesh.flush()
    dealing = Dealing([csprng.Stream(k) for k in keys])
    del keys
    ahead = Ahead(dealing)
    served, held = 0, []
    while True:
        if held and (not mesh.ready(0) or sum(len(a) for _, a in held) >= HOLD_BYTES):
            _send_held(mesh, held)
        if not mesh.ready(0):            # party 0 has its answers: work ahead while it computes
            mesh.flush()
            ahead.batch_done(lambda: mesh.ready(0))
        text = bytes(mesh.recv(0))
        try:
            req = json.loads(text)
        except ValueError:
            raise MPCError("dealer: party 0 sent a malformed request") from None
        check_request(req, dealing)
        if req.get("kind") == "end":     # party 0 has read its answers; the others get theirs
            _send_held(mesh, held)
            mesh.flush()
            return served
        out = ahead.answer(text, req)
        if out is not None:
            held.append((int(req.get("to", 0)),
                         pack_low(out, correction_widths(req, out.numel()))))
            served += 1


def _send_held(mesh: Transport, held: list) -> None:
    """Send held answers, each to its receiver, in the order asked (every
    receiver reads its own in that order)."""
    for to, answer in held:
        mesh.send(to, answer)
    held.clear()
