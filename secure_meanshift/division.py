"""Secure division num / den for den anywhere in [2^-8, 2^24).

CrypTen's own reciprocal converges only for den in about [1, 500]. Here:
1. find the secret scale: bits b_i = [den >= t_i] for quarter-octave thresholds
   t_i = 2^(-8 + i/4), all in ONE batched comparison; e_i = b_i - b_(i+1)
   marks den in [t_i, t_(i+1)).
2. normalise: multiply [num, den] by the public integer g_i ~ 2^G / t_(i+1)
   picked by the one-hot (integer-encoded, so exact) and truncate by 2^G:
   y = den * g lands in about [2^-1/4, 1). The same round also applies the
   fallback for empty rows. Dens >= 2^12 first lose 12 bits by a plain
   truncation, so every pre-truncation value stays below 2^(17 + precision)
   (CrypTen's truncation fails with probability |value| / 2^64).
3. one minimax-linear initial guess r0 = c1 - c2 y (|1 - y r0| <= 7e-3) and
   two Goldschmidt steps (error 5e-5, then 2e-9; one step would leave a
   one-sided bias that accumulates over mean-shift iterations).
   1/den itself, too small for fixed point when den is large, is never formed.
A den below 2^-8 counts as empty: the caller's fallback value is kept. When
den is a count (flat kernel: a sum of 0/1 weights times integer counts) the
thresholds start at 2^-1 instead (``lo_exp=COUNT_EXP_LO``): below 1/2 is 0,
and the 28 thresholds below it would be wasted comparisons.
"""

from __future__ import annotations

import math

import numpy as np

from ._compat import import_crypten
from .fixedpoint import ge_zero

EXP_LO = -8                    # smallest normalised exponent
COUNT_EXP_LO = -1              # the same when den is an integer count
EMPTY_BELOW = 2.0 ** EXP_LO    # den below this is treated as an empty neighbourhood
STEPS_PER_OCTAVE = 4
G_BITS = 5                     # g_i rounded to integers of >= 5 bits (y range +-3%)
COARSE = 12                    # dens >= 2^12 are first divided by 2^12


def thresholds(max_den: float, lo_exp: int = EXP_LO) -> np.ndarray:
    """t_i = 2^(lo_exp + i/4) up to the first power of two above max_den."""
    hi = max(lo_exp + 1, int(math.ceil(math.log2(max(max_den, 1.0)))) + 1)
    n = (hi - lo_exp) * STEPS_PER_OCTAVE + 1
    return 2.0 ** (lo_exp + np.arange(n) / STEPS_PER_OCTAVE)


def _normaliser(max_den: float, lo_exp: int = EXP_LO) -> tuple[int, np.ndarray, float, float]:
    """Public constants: 2^big, integer g_i ~ 2^big / t_(i+1), and the minimax
    linear initial guess c1 - c2 y for 1/y over the y range these g_i give."""
    t = thresholds(max_den, lo_exp)
    pre = np.where((t[:-1] >= 2.0**COARSE) & (t[-1] > 2.0**COARSE), 2.0**-COARSE, 1.0)
    lo, hi = t[:-1] * pre, t[1:] * pre              # den range per bin after the coarse step
    big = int(math.ceil(math.log2(hi.max()))) + G_BITS
    ints = np.round(2.0**big / hi).astype(np.int64)
    g = ints / 2.0**big
    a, b = float(np.min(lo * g)), float(np.max(hi * g))
    c2 = 2.0 / (a * b + (a + b) ** 2 / 4.0)     # equioscillation of 1 - y (c1 - c2 y)
    return big, ints, c2 * (a + b), c2


def normaliser_inputs(den, max_den: float, lo_exp: int = EXP_LO):
    """den - t_i for every threshold: the values whose signs step 1 needs.
    Returned separately so the caller can batch this comparison with others."""
    import torch   # lazily: the plaintext twin imports this module for its constants

    t = torch.tensor(thresholds(max_den, lo_exp)[:-1], dtype=torch.float32)
    return den - t                                                    # (m, J)


def _pick(onehot, ints: np.ndarray):
    """sum_i onehot_i * ints_i; scale-1 shares times integers: exact, local."""
    import torch

    return (onehot * torch.tensor(ints, dtype=torch.long)).sum(dim=-1, keepdim=True)


def divide_with_bits(num, den, bits, fallback, max_den: float, precision_bits: int,
                     lo_exp: int = EXP_LO):
    """num (m, d) / den (m, 1) given bits = [den >= t_i] (m, J, scale 1) for
    t = thresholds(max_den, lo_exp); rows with den < 2^lo_exp get ``fallback`` (m, d)."""
    crypten = import_crypten()
    d = num.size(1)
    t = thresholds(max_den, lo_exp)
    onehot = crypten.cat([bits[:, :-1] - bits[:, 1:], bits[:, -1:]], dim=1)
    empty = 1 - bits[:, :1]
    x = crypten.cat([num, den], dim=1)
    if t[-1] > 2.0**COARSE:
        # rows with den >= 2^COARSE first lose COARSE bits (a plain truncation,
        # selected by an exact bit product), so the fine step below never sees
        # a value above 2^(COARSE + 5 + precision).
        at = (COARSE - lo_exp) * STEPS_PER_OCTAVE          # t[at] == 2^COARSE
        big_rows = bits[:, at:at + 1]
        x = x + big_rows * (x.div(2**COARSE) - x)
    big, ints, c1, c2 = _normaliser(max_den, lo_exp)
    mult = _pick(onehot, ints)
    # [num, den] * g and the empty-row fallback in one multiplication; the
    # integer factors are exact, one truncation by 2^big brings them back.
    x = crypten.cat([x, fallback], dim=1)
    x = (x * crypten.cat([mult.expand(-1, d + 1), (empty * 2**big).expand(-1, d)], dim=1)
         ).div(2**big)
    nd, kept = x[:, :d + 1], x[:, d + 1:]            # kept = fallback on empty rows, else 0

    y = nd[:, -1:]                                    # in [_A, 1), 0 on empty rows
    nd = nd * (c1 - c2 * y)                           # initial guess r0
    nd = nd * (2.0 - nd[:, -1:])                      # Goldschmidt: error e -> e^2
    q = nd[:, :d] * (2.0 - nd[:, -1:])                # and again: a bias of e^2 ~ 5e-5
    #                                                   would accumulate over iterations
    return q + kept


def secure_divide(num, den, fallback, max_den: float, precision_bits: int = 16,
                  lo_exp: int = EXP_LO):
    """num (m, d) / den (m, 1), row by row, as MPCTensors.

    Rows with den < 2^lo_exp return ``fallback`` (m, d). ``max_den`` is a public
    upper bound on den (e.g. the total weight N).
    """
    (bits,) = ge_zero(normaliser_inputs(den, max_den, lo_exp))
    return divide_with_bits(num, den, bits, fallback, max_den, precision_bits, lo_exp)
