"""Fixed-point bookkeeping for CrypTen tensors, in one place.

CrypTen tags each shared tensor with an encoder scale: 2^p for fixed point,
1 for integers such as comparison results. Two traps this module avoids:
- comparison results (scale 1) times a public float round the float to an
  integer; keep them integer or re-encode them with :func:`rescale` first;
- CrypTen's comparison assumes the configured default precision: a tensor of
  another precision comes back as all zeros. Only the sign matters, so
  :func:`ge_zero` relabels (never changes) the shares before comparing.
"""

from __future__ import annotations

from typing import Optional, Sequence

from ._compat import import_crypten
from .communicator import split_like

BULK_BITS = 16   # precision of the m x N work (distances, kernel weights); CrypTen's default


def rescale(x, precision_bits: int):
    """A copy of x encoded with 2^precision_bits. Going up (from integers or
    from fewer bits) multiplies the shares: exact and local. Going down is a
    truncation."""
    from crypten.encoder import FixedPointEncoder

    if x.encoder.scale == 2**precision_bits:
        return x
    y = x.clone()
    y._tensor.encode_(FixedPointEncoder(precision_bits=precision_bits))
    return y


def _relabel(x):
    """The same shares labelled at BULK_BITS (sign unchanged; no arithmetic)."""
    from crypten.encoder import FixedPointEncoder

    if x.encoder.scale == 2**BULK_BITS:
        return x
    y = x.clone()
    y.encoder = FixedPointEncoder(precision_bits=BULK_BITS)
    return y


def _as_default_scale(x):
    from crypten.encoder import FixedPointEncoder

    if x.encoder.scale in (1, 2**BULK_BITS):
        return x
    y = x.clone()
    y.encoder = FixedPointEncoder(precision_bits=BULK_BITS)   # same shares, same sign
    return y


def ge_zero(*parts, bits: Optional[Sequence] = None):
    """[x >= 0] (0/1, scale 1) for several tensors in ONE secure comparison.

    A comparison costs 7 communication rounds whatever its size (signtest.py),
    so the protocol batches every comparison that is ready at the same time.
    bits: per part, None (any ring element) or a PUBLIC width l such that the
    part's ring integers (its shares as they are, whatever its scale) lie in
    [-2^(l-1), 2^(l-1)): those parts are compared on l bits only.
    """
    crypten = import_crypten()
    if bits is not None and any(b is not None and b < 64 for b in bits):
        got = _ge_zero_narrow(parts, bits)
        if got is not None:
            return got
    fixed = [_as_default_scale(rescale(t, BULK_BITS) if t.encoder.scale == 1 else t)
             for t in parts]
    if len(fixed) == 1:
        return [fixed[0].ge(0.0)]
    return split_like(crypten.cat([t.flatten() for t in fixed]).ge(0.0), parts)


def _ge_zero_narrow(parts, bits: Sequence):
    """ge_zero with per-part widths, through the dealer's sign test (the sign of
    the ring integer is the value's, at any scale: no relabelling). None
    without a dealer's session."""
    from .dealer import less_than_zero_narrow

    crypten = import_crypten()
    if len(bits) != len(parts):
        raise ValueError("ge_zero: one width per part")
    widths: list = []
    for t, b in zip(parts, bits):
        w = 64 if b is None else int(b)
        if widths and widths[-1][1] == w:
            widths[-1][0] += t.nelement()
        else:
            widths.append([t.nelement(), w])
    same = [_relabel(t) for t in parts]           # one encoder for cat; shares unchanged
    flat = crypten.cat([t.flatten() for t in same]) if len(same) > 1 else same[0].flatten()
    lt = less_than_zero_narrow(flat, [tuple(w) for w in widths])
    if lt is None:
        return None
    return split_like(1 - lt, parts)
