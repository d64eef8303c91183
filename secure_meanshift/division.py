"""Secure division num / den for den anywhere in [2^-8, 2^24).

CrypTen's own reciprocal converges only for den in about [1, 500]. Here:
1. find the secret power of two: bits b_j = [den >= 2^j] for every j in one
   batched comparison; one-hot e_j = b_j - b_{j+1} marks den in [2^j, 2^(j+1));
2. normalise: g = sum_j e_j 2^-(j+1) puts den * g in [1/2, 1). g is applied as
   two factors g1 * g2 so that each stays representable in fixed point;
3. Goldschmidt iterations on (num * g, den * g) from the linear initial
   guess 2.9142 - 2 y for 1/y (relative error <= 0.086, squared by each step);
   1/den itself, too small for fixed point when den is large, is never formed.
A den below 2^-8 counts as empty: the caller's fallback value is kept.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._compat import import_crypten

EXP_LO = -8                    # smallest normalised exponent
EMPTY_BELOW = 2.0 ** EXP_LO    # den below this is treated as an empty neighbourhood
GOLDSCHMIDT_STEPS = 2   # relative error 0.086 -> 7e-3 -> 5e-5


def exponent_range(max_den: float) -> range:
    """Exponents j with thresholds 2^j covering [2^-8, max_den]."""
    hi = max(EXP_LO + 1, int(math.ceil(math.log2(max(max_den, 1.0)))) + 1)
    return range(EXP_LO, hi)


def _fixed_from_bits(onehot, consts: np.ndarray, precision_bits: int):
    """sum_j onehot_j * consts_j as a fixed-point MPCTensor.

    onehot is integer-encoded (scale 1), so multiplying it by the integers
    round(2^p * c_j) is exact; the sum is then re-labelled as scale 2^p.
    """
    crypten = import_crypten()
    from crypten.encoder import FixedPointEncoder

    ints = torch.tensor(np.round(consts * 2.0**precision_bits), dtype=torch.long)
    g = (onehot * ints).sum(dim=-1, keepdim=True)
    g.encoder = FixedPointEncoder(precision_bits=precision_bits)
    return g


def normaliser_inputs(den, max_den: float):
    """den - 2^j for every exponent j: the values whose signs step 1 needs.
    Returned separately so the caller can batch this comparison with others."""
    js = exponent_range(max_den)
    thresholds = torch.tensor([2.0**j for j in js], dtype=torch.float64).float()
    return den - thresholds                                    # (m, J)


def divide_with_bits(num, den, bits, fallback, max_den: float, precision_bits: int):
    """num (m, d) / den (m, 1) given bits = [den >= 2^j] (m, J, scale 1)."""
    js = exponent_range(max_den)
    onehot = _cat(bits[:, :-1] - bits[:, 1:], bits[:, -1:])   # bits are monotone in j
    e = np.array([j + 1 for j in js], dtype=np.int64)         # g = 2^-e
    e1 = np.ceil(e / 2).astype(np.int64)
    e2 = e - e1
    g1 = _fixed_from_bits(onehot, 2.0 ** (-e1.astype(float)), precision_bits)
    g2 = _fixed_from_bits(onehot, 2.0 ** (-e2.astype(float)), precision_bits)

    # Goldschmidt: multiply numerator and denominator by the same factors until
    # the denominator is 1; both ride in one tensor, so each step is one round.
    nd = _cat(num, den)
    nd = (nd * g1) * g2                                       # den column in [1/2, 1)
    nd = nd * (2.9142 - 2.0 * nd[:, -1:])                     # linear initial guess
    for _ in range(GOLDSCHMIDT_STEPS):
        nd = nd * (2.0 - nd[:, -1:])
    q = nd[:, :-1]

    empty = 1 - bits[:, :1]                                    # den < 2^-8, scale 1
    return q + empty * (fallback - q)


def secure_divide(num, den, fallback, max_den: float, precision_bits: int):
    """num (m, d) / den (m, 1), row by row, as MPCTensors.

    Rows with den < 2^-8 return ``fallback`` (m, d). ``max_den`` is a public
    upper bound on den (e.g. the total weight N).
    """
    bits = normaliser_inputs(den, max_den).ge(0.0)
    return divide_with_bits(num, den, bits, fallback, max_den, precision_bits)


def _cat(a, b):
    return import_crypten().cat([a, b], dim=1)
