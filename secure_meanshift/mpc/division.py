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
3. three Goldschmidt steps nd <- nd * (2 - y) from y in [2^-1/8, 2^1/8]
   (the normaliser aims at the geometric middle of each bin): |1 - y| <= 0.11,
   then 1.2e-2, 1.4e-4, 2e-8 (a smaller error would not show; a larger one
   is a one-sided bias that accumulates over mean-shift iterations). Every
   step is nd * (2 - y) with an integer 2, so with three or more parties each
   truncation's opening also serves as the next product's (_goldschmidt_openings):
   5 rounds instead of 8.
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

# torch and beaver load inside the functions: the plaintext twin imports
# EMPTY_BELOW from here, and the simulator's caller runs it without torch

EXP_LO = -8                    # smallest normalised exponent
COUNT_EXP_LO = -1              # the same when den is an integer count
EMPTY_BELOW = 2.0 ** EXP_LO    # den below this is treated as an empty neighbourhood
STEPS_PER_OCTAVE = 4
G_BITS = 5                     # g_i rounded to integers of >= 5 bits (y range +-3%)
GOLDSCHMIDT_STEPS = 3
COARSE = 12                    # dens >= 2^12 are first divided by 2^12


def thresholds(max_den: float, lo_exp: int = EXP_LO) -> np.ndarray:
    """t_i = 2^(lo_exp + i/4) up to the first power of two above max_den."""
    hi = max(lo_exp + 1, int(math.ceil(math.log2(max(max_den, 1.0)))) + 1)
    n = (hi - lo_exp) * STEPS_PER_OCTAVE + 1
    return 2.0 ** (lo_exp + np.arange(n) / STEPS_PER_OCTAVE)


def _normaliser(max_den: float, lo_exp: int = EXP_LO) -> tuple[int, np.ndarray, float]:
    """Public constants: 2^big, integer g_i ~ 2^big / sqrt(t_i t_(i+1)), and the
    largest |1 - y| over the bins (y = den g_i / 2^big)."""
    t = thresholds(max_den, lo_exp)
    pre = np.where((t[:-1] >= 2.0**COARSE) & (t[-1] > 2.0**COARSE), 2.0**-COARSE, 1.0)
    lo, hi = t[:-1] * pre, t[1:] * pre              # den range per bin after the coarse step
    big = int(math.ceil(math.log2(hi.max()))) + G_BITS
    ints = np.round(2.0**big / np.sqrt(lo * hi)).astype(np.int64)
    g = ints / 2.0**big
    return big, ints, float(max(np.max(np.abs(1 - lo * g)), np.max(np.abs(1 - hi * g))))


def normaliser_inputs(den, max_den: float, lo_exp: int = EXP_LO):
    """den - t_i for every threshold: the values whose signs step 1 needs.
    Returned separately so the caller can batch this comparison with others."""
    import torch

    t = torch.tensor(thresholds(max_den, lo_exp)[:-1], dtype=torch.float32)
    return den - t                                                    # (m, J)


def count_threshold_inputs(count, max_den: float) -> tuple:
    """For den an exact integer count (scale 1, flat kernel): count >= t_i
    <=> count >= ceil(t_i), so step 1 compares count - c_j on the distinct
    ceilings c_j only, on count_width(max_den) bits instead of the fixed-point
    den's (the same bits, an integer ring and ~1/3 of the bytes). Returns (the
    (m, J') values, the PUBLIC (J,) index that spreads their bits over every
    threshold of thresholds(max_den, COUNT_EXP_LO)[:-1])."""
    import torch

    ceil = np.ceil(thresholds(max_den, COUNT_EXP_LO)[:-1])
    distinct, index = np.unique(ceil, return_inverse=True)
    return count - torch.tensor(distinct, dtype=torch.long), torch.from_numpy(index)


def count_width(max_den: float) -> int:
    """PUBLIC width of count - c_j and of the count's range tests (count and
    floor(max_den) + 1 - count): integers in [-2^(l-1), 2^(l-1)) for a count in
    [0, max_den] and every ceiling c_j at most the top threshold."""
    top = max(float(thresholds(max_den, COUNT_EXP_LO)[-1]), math.floor(max_den) + 1.0)
    return int(math.ceil(top)).bit_length() + 1


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
    big, ints, _ = _normaliser(max_den, lo_exp)
    mult = _pick(onehot, ints)
    # [num, den] * g and the empty-row fallback in one multiplication; the
    # integer factors are exact, one truncation by 2^big brings them back.
    x = crypten.cat([x, fallback], dim=1)
    z = x * crypten.cat([mult.expand(-1, d + 1), (empty * 2**big).expand(-1, d)], dim=1)
    if crypten.comm.get().get_world_size() > 2:
        return _goldschmidt_openings(z, d, big)
    x = z.div(2**big)                                 # two parties: local truncations
    nd, kept = x[:, :d + 1], x[:, d + 1:]            # kept = fallback on empty rows, else 0
    for _ in range(GOLDSCHMIDT_STEPS - 1):            # y = nd[:, -1] -> 1, error e -> e^2
        nd = nd * (2.0 - nd[:, -1:])
    return nd[:, :d] * (2.0 - nd[:, -1:]) + kept


def _goldschmidt_openings(z, d: int, big: int):
    """The steps above for three or more parties, where every truncation is an
    opening. z (m, 2d+1) holds [num g, den g, fallback-or-0] * 2^big. Each
    truncation opens v + r once and leaves v // 2^s = E - t with E public
    (beaver.open_truncated); the next product nd (2 - y) is then, on shares,
    2 nd - (E E_y - E t_y - t E_y + u) with u = t t_y from the dealer, so it
    needs no opening of its own: GOLDSCHMIDT_STEPS products in one round each,
    plus the first truncation. Returns q (m, d) at z's scale."""
    from .beaver import open_truncated

    crypten = import_crypten()
    bits = int(round(math.log2(z.encoder.scale)))
    first = crypten.comm.get().get_rank() == 0      # adds the public terms
    width = d + 1
    E, t, u = open_truncated(z._tensor.share, 2**big, width)
    kept = (E[:, width:] if first else 0) - t[:, width:]
    E, t = E[:, :width], t[:, :width]
    for step in range(GOLDSCHMIDT_STEPS):
        ey, ty = E[:, d:d + 1], t[:, d:d + 1]
        nd_y = u - E * ty - t * ey + (E * ey if first else 0)        # nd * y, scale 2^2bits
        prod = ((E if first else 0) - t) * 2**(bits + 1) - nd_y       # nd * (2 - y)
        if step == GOLDSCHMIDT_STEPS - 1:
            E, t, _ = open_truncated(prod[:, :d].contiguous(), 2**bits, 0)
        else:
            E, t, u = open_truncated(prod, 2**bits, width)
    q = (E if first else 0) - t + kept
    return crypten.mpc.MPCTensor.from_shares(q, precision=bits)


def secure_divide(num, den, fallback, max_den: float, precision_bits: int = 16,
                  lo_exp: int = EXP_LO):
    """num (m, d) / den (m, 1), row by row, as MPCTensors.

    Rows with den < 2^lo_exp return ``fallback`` (m, d). ``max_den`` is a public
    upper bound on den (e.g. the total weight N).
    """
    (bits,) = ge_zero(normaliser_inputs(den, max_den, lo_exp))
    return divide_with_bits(num, den, bits, fallback, max_den, precision_bits, lo_exp)
