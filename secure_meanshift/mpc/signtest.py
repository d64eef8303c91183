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
     comparisons and every opening is packed. Level 1 (blocks of two bits) is
     local: the dealer also shares r_(2j+1) & r_(2j). Five AND levels follow
     (32 -> 16 -> ... -> 1 blocks), each gt_hi ^ eq_hi & gt_lo, eq_hi & eq_lo
     with eq_hi masked once for both products.
  4. bit -> arithmetic share with a dealer's random bit rho: open b ^ rho
     (packed, 1 hop), then b = z + rho - 2 z rho.

Per element and per other party: 64 + 92 + 1 bits sent, 7 rounds, for any
number of parties, exact for every ring element. (CrypTen's: a 64-bit
Kogge-Stone adder on the shares, about 10x the bytes at two parties, and
log2(k) adders for k parties.)
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

LOW_BITS = 63
PAIRS = LOW_BITS // 2              # blocks (1,0), (3,2), ..., (61,60); bit 62 alone
MASK_ROWS = 64 + PAIRS             # r's 64 bit slices, then r_(2j+1) & r_(2j)

Opener = Callable[[list], list]    # shares -> opened values (sum or xor over parties)


def resolve(v) -> torch.Tensor:
    """A correlated value, waiting for the dealer's correction if it is one."""
    return v if isinstance(v, torch.Tensor) else v.get()


def words(n: int) -> int:
    """64-bit words holding one bit of each of n elements."""
    return (n + 63) // 64


def slice_bits(v: torch.Tensor) -> torch.Tensor:
    """(n,) int64 -> (64, words(n)) int64: bit j of element e is bit e % 64 of
    word [j, e // 64]."""
    n = v.numel()
    pad = 64 * words(n) - n
    u8 = np.ascontiguousarray(v.reshape(-1).numpy()).view(np.uint8).reshape(n, 8)
    bits = np.unpackbits(u8, axis=1, bitorder="little").T         # (64, n)
    if pad:
        bits = np.pad(bits, ((0, 0), (0, pad)))
    packed = np.packbits(bits, axis=1, bitorder="little")          # (64, 8 W)
    return torch.from_numpy(np.ascontiguousarray(packed).view(np.int64))


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


def mask_material(r: torch.Tensor) -> torch.Tensor:
    """What the dealer XOR-shares for a mask r (n,): r's bit slices and the
    products of adjacent bit pairs, (MASK_ROWS, words(n))."""
    s = slice_bits(r)
    return torch.cat([s, s[1:2 * PAIRS:2] & s[0:2 * PAIRS:2]])


def less_than_zero(x: torch.Tensor, corr, open_sum: Opener, open_xor: Opener,
                   first: bool) -> torch.Tensor:
    """Arithmetic shares (0/1, int64) of [x < 0] for this party's shares x.

    corr: the party's Correlations (dealer.py); open_sum / open_xor: one
    batched all-to-all opening; first: this party adds public constants."""
    shape, n = x.shape, x.numel()
    w = words(n)
    # everything the dealer contributes, asked for at once: its answers then
    # arrive while the parties exchange c, and no level waits for the dealer
    r, material = corr.ltz_mask(n)
    triples = [corr.binary_triple((1, h, w), (1 if last else 2, h, w))
               for h, last in _levels(PAIRS + 1)]
    rho = corr.random_bit(torch.Size([64 * w]))
    (c,) = open_sum([x.reshape(-1) + r])
    cs = slice_bits(c)                                   # public
    nc = ~cs
    m = resolve(material)
    rb, pair = m[:64], m[64:]

    # level 1, local: blocks of two bits, gt = [r > c] and eq = [r == c] per block
    hi, lo = rb[1:2 * PAIRS:2], rb[0:2 * PAIRS:2]
    nch, ncl = nc[1:2 * PAIRS:2], nc[0:2 * PAIRS:2]
    gt = (hi & nch) ^ (ncl & (pair ^ (nch & lo)))
    eq = pair ^ (ncl & hi) ^ (nch & lo)
    top_eq = rb[62:63]
    if first:
        eq = eq ^ (nch & ncl)
        top_eq = top_eq ^ nc[62:63]
    gt = torch.cat([gt, rb[62:63] & nc[62:63]])
    eq = torch.cat([eq, top_eq])

    # levels 2..6: combine adjacent blocks (hi = odd, lo = even) with one AND each
    for triple in triples:
        g = gt.size(0)
        h = g // 2
        ghi, glo = gt[1:2 * h:2], gt[0:2 * h:2]
        ehi, elo = eq[1:2 * h:2], eq[0:2 * h:2]
        last = g == 2
        y = glo.unsqueeze(0) if last else torch.stack([glo, elo])
        z = and_shares(corr, ehi.unsqueeze(0), y, open_xor, first, triple)
        new_gt, new_eq = ghi ^ z[0], (None if last else z[1])
        if g % 2:                                          # the top block passes through
            new_gt = torch.cat([new_gt, gt[-1:]])
            new_eq = torch.cat([new_eq, eq[-1:]])
        gt, eq = new_gt, new_eq

    msb = gt[0] ^ rb[63]
    if first:
        msb = msb ^ cs[63]
    return bit_to_arithmetic(corr, msb, n, open_xor, first, rho).reshape(shape)


def _levels(blocks: int) -> list:
    """(pairs combined, is last level) for each AND level of the tree."""
    out = []
    while blocks > 1:
        out.append((blocks // 2, blocks == 2))
        blocks = blocks - blocks // 2
    return out


def and_shares(corr, x: torch.Tensor, y: torch.Tensor, open_xor: Opener,
               first: bool, triple=None) -> torch.Tensor:
    """XOR shares of x & y (broadcasting) with one binary triple from the dealer:
    open x ^ a and y ^ b (one hop), z = c ^ (b & e) ^ (a & d) ^ e & d."""
    a, b, c = triple or corr.binary_triple(x.size(), y.size())
    e, d = open_xor([x ^ a, y ^ b])
    z = resolve(c) ^ (b & e) ^ (a & d)
    return z ^ (e & d) if first else z


def bit_to_arithmetic(corr, packed: torch.Tensor, n: int, open_xor: Opener,
                      first: bool, rho=None) -> torch.Tensor:
    """(n,) additive shares of the bits XOR-shared in ``packed`` (words(n),)."""
    # one random bit per word position, so that even the padding opens uniform
    rho_b, rho_a = rho or corr.random_bit(torch.Size([64 * packed.numel()]))
    (z,) = open_xor([packed ^ pack_bits(rho_b)])
    z = unpack_bits(z, n)
    share = resolve(rho_a)[:n] * (1 - 2 * z)
    return share + z if first else share
