"""[x < 0] for additively shared 64-bit ring elements, with a dealer's mask:
one opening of x + r, then a comparison of public bits with the dealer's
shared bits of r. Every comparison of the engine (CrypTen's ``_ltz``, hence
``ge``/``lt``/``argmin``) runs through :func:`less_than_zero`.

  1. open c = x + r                 r: a random ring element from the dealer,
                                    additively shared; c is uniform (1 hop)
  2. x < 0  <=>  msb(c - r) = c63 ^ r63 ^ [c mod 2^63 < r mod 2^63]
  3. [r' > c'] on the 63 low bits: a comparison tree over XOR shares of r's
     bits (dealer), with (gt, eq) per block of bits. Bits are *sliced*: word j
     holds bit j of 64 elements, so one AND of 64-bit words serves 64
     comparisons and every opening is packed. Level 1 (blocks of three bits)
     is local: the dealer also shares each block's bit products ab, ac, bc,
     abc, so gt and eq of a block, polynomials in its bits with public
     coefficients, are XORs of shared monomials. Five AND levels follow
     (21 -> 11 -> 6 -> 3 -> 2 -> 1 blocks), each gt_hi ^ eq_hi & gt_lo,
     eq_hi & eq_lo with eq_hi masked once for both products; the lowest
     block's eq is never read, so its pair has the first product only.
     (Blocks of two bits: 32 blocks, 92 bits of AND openings; of three: 55,
     for 84 rows of material instead of 31. Of four, the material would grow
     by 11 rows a block for 12 bits fewer opened: a loss at two parties.)
  4. bit -> arithmetic share with a dealer's random bit rho: open b ^ rho
     (packed, 1 hop), then b = z + rho - 2 z rho.

Per element and per other party: 64 + 55 + 1 bits sent, 7 rounds, for any
number of parties, exact for every ring element. (CrypTen's: a 64-bit
Kogge-Stone adder on the shares, about 10x the bytes at two parties, and
log2(k) adders for k parties.)

Narrow comparisons: when a PUBLIC bound says x lies in [-2^(l-1), 2^(l-1))
(a width of l bits, e.g. the flat kernel's exact edge test), bit l-1 of
(c - r) mod 2^l is the sign: x < 0 <=> c_(l-1) ^ r_(l-1) ^ [c mod 2^(l-1) <
r mod 2^(l-1)]. Only c mod 2^l is opened (l bits a nibble rounds up: communicator.low_bits), the
dealer's material covers r's l low bits, and the tree runs on l - 1 bits
(l = 35, the edge test on the points' grid: 36 + 29 + 1 bits per element
and other party instead of 120; 6 rounds, fewer once l - 1 <= 24). A call
compares several segments at their own widths in the same rounds
(``widths``); the opening of c is the same value as before, narrowed
(docs/leakage.md's sign-test row).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch

FULL_BITS = 64                     # the ring: a comparison valid for every element
LOW_BITS = 63
TRIPLES = LOW_BITS // 3            # blocks (2,1,0), (5,4,3), ..., (62,61,60)
MASK_ROWS = 64 + 4 * TRIPLES       # r's 64 bit slices, then per block ab, ac, bc, abc

Opener = Callable[[list], list]    # shares -> opened values (sum or xor over parties)


def resolve(v) -> torch.Tensor:
    """A correlated value, waiting for the dealer's correction if it is one."""
    return v if isinstance(v, torch.Tensor) else v.get()


def words(n: int) -> int:
    """64-bit words holding one bit of each of n elements."""
    return (n + 63) // 64


# the six steps of a 64 x 64 bit-matrix transpose: (shift, mask of the low halves)
_TRANSPOSE = [(j, np.uint64(m)) for j, m in (
    (32, 0x00000000FFFFFFFF), (16, 0x0000FFFF0000FFFF), (8, 0x00FF00FF00FF00FF),
    (4, 0x0F0F0F0F0F0F0F0F), (2, 0x3333333333333333), (1, 0x5555555555555555))]


def slice_bits(v: torch.Tensor, rows: int = FULL_BITS) -> torch.Tensor:
    """(n,) int64 -> (rows, words(n)) int64: bit j < rows of element e is bit
    e % 64 of word [j, e // 64]. Every block of 64 elements is a 64 x 64 bit
    matrix, transposed in six masked swaps of half blocks, vectorised over
    the blocks: row k of the working array holds element k of every block, so
    each swap works on whole contiguous rows, in place, and the first ``rows``
    rows are the result (this took a third of party 0's time in the
    every-point job when the halves were gathered by index; now 5x faster).
    The blocks are laid out by one transposing copy (no zeroed buffer first)."""
    n = v.numel()
    w, full = words(n), n // 64
    flat = v.reshape(-1)
    t64 = torch.empty((64, w), dtype=torch.int64)    # (64, w): element k of each block in row k
    t64[:, :full] = flat[:full * 64].reshape(full, 64).t()   # torch's transpose: 4x numpy's
    if full < w:                                      # the last, partial block: zero padding
        t64[:, full] = 0
        t64[:n - full * 64, full] = flat[full * 64:]
    a = t64.numpy().view(np.uint64)
    for j, mask in _TRANSPOSE:        # swap bit c + j of row k with bit c of row k + j
        b = a.reshape(64 // (2 * j), 2, j, w)       # rows k (bit j clear) and k + j
        lo, hi = b[:, 0], b[:, 1]
        t = np.right_shift(lo, np.uint64(j))
        t ^= hi
        t &= mask
        hi ^= t
        t <<= np.uint64(j)
        lo ^= t
    return torch.from_numpy(a[:rows].view(np.int64))


def pack_bits(b: torch.Tensor) -> torch.Tensor:
    """(n,) 0/1 int64 -> (words(n),) int64, element e at bit e % 64 of word e // 64."""
    n = b.numel()
    bits = b.reshape(-1).numpy().astype(np.uint8)
    bits = np.pad(bits, (0, 64 * words(n) - n))
    return torch.from_numpy(np.packbits(bits, bitorder="little").view(np.int64))


def unpack_bits(w: torch.Tensor, n: int) -> torch.Tensor:
    """The inverse of pack_bits: (words(n),) int64 -> (n,) 0/1 int64."""
    u8 = np.ascontiguousarray(w.numpy()).view(np.uint8)
    return torch.from_numpy(np.unpackbits(u8, bitorder="little")[:n].astype(np.int64))


def _blocks(bits: int) -> tuple:
    """(triples, rest): level-1 blocks of three bits over the bits - 1 low
    bits, and the 0, 1 or 2 low bits left on top (one more block)."""
    low = bits - 1
    return low // 3, low % 3


def _block_count(bits: int) -> int:
    triples, rest = _blocks(bits)
    return triples + (1 if rest else 0)


def _block_bits(rows: torch.Tensor, t: int) -> tuple:
    """(a, b, c): the rows of bits 3j+2, 3j+1, 3j of the t blocks of three."""
    return rows[2:3 * t:3], rows[1:3 * t:3], rows[0:3 * t:3]


def mask_rows(bits: int = FULL_BITS) -> int:
    """Rows of the dealer's material for a comparison on ``bits`` bits."""
    triples, rest = _blocks(bits)
    return bits + 4 * triples + (1 if rest == 2 else 0)


def check_width(bits: int) -> int:
    """A comparison width: an int in [2, 64] (public; refused otherwise)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= FULL_BITS:
        raise ValueError(f"sign test width {bits!r}: need an int in [2, {FULL_BITS}]")
    return bits


def mask_material(r: torch.Tensor, bits: int = FULL_BITS) -> torch.Tensor:
    """What the dealer XOR-shares for a mask r (n,) compared on ``bits`` bits,
    (mask_rows(bits), words(n)): r's low bit slices; per block of three bits
    (a, b, c) = (3j+2, 3j+1, 3j), the products ab, ac, bc, abc; and for a top
    block of two bits, their product. With every monomial of a block shared,
    any function of the block and public bits is local (level one)."""
    s = slice_bits(r, bits)
    t, rest = _blocks(bits)
    a, b, c = _block_bits(s, t)
    ab = a & b
    out = [s, ab, a & c, b & c, ab & c]
    if rest == 2:
        out.append(s[3 * t + 1:3 * t + 2] & s[3 * t:3 * t + 1])
    return torch.cat(out)


class _Segment:
    """One run of elements compared on the same width: its dealer values and
    the (gt, eq) blocks of its comparison tree."""

    def __init__(self, corr, n: int, bits: int, sign: int = 1):
        self.n, self.bits = n, bits
        self.r, self.material = corr.ltz_mask(n, bits, sign)
        w = words(n)
        self.triples = [corr.binary_triple(s0, s1) for h, last in _levels(_block_count(bits))
                        for s0, s1 in _level_triples(h, last, w)]
        self.gt = self.eq = self.cs = self.rb = None

    def level_one(self, c: torch.Tensor, first: bool) -> None:
        """The local level: blocks of three bits, gt = [r > c], eq = [r == c]."""
        bits, (t, rest) = self.bits, _blocks(self.bits)
        self.cs = slice_bits(c, self.bits)                    # public
        nc = ~self.cs
        m = resolve(self.material)
        rb = m[:bits]
        a, b, c3 = _block_bits(rb, t)
        ab, ac, bc, abc = (m[bits + k * t:bits + (k + 1) * t] for k in range(4))
        nx, ny, nz = _block_bits(nc, t)
        nxy, nxz, nyz = nx & ny, nx & nz, ny & nz
        nxyz = nxy & nz
        # [abc > xyz] = a~x ^ (a ^ ~x)(b~y ^ (b ^ ~y) c~z), expanded into monomials
        gt = (a & nx) ^ (ab & ny) ^ (abc & nz) ^ (ac & nyz) ^ (b & nxy) ^ (bc & nxz) ^ \
            (c3 & nxyz)
        # [abc == xyz] = (a ^ ~x)(b ^ ~y)(c ^ ~z); its constant term once
        eq = abc ^ (ab & nz) ^ (ac & ny) ^ (bc & nx) ^ (a & nyz) ^ (b & nxz) ^ (c3 & nxy)
        if first:
            eq = eq ^ nxyz
        if rest:
            top_gt, top_eq = self._top_block(rb, m[bits + 4 * t:], nc, 3 * t, rest, first)
            gt, eq = torch.cat([gt, top_gt]), torch.cat([eq, top_eq])
        self.gt, self.eq, self.rb = gt, eq, rb

    @staticmethod
    def _top_block(rb, pair, nc, lo: int, rest: int, first: bool) -> tuple:
        """(gt, eq) of the top block: bit lo alone, or bits lo + 1, lo with
        their product ``pair`` from the dealer."""
        if rest == 1:
            r1, n1 = rb[lo:lo + 1], nc[lo:lo + 1]
            return r1 & n1, (r1 ^ n1 if first else r1)
        hi, low = rb[lo + 1:lo + 2], rb[lo:lo + 1]
        nch, ncl = nc[lo + 1:lo + 2], nc[lo:lo + 1]
        p = pair[:1]
        gt = (hi & nch) ^ (ncl & (p ^ (nch & low)))
        eq = p ^ (ncl & hi) ^ (nch & low)
        return gt, (eq ^ (nch & ncl) if first else eq)

    def and_inputs(self) -> list:
        """[(x, y, triple)] of this segment's next AND level: the lowest pair's
        eq is never read (block 0 only ever combines as the low half), so it
        has gt_hi ^ eq_hi & gt_lo alone; the other pairs both products."""
        g = self.gt.size(0)
        h = g // 2
        glo, elo, ehi = self.gt[0:2 * h:2], self.eq[0:2 * h:2], self.eq[1:2 * h:2]
        if g == 2:
            return [(ehi.unsqueeze(0), glo.unsqueeze(0), self.triples.pop(0))]
        items = [(ehi[:1].unsqueeze(0), glo[:1].unsqueeze(0), self.triples.pop(0))]
        if h > 1:
            items.append((ehi[1:].unsqueeze(0), torch.stack([glo[1:], elo[1:]]),
                          self.triples.pop(0)))
        return items

    def combine(self, z: list) -> None:
        """Adjacent blocks (hi = odd, lo = even) merged with the ANDs' results;
        block 0's eq is a placeholder (never read)."""
        g = self.gt.size(0)
        h = g // 2
        low = z[0][0]
        new_gt = self.gt[1:2 * h:2] ^ (torch.cat([low, z[1][0]]) if h > 1 else low)
        new_eq = None
        if g > 2:
            new_eq = torch.cat([torch.zeros_like(low), z[1][1]]) if h > 1 else \
                torch.zeros_like(low)
        if g % 2:                                          # the top block passes through
            new_gt = torch.cat([new_gt, self.gt[-1:]])
            new_eq = torch.cat([new_eq, self.eq[-1:]])
        self.gt, self.eq = new_gt, new_eq

    def msb(self, first: bool) -> torch.Tensor:
        t = self.bits - 1
        out = self.gt[0] ^ self.rb[t]
        return out ^ self.cs[t] if first else out


def less_than_zero(x: torch.Tensor, corr, open_sum: Opener, open_xor: Opener,
                   first: bool, widths: Optional[Sequence] = None,
                   product: Optional[tuple] = None, sign: int = 1):
    """Arithmetic shares (0/1, int64) of [x < 0] for this party's shares x.

    corr: the party's Correlations (correlations.py); open_sum / open_xor: one
    batched all-to-all opening (open_sum also takes ``bits=`` per part: only
    each part's low bits are opened); first: this party adds public
    constants. widths: (count, bits) segments of flattened x, in order, each
    a PUBLIC bound: its elements lie in [-2^(bits-1), 2^(bits-1)); default
    the whole ring. product: (fixed id, m, cols, d, low): the first m * cols bits
    form an (m, cols) matrix K that multiplies a fixed operand (beaver.py):
    the dealer's random bits rho then come with W = rho_ij * B_jk (B the
    operand's mask, (cols, d)), and the result is (bits, z, W) with z the
    opened b ^ rho (public, (n,)) and W this party's (m, cols, d) shares
    (int32 when right modulo 2^32 only: correlations.w_narrow);
    low (PUBLIC, or None): K's additive shares and W are right modulo 2^low
    only (the product is needed no wider: beaver.lift). sign: x is the values
    as computed (+1) or -v - 1 (-1, beaver's ge_times): how a product folded
    into the first segment's mask enters x (Correlations.triple's fold)."""
    shape, n = x.shape, x.numel()
    widths = [(n, FULL_BITS)] if widths is None else [(int(k), check_width(b))
                                                      for k, b in widths if k]
    if sum(k for k, _ in widths) != n:
        raise ValueError("sign test widths do not cover the values")
    # everything the dealer contributes, asked for at once: its answers then
    # arrive while the parties exchange c, and no level waits for the dealer
    segs = [_Segment(corr, k, b, sign) for k, b in widths]
    rho = corr.random_bit(torch.Size([64 * words(n)]), product)
    flat, at, masked = x.reshape(-1), 0, []
    for s in segs:
        masked.append(flat[at:at + s.n] + s.r)
        at += s.n
    narrow = [s.bits for s in segs]
    opened = open_sum(masked) if all(b == FULL_BITS for b in narrow) \
        else open_sum(masked, bits=narrow)
    for s, c in zip(segs, opened):
        s.level_one(c, first)
    # the AND levels, every segment's in the same rounds
    while True:
        active = [s for s in segs if s.gt.size(0) > 1]
        if not active:
            break
        items = [s.and_inputs() for s in active]
        z = and_many([it for its in items for it in its], open_xor, first)
        at = 0
        for s, its in zip(active, items):
            s.combine(z[at:at + len(its)])
            at += len(its)
    msbs = [s.msb(first) for s in segs]
    packed = msbs[0] if len(segs) == 1 else pack_bits(
        torch.cat([unpack_bits(m, s.n) for m, s in zip(msbs, segs)]))
    share, z = _b2a(packed, n, open_xor, first, rho[:2])
    if product is None:
        return share.reshape(shape)
    _, m, cols, d, _ = product
    w = resolve(rho[2]).reshape(m, cols, d)      # int32 when needed modulo 2^32 or less
    return share.reshape(shape), z, w


def _levels(blocks: int) -> list:
    """(pairs combined, is last level) for each AND level of the tree."""
    out = []
    while blocks > 1:
        out.append((blocks // 2, blocks == 2))
        blocks = blocks - blocks // 2
    return out


def _level_triples(h: int, last: bool, w: int) -> list:
    """Binary triple shapes of one AND level of h pairs (Segment.and_inputs)."""
    if last:
        return [((1, h, w), (1, h, w))]
    return [((1, 1, w), (1, 1, w))] + ([((1, h - 1, w), (2, h - 1, w))] if h > 1 else [])


def and_many(items: list, open_xor: Opener, first: bool) -> list:
    """XOR shares of x & y for several (x, y, (a, b, c)) at once, with one
    opening of every x ^ a, y ^ b: z = c ^ (b & e) ^ (a & d) ^ e & d."""
    opened = open_xor([t for x, y, (a, b, _) in items for t in (x ^ a, y ^ b)])
    out = []
    for k, (_, _, (a, b, c)) in enumerate(items):
        e, d = opened[2 * k], opened[2 * k + 1]
        z = resolve(c) ^ (b & e) ^ (a & d)
        out.append(z ^ (e & d) if first else z)
    return out


def and_shares(corr, x: torch.Tensor, y: torch.Tensor, open_xor: Opener,
               first: bool, triple=None) -> torch.Tensor:
    """XOR shares of x & y (broadcasting) with one binary triple from the dealer
    (see and_many)."""
    t = triple or corr.binary_triple(x.size(), y.size())
    return and_many([(x, y, t)], open_xor, first)[0]


def bit_to_arithmetic(corr, packed: torch.Tensor, n: int, open_xor: Opener,
                      first: bool, rho=None) -> torch.Tensor:
    """(n,) additive shares of the bits XOR-shared in ``packed`` (words(n),)."""
    # one random bit per word position, so that even the padding opens uniform
    rho = rho or corr.random_bit(torch.Size([64 * packed.numel()]))
    return _b2a(packed, n, open_xor, first, rho)[0]


def _b2a(packed: torch.Tensor, n: int, open_xor: Opener, first: bool, rho) -> tuple:
    """(additive shares of the n bits, the opened z = b ^ rho (public))."""
    rho_b, rho_a = rho                       # rho_b packed like ``packed``
    (z,) = open_xor([packed ^ rho_b])
    z = unpack_bits(z, n)
    share = resolve(rho_a)[:n] * (1 - 2 * z)
    return (share + z if first else share), z
