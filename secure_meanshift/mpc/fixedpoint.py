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


def _as_default_scale(x):
    from crypten.encoder import FixedPointEncoder

    if x.encoder.scale in (1, 2**BULK_BITS):
        return x
    y = x.clone()
    y.encoder = FixedPointEncoder(precision_bits=BULK_BITS)   # same shares, same sign
    return y


def ge_zero(*parts):
    """[x >= 0] (0/1, scale 1) for several tensors in ONE secure comparison.

    A comparison costs 7 communication rounds whatever its size (signtest.py),
    so the protocol batches every comparison that is ready at the same time.
    """
    crypten = import_crypten()
    fixed = [_as_default_scale(rescale(t, BULK_BITS) if t.encoder.scale == 1 else t)
             for t in parts]
    if len(fixed) == 1:
        return [fixed[0].ge(0.0)]
    return split_like(crypten.cat([t.flatten() for t in fixed]).ge(0.0), parts)
