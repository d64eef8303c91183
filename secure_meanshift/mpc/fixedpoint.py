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

BULK_BITS = 16   # precision of the m x N work (distances, kernel weights); CrypTen's default


def rescale(x, precision_bits: int):
    """A copy of x encoded with 2^precision_bits. Going up (from integers or
    from fewer bits) multiplies the shares: exact and local. Going down is a
    truncation."""
    from crypten.encoder import FixedPointEncoder  # CrypTen: loaded late (start-up cost)

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
    from crypten.encoder import FixedPointEncoder  # CrypTen: loaded late (start-up cost)

    if x.encoder.scale in (1, 2**BULK_BITS):
        return x
    y = x.clone()
    y.encoder = FixedPointEncoder(precision_bits=BULK_BITS)   # same shares, same sign
    return y


def ge_zero(*parts, bits: Optional[Sequence] = None, times=None):
    """[x >= 0] (0/1, scale 1) for several tensors in ONE secure comparison.

    A comparison costs 7 communication rounds whatever its size (signtest.py),
    so the protocol batches every comparison that is ready at the same time.
    bits: per part, None (any ring element) or a PUBLIC width l such that the
    part's ring integers (its shares as they are, whatever its scale) lie in
    [-2^(l-1), 2^(l-1)): those parts are compared on l bits only.
    times: a fixed operand u (dealer.fixed_operand, (cols, d)) for an
    (m, cols) first part: returns (the bits, [parts[0] >= 0] @ u), the product
    from the sign test's own conversion and a dealer correlation
    (dealer.ge_zero_times) instead of a Beaver opening.
    """
    crypten = import_crypten()
    from .communicator import split_like   # torch: not at import (params imports this module)

    if times is not None:
        return _ge_zero_times(parts, bits, times)
    if bits is not None and any(b is not None and b < 64 for b in bits):
        got = _ge_zero_narrow(parts, bits)
        if got is not None:
            return got
    fixed = [_as_default_scale(rescale(t, BULK_BITS) if t.encoder.scale == 1 else t)
             for t in parts]
    if len(fixed) == 1:
        return [fixed[0].ge(0.0)]
    return split_like(crypten.cat([t.flatten() for t in fixed]).ge(0.0), parts)


def _segments(parts, bits: Optional[Sequence]) -> list:
    """(count, width) runs of the flattened parts (None: the whole ring, 64)."""
    bits = [None] * len(parts) if bits is None else list(bits)
    if len(bits) != len(parts):
        raise ValueError("ge_zero: one width per part")
    widths: list = []
    for t, b in zip(parts, bits):
        w = 64 if b is None else int(b)
        if widths and widths[-1][1] == w:
            widths[-1][0] += t.nelement()
        else:
            widths.append([t.nelement(), w])
    return [tuple(w) for w in widths]


def _ge_zero_times(parts, bits: Optional[Sequence], u) -> tuple:
    from .beaver import ge_zero_times

    got = ge_zero_times(list(parts), _segments(parts, bits), u)
    if got is None:            # no dealer's session: CrypTen's comparison and product
        out = ge_zero(*parts, bits=bits)
        return out, out[0].matmul(u)
    return got


def _ge_zero_narrow(parts, bits: Sequence):
    """ge_zero with per-part widths, through the dealer's sign test (the sign of
    the ring integer is the value's, at any scale: no relabelling). None
    without a dealer's session."""
    from .beaver import less_than_zero_narrow
    from .communicator import split_like

    crypten = import_crypten()
    widths = _segments(parts, bits)
    same = [_relabel(t) for t in parts]           # one encoder for cat; shares unchanged
    flat = crypten.cat([t.flatten() for t in same]) if len(same) > 1 else same[0].flatten()
    lt = less_than_zero_narrow(flat, widths)
    if lt is None:
        return None
    return split_like(1 - lt, parts)
