"""CrypTen's communicator, over the job's own links (mesh.py) instead of
torch.distributed/gloo.

Ranks 0..k-1 are the parties; the dealer, when there is one, is rank k and
takes part in no collective: ``get_world_size()`` is the number of parties, as
CrypTen's sharing code expects. Every collective but a large opening is one
hop: each party sends its part straight to the ranks that need it.

Large openings (:meth:`MeshCommunicator.all_reduce` and ``all_reduce_low`` of at
least ``KING_MIN_BYTES`` per party and peer, three or more parties) are split
"king" reconstructions: the elements are cut into one slice per party; each
party sends its share of slice j to party j (the king of that slice), the king
sums the shares and sends the opened slice back to every other party. That is
2(n-1) transfers per element instead of n(n-1) (4 instead of 6 at 3 parties,
6 instead of 12 at 4), at two hops instead of one, and every party is king of
1/n of every opening, so the load stays even. Security: as king of its slice,
a party receives exactly the shares it receives in the all-to-all opening for
those elements; of every other slice it receives only the opened value, which
it would have computed itself; all parties end with the same opened value. Nothing new is opened
(docs/leakage.md is unchanged). The dealer is never a king: it is no party of
a collective. At two parties a king saves nothing, and below the threshold the
extra hop costs more than the bytes saved: those stay all-to-all.
"""

from __future__ import annotations

import json
from contextlib import contextmanager

import numpy as np
import torch
from torch.distributed import ReduceOp

from ..errors import MPCError
from .transport import Transport


def to_bytes(t: torch.Tensor) -> memoryview:
    t = t.detach()
    if t.dtype != torch.int64:
        raise MPCError("only ring elements (int64) travel between parties")
    return memoryview(t.contiguous().numpy()).cast("B")


def from_bytes(frame, size) -> torch.Tensor:
    """A received frame (uint8 array) as an int64 tensor of the given size (no copy)."""
    size = torch.Size(size)
    if len(frame) != 8 * size.numel():
        raise MPCError("a peer sent a tensor of the wrong size")
    if len(frame) == 0:
        return torch.zeros(size, dtype=torch.int64)
    # shaped in numpy: a torch reshape costs more than the rest (once per peer per round)
    return torch.from_numpy(np.asarray(frame).view(np.int64).reshape(size))


_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _layout(bits: int) -> tuple:
    """(whole bytes, nibble?) per element for a width below 64: a width that
    ends in the low half of a byte travels as a nibble (two elements a byte),
    one in the high half as a whole byte. Bit-exact packing would save at most
    3 bits more and costs 10-20x the CPU of these copies (numpy has no pext)."""
    whole, rest = divmod(int(bits), 8)
    return (whole, True) if 0 < rest <= 4 else (whole + (rest > 4), False)


def _planes(whole: int) -> list:
    """(byte offset, size) of the aligned 4-, 2- and 1-byte planes that cover
    an element's low ``whole`` bytes (5: bytes 0-3, then byte 4)."""
    out, at = [], 0
    for size in (4, 2, 1):
        while whole - at >= size and at % size == 0:
            out.append((at, size))
            at += size
    return out


def wire_bytes(count: int, bits: int) -> int:
    """Bytes of ``count`` ring elements right modulo 2^bits as they travel
    (low_bits): whole words at 64, else the width rounded up to a nibble."""
    if bits >= 64:
        return 8 * count
    whole, nibble = _layout(bits)
    return count * whole + (count + 1) // 2 * nibble


def low_bits(t: torch.Tensor, bits: int) -> np.ndarray:
    """The low ``bits`` bits (rounded up to a nibble) of each int64 element,
    packed (wire_bytes(n, bits),) uint8, plane by plane: the low 4 bytes of
    every element, then the next 2, then 1 (_planes: aligned strided copies,
    as fast as whole words), then the next nibbles, two a byte (even
    elements in the low half)."""
    a = t.contiguous().numpy()
    n = a.size
    if bits >= 64:
        return a.view(np.uint8).reshape(-1).copy()
    whole, nibble = _layout(bits)
    buf = np.empty(wire_bytes(n, bits), np.uint8)
    at = 0
    for off, size in _planes(whole):
        buf[at:at + n * size].view(_UINT[size])[:] = a.view(_UINT[size])[off // size::8 // size]
        at += n * size
    if nibble and n:
        top, pairs = a.view(np.uint8)[whole::8], buf[at:]
        np.left_shift(top[1::2], np.uint8(4), out=pairs[:n // 2])
        if n % 2:
            pairs[-1] = 0
        pairs |= top[0::2] & np.uint8(0x0F)
    return buf


def low_words(b: np.ndarray, n: int, bits: int, out: np.ndarray) -> None:
    """The inverse of low_bits: write into out (n,) uint64 the elements whose
    low bits are packed in b (zero above their nibble). The first plane is
    widened into out (one sequential pass that also zeroes the bytes above:
    2-3x faster than zeroing out and then writing it strided)."""
    b = np.ascontiguousarray(b, np.uint8)
    if bits >= 64:
        out[:] = b.view(np.uint64)
        return
    whole, nibble = _layout(bits)
    planes, at = _planes(whole), 0
    for k, (off, size) in enumerate(planes):
        plane = b[at:at + n * size].view(_UINT[size])
        if k == 0:
            np.copyto(out, plane, casting="unsafe")
        else:
            out.view(_UINT[size])[off // size::8 // size] = plane
        at += n * size
    if not (nibble and n):
        if not planes:
            out[:] = 0
        return
    pairs = b[at:at + (n + 1) // 2]
    if not planes:                        # the nibbles are the whole elements
        np.bitwise_and(pairs, np.uint8(0x0F), out=out[0::2], casting="unsafe")
        np.right_shift(pairs[:n // 2], np.uint8(4), out=out[1::2], casting="unsafe")
        return
    bytes_ = out.view(np.uint8)
    bytes_[whole::16] = pairs & np.uint8(0x0F)
    bytes_[whole + 8::16] = pairs[:n // 2] >> np.uint8(4)


def _from_low_bits(b: np.ndarray, n: int, bits: int) -> torch.Tensor:
    """(n,) int64 from their packed low bits (low_bits)."""
    out = np.empty(n, np.uint64)
    low_words(b, n, bits, out)
    return torch.from_numpy(out.view(np.int64))


def pack_low(t: torch.Tensor, widths: list) -> memoryview:
    """A flat int64 tensor as one frame, run by run: each (count, bits) run
    travels as low_bits (whole words at 64)."""
    flat = t.reshape(-1).contiguous()
    if all(b >= 64 for _, b in widths):
        return to_bytes(flat)
    out, at = [], 0
    for count, bits in widths:
        out.append(low_bits(flat[at:at + count], bits))
        at += count
    return memoryview(np.concatenate(out) if out else np.zeros(0, np.uint8))


def unpack_low(frame, widths: list, size) -> torch.Tensor:
    """The inverse of pack_low: an int64 tensor of ``size``, each run right
    modulo 2^bits only (zero above)."""
    size = torch.Size(size)
    if all(b >= 64 for _, b in widths):
        return from_bytes(frame, size)
    got = np.asarray(frame, dtype=np.uint8)
    if got.size != sum(wire_bytes(c, b) for c, b in widths) or \
            sum(c for c, _ in widths) != size.numel():
        raise MPCError("a peer sent a tensor of the wrong size")
    out = np.empty(size.numel(), np.uint64)
    at = put = 0
    for count, bits in widths:
        k = wire_bytes(count, bits)
        low_words(got[at:at + k], count, bits, out[put:put + count])
        at, put = at + k, put + count
    return torch.from_numpy(out.view(np.int64)).reshape(size)


def split_like(total, parts: list) -> list:
    """Cut a flat concatenation back into pieces shaped like ``parts`` (torch
    tensors or MPCTensors alike)."""
    if len(parts) == 1:                 # most openings: one part, no slicing
        return [total.reshape(parts[0].size())]
    out, at = [], 0
    for t in parts:
        n = t.nelement()
        out.append(total[at:at + n].reshape(t.size()))
        at += n
    return out


# A large opening goes through slice kings (see the module docstring) when each
# party would send at least this many bytes to each peer all-to-all. Over TLS on
# loopback kings break even at about 256 KiB (3 parties) and 128 KiB (4 parties)
# and save 35-55% at 8 MiB (benchmarks/results/king_opening.json); below, the
# second hop costs more than the bytes saved. The every-point job sends 95% of
# its opening bytes in openings at least this large.
KING_MIN_BYTES = 1 << 18


def king_slices(n: int, parties: int) -> list:
    """Bounds of the slices of n elements that parties 0..parties-1 reconstruct
    (slice j is [b[j], b[j+1])): public, the same at every party, sizes within one."""
    return [j * n // parties for j in range(parties + 1)]


class _Done:
    def wait(self) -> None:
        return None

    def is_completed(self) -> bool:
        return True


class MeshCommunicator:
    """The subset of CrypTen's Communicator API that its arithmetic and binary
    sharing use, one hop per collective."""

    BYTES_PER_ELEMENT = 8

    def __init__(self, mesh: Transport, world_size: int):
        self.mesh = mesh
        self.rank = mesh.rank
        self.world_size = world_size
        self.name = f"rank{self.rank}"
        self.reset_communication_stats()

    # ---- identity --------------------------------------------------------
    def get_rank(self) -> int:
        return self.rank

    def get_world_size(self) -> int:
        return self.world_size

    def set_name(self, name: str) -> None:
        self.name = name

    def get_name(self) -> str:
        return self.name

    # ---- statistics ------------------------------------------------------
    def _from_dealer(self) -> int:
        return self.mesh.received_from(self.world_size)

    def reset_communication_stats(self) -> None:
        self.comm_rounds = 0
        self._base_sent = self.mesh.sent_bytes
        self._base_dealer = self._from_dealer()
        self.comm_time = 0.0
        self.step = "other"
        self.steps: dict = {}
        self._mark = self.mesh.sent_bytes

    def _tally(self) -> dict:
        """Charge the bytes sent since the last mark to the current step."""
        entry = self.steps.setdefault(self.step, {"bytes": 0, "rounds": 0,
                                                  "dealer_bytes": 0})
        entry["bytes"] += self.mesh.sent_bytes - self._mark
        self._mark = self.mesh.sent_bytes
        return entry

    def set_step(self, name: str) -> str:
        """Charge what follows to protocol step ``name``; returns the previous step."""
        self._tally()
        prev, self.step = self.step, name
        return prev

    def count_dealer(self, nbytes: int) -> None:
        """A correction of nbytes asked from the dealer (charged when asked)."""
        self._tally()["dealer_bytes"] += nbytes

    def get_communication_stats(self) -> dict:
        """bytes: payload this party sent (to parties and requests to the
        dealer); dealer_bytes: corrections it received from the dealer;
        steps: the same per protocol step (see :func:`step`)."""
        self._tally()
        return {"rounds": self.comm_rounds, "bytes": self.mesh.sent_bytes - self._base_sent,
                "dealer_bytes": self._from_dealer() - self._base_dealer,
                "time": self.comm_time,
                "steps": {k: dict(v) for k, v in self.steps.items()}}

    def print_communication_stats(self) -> None:
        print(self.get_communication_stats())

    # ---- helpers ---------------------------------------------------------
    def _parties(self) -> list:
        return [p for p in range(self.world_size) if p != self.rank]

    def _round(self) -> None:
        self.comm_rounds += 1
        self._tally()["rounds"] += 1

    @staticmethod
    def _flat(parts: list) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in parts]) if len(parts) > 1 else \
            parts[0].reshape(-1)

    @staticmethod
    def _combine(acc: torch.Tensor, other: torch.Tensor, op) -> torch.Tensor:
        if op == ReduceOp.BXOR:
            acc ^= other
        elif op == ReduceOp.SUM:
            acc += other
        else:
            raise MPCError("unsupported reduction")
        return acc

    # ---- collectives -----------------------------------------------------
    def _kings(self, nbytes: int) -> bool:
        """Whether an opening of nbytes per party and peer goes through slice kings."""
        return self.world_size >= 3 and nbytes >= KING_MIN_BYTES

    def all_reduce(self, input, op=ReduceOp.SUM, batched=False):
        parts = list(input) if batched else [input]
        flat = self._flat(parts).contiguous()
        if self._kings(8 * flat.numel()):
            out = split_like(self._king_reduce(flat, op), parts)
            return out if batched else out[0]
        view = to_bytes(flat)
        for p in self._parties():
            self.mesh.send(p, view)
        total = None
        for p in self._parties():
            got = from_bytes(self.mesh.recv(p), flat.size())
            # the first sum allocates the result; flat itself is never written
            total = (flat ^ got if op == ReduceOp.BXOR else flat + got) if total is None \
                else self._combine(total, got, op)
        self._round()
        out = split_like(flat.clone() if total is None else total, parts)
        return out if batched else out[0]

    def _king_reduce(self, flat: torch.Tensor, op) -> torch.Tensor:
        """The reduction of flat over the parties, slice j reconstructed by party j."""
        b = king_slices(flat.numel(), self.world_size)
        lo, hi = b[self.rank], b[self.rank + 1]
        for p in self._parties():
            self.mesh.send(p, to_bytes(flat[b[p]:b[p + 1]]))
        mine = flat[lo:hi].clone()
        for p in self._parties():
            self._combine(mine, from_bytes(self.mesh.recv(p), (hi - lo,)), op)
        self._round()
        view = to_bytes(mine)
        for p in self._parties():
            self.mesh.send(p, view)
        total = torch.empty_like(flat)
        total[lo:hi] = mine
        for p in self._parties():
            total[b[p]:b[p + 1]] = from_bytes(self.mesh.recv(p), (b[p + 1] - b[p],))
        self._round()
        return total

    def all_reduce_low(self, parts: list, bits: list) -> list:
        """Sum of int64 shares over the parties, each part right modulo
        2^bits[k] only: each party sends the low bits of each element
        (low_bits: a narrow sign test's opening of c mod 2^l, signtest.py).
        The bits above are not defined."""
        if len(bits) != len(parts):
            raise MPCError("all_reduce_low: one width per part")
        flats = [t.reshape(-1).contiguous() for t in parts]
        if self._kings(sum(wire_bytes(f.numel(), b) for f, b in zip(flats, bits))):
            totals = self._king_reduce_low(flats, bits)
            return [t.reshape(p.size()) for t, p in zip(totals, parts)]
        frame = np.concatenate([low_bits(f, b) for f, b in zip(flats, bits)]) \
            if flats else np.zeros(0, np.uint8)
        for p in self._parties():
            self.mesh.send(p, memoryview(frame))
        totals = [f.clone() for f in flats]
        for p in self._parties():
            self._add_low(totals, [(0, f.numel()) for f in flats], bits,
                          self.mesh.recv(p), frame.size)
        self._round()
        return [t.reshape(p.size()) for t, p in zip(totals, parts)]

    @staticmethod
    def _add_low(totals: list, spans: list, bits: list, frame, size: int) -> None:
        """Add a received frame of low bits (per part, the elements of its span
        at that part's width) into each part's total, at its span."""
        got = np.asarray(frame, dtype=np.uint8)
        if got.size != size:
            raise MPCError("a peer sent a tensor of the wrong size")
        at = 0
        for tot, (lo, hi), b in zip(totals, spans, bits):
            k = wire_bytes(hi - lo, b)
            tot[lo:hi] += _from_low_bits(got[at:at + k], hi - lo, b)
            at += k

    def _king_reduce_low(self, flats: list, bits: list) -> list:
        """all_reduce_low through slice kings: slice j of every part goes to
        party j, which sends back the low bits of the sum. Every party's
        result is the low bits only (zero above), the king's too."""
        n = self.world_size
        bounds = [king_slices(f.numel(), n) for f in flats]
        spans = [[(b[j], b[j + 1]) for b in bounds] for j in range(n)]

        def low(tensors: list, j: int) -> np.ndarray:
            return np.concatenate([low_bits(t[lo:hi], w) for t, (lo, hi), w
                                   in zip(tensors, spans[j], bits)])

        def size(j: int) -> int:
            return sum(wire_bytes(hi - lo, w) for (lo, hi), w in zip(spans[j], bits))

        for p in self._parties():
            self.mesh.send(p, memoryview(low(flats, p)))
        mine = [f[lo:hi].clone() for f, (lo, hi) in zip(flats, spans[self.rank])]
        for p in self._parties():
            self._add_low(mine, [(0, m.numel()) for m in mine], bits, self.mesh.recv(p),
                          size(self.rank))
        self._round()
        opened = np.concatenate([low_bits(m, w) for m, w in zip(mine, bits)])
        for p in self._parties():
            self.mesh.send(p, memoryview(opened))
        totals = [torch.zeros_like(f) for f in flats]
        for p in [*self._parties(), self.rank]:
            frame = opened if p == self.rank else self.mesh.recv(p)
            self._add_low(totals, spans[p], bits, frame, size(p))
        self._round()
        return totals

    def reduce(self, input, dst, op=ReduceOp.SUM, batched=False):
        parts = list(input) if batched else [input]
        flat = self._flat(parts).clone()   # the receiver sums into it
        self._round()
        if self.rank != dst:
            self.mesh.send(dst, to_bytes(flat))
            self.mesh.flush()
            return None
        for p in self._parties():
            self._combine(flat, from_bytes(self.mesh.recv(p), flat.size()), op)
        out = split_like(flat, parts)
        return out if batched else out[0]

    def all_gather(self, tensor, async_op=False):
        t = tensor.to(torch.int64).contiguous()
        for p in self._parties():
            self.mesh.send(p, to_bytes(t))
        got = {p: from_bytes(self.mesh.recv(p), t.size()) for p in self._parties()}
        got[self.rank] = t
        self._round()
        return [got[p] for p in range(self.world_size)]

    def gather(self, tensor, dst, async_op=False):
        t = tensor.to(torch.int64).contiguous()
        self._round()
        if self.rank != dst:
            self.mesh.send(dst, to_bytes(t))
            self.mesh.flush()
            return None
        got = {p: from_bytes(self.mesh.recv(p), t.size()) for p in self._parties()}
        got[self.rank] = t
        return [got[p] for p in range(self.world_size)]

    def broadcast(self, input, src, group=None, batched=False):
        parts = list(input) if batched else [input]
        self._round()
        if self.rank == src:
            flat = self._flat(parts)
            for p in self._parties():
                self.mesh.send(p, to_bytes(flat))
            self.mesh.flush()
            return input
        flat = from_bytes(self.mesh.recv(src), self._flat(parts).size())
        out = split_like(flat.clone(), parts)
        return out if batched else out[0]

    def broadcast_obj(self, obj, src, group=None):
        """Only sizes and plain numbers: no pickle ever crosses a link."""
        self._round()
        if self.rank == src:
            data = json.dumps(list(obj) if isinstance(obj, torch.Size) else obj).encode()
            for p in self._parties():
                self.mesh.send(p, data)
            self.mesh.flush()
            return obj
        value = json.loads(bytes(self.mesh.recv(src)))
        return torch.Size(value) if isinstance(value, list) else value

    def barrier(self) -> None:
        self.all_gather(torch.zeros(1, dtype=torch.int64))

    def send(self, tensor, dst):
        self.mesh.send(dst, bytes(to_bytes(tensor)))
        self.mesh.flush()

    def recv(self, tensor, src=None):
        tensor.copy_(from_bytes(self.mesh.recv(src), tensor.size()))
        return tensor

    def isend(self, tensor, dst):
        self.mesh.send(dst, bytes(to_bytes(tensor)))
        return _Done()

    def irecv(self, tensor, src=None):
        self.recv(tensor, src)
        return _Done()

    def scatter(self, scatter_list, src, size=None, async_op=False):
        self._round()
        if self.rank == src:
            for p in self._parties():
                self.mesh.send(p, to_bytes(scatter_list[p]))
            self.mesh.flush()
            return scatter_list[self.rank]
        return from_bytes(self.mesh.recv(src), size).clone()


@contextmanager
def step(name: str):
    """Charge the communication inside the block to protocol step ``name``."""
    import crypten.communicator as cc  # CrypTen: loaded late (start-up cost)

    comm = cc.get()
    prev = comm.set_step(name)
    try:
        yield
    finally:
        comm.set_step(prev)
