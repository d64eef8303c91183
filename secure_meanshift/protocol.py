"""The secure mean-shift protocol, run by every party inside an initialised
CrypTen session (see runtime.py for how a session is started).

Every step is one vectorised operation over all dusts and all points:

  share    each party secret-shares [x, |x|^2] (and [w x, w] for summaries)
  dust     C = X[dust rows]                       (public rows, local slicing)
  distance D = |c|^2 - 2 C X^T + |x|^2            (one Beaver matmul per chunk)
  kernel   K = flat(D) or gaussian(D)             (kernels.py)
  update   S = K [w x | w];  C' = S_x / S_w       (division.py)
  stop     per seed (on shares): still_i = still_i and |C'_i - C_i| > tol; a
           stopped seed keeps its place and intensity; reveal one bit: is any
           seed still moving                                  (not if oblivious)
  merge    "intensity" (default, scikit-learn's): greedy in decreasing kernel
           weight sum (ties: the lexicographically larger centre), drop a
           centroid within the radius of a kept one;
           "first": keep_i = no earlier centroid within the merge radius
  shuffle  every party applies a secret permutation, so position reveals nothing
  reveal   [keep * C, keep] to the ranks in reveal_to only

In the code (run_protocol): _share -> Shared (and the initial centroids);
_iterate_revealing / _iterate_oblivious, each iteration _one_pass (_chunk_sums,
_pass_tests) -> PassAnswers, then _stop_flags and _retry (default mode) and
_divide; _merge, _sizes_and_suppress, _reveal. Loop state: Iterate, Pending,
IterationLog.

What each party learns is listed in docs/leakage.md; every opening goes
through disclosure.disclose, which names its row there.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np
import torch

from .mpc._compat import import_crypten
from .mpc.beaver import (fixed_operand, lift, phase, prime_fixed, product_low, shuffle_rows,
                         square_and_matmul)
from .disclosure import disclose, record
from .mpc.division import (COUNT_EXP_LO, EXP_LO, count_threshold_inputs, count_width,
                           divide_with_bits, normaliser_inputs)
from .mpc.fixedpoint import BULK_BITS, ge_zero, rescale
from .kernels import EDGE_GRID_BITS, get_kernel
from .outcome import RunFigures
from .output import decode, export_share
from .params import MeanShiftParams, dust_indices, resolve_seeding
from .privacy import share_histogram, shared_grid_seeds
from .data import POINT_BITS, quantise_points
from .merge import INTENSITY_BITS, dominance_width, key_layout
from .seeds import local_peaks
from .binseeds import BIN_SEEDING, shared_bin_seeds, shared_occupancy

# Rows per Beaver matmul when fixed-point weights meet fixed-point points: the
# pre-truncation sum stays below 2^44, so CrypTen's probabilistic truncation
# fails with probability < 2^-20 per output element.
FIXED_MATMUL_ROWS = 4096

Progress = Callable[[dict], None]
RANGE_SLACK = 0.05          # centroids stay in the unit box; beyond this slack = corrupted
MAX_ARITHMETIC_RETRIES = 3
NARROW_SUMS_MIN_PAIRS = 1 << 16   # narrow weighted sums save >= ~0.8 MB a pass from here
SETTLE_MIN_PAIRS = 1 << 18        # a pass >= ~10 MB, ~40 ms: worth ~7 rounds an iteration
MERGE_TREE_UP_TO = 32      # more centroids: the merge's rounds by counts (O(m) bytes a round)


class ArithmeticFailure(RuntimeError):
    """CrypTen's probabilistic truncation failed more often than retries allow."""


def _check_range(terms) -> bool:
    """Open only whether any range test failed (a count, not a value)."""
    (bits,) = ge_zero(terms)
    return not _range_failed(bits)


def _range_failed(bits) -> bool:
    """Open only whether any of these range-test bits is 0 (a count, not a value)."""
    return bool(disclose((1 - bits).sum(), "failure-count").item() > 0.5)


@dataclass(kw_only=True)
class SecureResult(RunFigures):
    centroids: Optional[np.ndarray]   # (c, d) unit box; None unless this rank receives
    sizes: Optional[np.ndarray]
    merge_s: float = 0.0
    suppressed: Optional[int] = None  # receivers: centroids dropped by min_cluster_size
    share: Optional[dict] = None      # export_shares: this party's share (output.export_share)


def _exchange_sizes(comm, rows: int, points: int) -> tuple[list, list]:
    got = comm.all_gather(torch.tensor([rows, points], dtype=torch.long))
    return [int(t[0]) for t in got], [int(t[1]) for t in got]


def _share_rows(local: np.ndarray, rows: list, cols: int, rank: int):
    crypten = import_crypten()
    parts = []
    for src, n in enumerate(rows):
        data = torch.from_numpy(local).float() if src == rank else torch.zeros(n, cols)
        parts.append(crypten.cryptensor(data, src=src))
    return crypten.cat(parts, dim=0) if len(parts) > 1 else parts[0]


def _weighted_sums(k, u, exact_weights: bool):
    """K @ U, split by rows when both factors are fixed point (see FIXED_MATMUL_ROWS)."""
    if k.encoder.scale == 1 or k.size(1) <= FIXED_MATMUL_ROWS:
        return k.matmul(u)
    total = None
    for a in range(0, k.size(1), FIXED_MATMUL_ROWS):
        part = k[:, a:a + FIXED_MATMUL_ROWS].matmul(u[a:a + FIXED_MATMUL_ROWS])
        total = part if total is None else total + part
    return total


def _stop_update(c, div, den, still, intensity, tol: float, bits: int) -> tuple:
    """Per-seed stopping (scikit-learn's rule, on shares) in ONE elementwise
    product of integer views (scale 1: exact, no truncation): for the update
    div of the centroids c, with Delta = div - c at scale 2^P (P = bits),
        still * Delta, still * (den - intensity), Delta * Delta.
    Returns (new centroids c + still Delta, new intensities, move test T):
    a stopped seed keeps its place and its intensity (the weight sum of its
    last update), and T = |Delta|^2 - floor(tol^2 2^2P) - 1 - BIG (1 - still),
    whose sign says "still moving, by more than tol", for this update: BIG
    exceeds any |Delta|^2 of centroids in the box (the range test holds div
    there), so a stopped seed's T is negative whatever its update. T is
    labelled at 16 bits (same shares) for ge_zero. still None: every seed moves."""
    from crypten.encoder import FixedPointEncoder  # CrypTen: loaded late (start-up cost)

    crypten = import_crypten()
    d = c.size(1)
    di = _int_view(div - c)
    big = _box_sq_bound(d, bits) + 1
    # a tol beyond the box's diagonal stops every seed after its first update
    thr = min(math.floor(tol * tol * 4.0 ** bits), big) + 1
    if still is None:
        sq, new, inten = di * di, div, den
        t = sq.sum(dim=1, keepdim=True) - thr
    else:
        prod = crypten.cat([still] * (d + 1) + [di], dim=1) * \
            crypten.cat([di, _int_view(den - intensity), di], dim=1)
        moved, gained = prod[:, :d], prod[:, d:d + 1]
        moved.encoder, gained.encoder = c.encoder, intensity.encoder
        new, inten = c + moved, intensity + gained
        t = prod[:, d + 1:].sum(dim=1, keepdim=True) - (thr + big) + still * big
    t.encoder = FixedPointEncoder(precision_bits=BULK_BITS)
    return new, inten, t


def _box_sq_bound(d: int, bits: int) -> int:
    """|Delta|^2 at scale 2^2P of two centroids inside the box (RANGE_SLACK
    each side) is below this PUBLIC integer."""
    return math.ceil(d * (1.0 + 2 * RANGE_SLACK) ** 2 * 4.0 ** bits)


def move_width(d: int, bits: int, tol: float) -> Optional[int]:
    """A PUBLIC comparison width for _stop_update's T: |T| <= the box bound
    (BIG) + tol^2 2^2P + 2, at scale 2^2P."""
    box = d * (1.0 + 2 * RANGE_SLACK) ** 2
    return ring_width(box + min(tol * tol, box) + 1.0, 2 * bits)


def _keep_if_valid(new, old, den_bits):
    """Oblivious mode: new where the update passed its sanity tests (denominator
    in range, centroid inside the box), else old; one comparison, no opening."""
    crypten = import_crypten()
    m = new.size(0)
    (inside,) = ge_zero(crypten.cat([new + RANGE_SLACK, (1.0 + RANGE_SLACK) - new], dim=1))
    ok = _rows_all_zero(1 - crypten.cat([inside, den_bits[:m], den_bits[m:]], dim=1))
    return old + ok * (new - old)


def _pair_edge(c, radius: float) -> tuple:
    """(T (m, m), its PUBLIC width): T_ij = floor(r^2 2^2P) - |C_i - C_j|^2 on
    the centroids' integer encodings (P their bits), exact like _exact_edge (a
    product of integer views needs no truncation: before, the m x m products
    were truncated, one opening of 8 bytes per entry, 32 MB at m = 1,000 and
    3 parties), >= 0 iff the pair lies within the radius. Two centroids that
    pass the range test differ by at most 1 + 2 slack (and a unit) per
    coordinate, so T fits the width. T is labelled at 16 bits (same shares)."""
    from crypten.encoder import FixedPointEncoder  # CrypTen: loaded late (start-up cost)

    bits = int(round(math.log2(c.encoder.scale)))
    ci = _int_view(c)
    sq = (ci * ci).sum(dim=1, keepdim=True)
    t = ci.matmul(ci.t()) * 2 - sq - sq.t() + int(math.floor(radius * radius * 4.0 ** bits))
    t.encoder = FixedPointEncoder(precision_bits=BULK_BITS)
    return t, _exact_sq_width(c.size(1), radius * radius, 1.0 + 2 * RANGE_SLACK, bits)


def _merge_keep(c, radius: float):
    """The "first" rule: keep_i = 1 - [exists j < i: |c_i - c_j|^2 <= radius^2], on shares."""
    m = c.size(0)
    pair, width = _pair_edge(c, radius)
    (close,) = ge_zero(pair, bits=[width])                           # (m, m), scale 1
    earlier = torch.tril(torch.ones(m, m, dtype=torch.long), diagonal=-1)
    dups = (close * earlier).sum(dim=1, keepdim=True)
    return 1 - dups.gt(0)


def _upper(x, iu):
    """x's entries (i, j) with i < j (iu: torch.triu_indices(m, m, 1)) as a flat
    tensor of shares with x's scale: local."""
    return x[iu[0], iu[1]]


def _from_upper(v, iu, m: int):
    """(m, m) integer shares (scale 1) holding v at iu's entries (i < j) and a
    public 0 elsewhere: local."""
    crypten = import_crypten()
    share = torch.zeros(m, m, dtype=torch.long)
    share[iu[0], iu[1]] = v._tensor.share
    return crypten.mpc.MPCTensor.from_shares(share, precision=0)


def _rows_all_zero(b):
    """(m, n) 0/1 shares -> (m, 1) prod_j (1 - b_ij): log2(n) multiplication rounds,
    no comparison (0/1 values: duplicating a column leaves the product unchanged)."""
    crypten = import_crypten()
    v = 1 - b
    while v.size(1) > 1:
        if v.size(1) % 2:
            v = crypten.cat([v, v[:, :1]], dim=1)
        half = v.size(1) // 2
        v = v[:, :half] * v[:, half:]
    return v


def _merge_keep_intensity(c, intensity, radius: float, min_weight: float,
                          oblivious: bool = True, *, max_intensity: float):
    """scikit-learn's rule on shares. intensity (m, 1): each centroid's kernel
    weight sum, at most the public ``max_intensity``. dom_ij = j outranks i in
    scikit-learn's order (_dominance: higher intensity, then the lexicographically
    larger centre, the lower index last), A = dom * close, then rounds of
    keep_i = nonempty_i * [no j: A_ij keep_j]: after round t the t highest-ranked
    centroids are final, so m rounds give the greedy answer
    (merge.merge_keep_intensity). One batched comparison (m (m - 1) / 2 pairs:
    close is symmetric, dom antisymmetric), then for
    m <= MERGE_TREE_UP_TO m * (1 + log2 m) multiplication rounds and nothing
    opened; for more centroids _merge_rounds_by_counts."""
    m = c.size(0)
    # narrow widths from public bounds (ring_width): centroids in the box (range
    # tests), intensities at most max_intensity, the merge key's (merge.dominance_width)
    s = int(round(math.log2(intensity.encoder.scale)))
    sc = int(round(math.log2(c.encoder.scale)))
    pair, pair_width = _pair_edge(c, radius) if m >= 2 else (None, None)
    widths = [pair_width, dominance_width(sc, max_intensity, c.size(1)),
              ring_width(max_intensity + abs(min_weight) + 2, s)]
    if m < 2:
        (nonempty,) = ge_zero(intensity - min_weight, bits=widths[2:])
        return nonempty
    # one test per pair i < j: close is symmetric and dom antisymmetric (a strict order)
    iu = torch.triu_indices(m, m, offset=1)
    close, dom, nonempty = ge_zero(_upper(pair, iu),
                                   _upper(_dominance(c, intensity, max_intensity), iu),
                                   intensity - min_weight, bits=widths)
    # rounds by counts read A only through a narrow sign test: A modulo 2^w will do
    low = _count_low_bits(m) if m > MERGE_TREE_UP_TO else None
    both = product_low(close, dom, low) if low else None
    both = close * dom if both is None else both
    a_up = _from_upper(both, iu, m)                 # A_ij, i < j: close and j outranks i
    a = a_up + (_from_upper(close, iu, m) - a_up).t()   # A_ji = close_ij (1 - dom_ij)
    if low:
        return _merge_rounds_by_counts(a, nonempty, oblivious, low)
    keep = nonempty
    for _ in range(m):       # a fixed, public number of rounds
        keep = nonempty * _rows_all_zero(a * keep.reshape(1, m))
    return keep


def _dominance(c, intensity, max_intensity: float):
    """(m, m) shares whose sign is dom_ij, from local work only: the merge key
    K = I 2^(kS) + sum_t C_t 2^((k-1-t)S) (merge.key_layout) of the exact
    encodings I (intensity) and C_t (coordinate t), and 2 (K_j - K_i) + t_ij with
    t_ij = +1 if j < i else -1: >= 0 iff K_j > K_i, or K_j = K_i and j < i. The
    order (K, -index) is strict and transitive on the encodings the parties hold,
    so the greedy rounds have one answer. (A tie band wider than one unit, like
    an earlier twin's, is not transitive: with fixed-point noise it made cycles
    5 > 0 > 2 > 5 among copies of one mode, and all of them were kept.)
    The key is a ring integer below 2^61 by the layout; the result is labelled
    with the bulk scale (shares unchanged) so ge_zero compares it as it is."""
    from crypten.encoder import FixedPointEncoder

    m = c.size(0)
    bits = int(round(math.log2(c.encoder.scale)))
    digit, k = key_layout(bits, max_intensity, c.size(1))
    key = _int_view(rescale(intensity, INTENSITY_BITS))
    for t in range(k):
        key = key * (1 << digit) + _int_view(c[:, t:t + 1])
    j_lt_i = torch.tril(torch.ones(m, m, dtype=torch.long), diagonal=-1)
    diff = (key.reshape(1, m) - key.reshape(m, 1)) * 2 + (2 * j_lt_i - 1)
    diff.encoder = FixedPointEncoder(precision_bits=BULK_BITS)
    return diff


def _count_low_bits(m: int) -> int:
    """The width, in whole bytes, of the merge's counts modulo which A and its
    products are computed: at least the rounds' sign-test width."""
    return -(-_merge_count_width(m) // 8) * 8


def _merge_count_width(m: int) -> int:
    """A PUBLIC width for the merge rounds' counts, integers in [-(2m + 2), 2m + 2]."""
    return (2 * m + 2).bit_length() + 2


def _merge_rounds_by_counts(a, nonempty, oblivious: bool, low: Optional[int] = None):
    """The greedy rounds for many centroids (seeding "points": m = N), in O(m)
    bytes a round instead of O(m^2): A is a fixed operand (its mask is opened
    once), so s = A keep costs one opening of m values, and
    keep_i = [s_i + (m + 1)(1 - nonempty_i) <= 0] one sign test.

    The map is antitone and starts at its maximum (nonempty), so the rounds
    alternate: keep_t - keep_(t+1) is >= 0 for even t and <= 0 for odd t, and
    the number of changed entries is the linear (-1)^t sum(keep_t - keep_(t+1)).
    Once it is 0 the unique greedy answer is reached. Outside oblivious mode
    that count's zero-test is opened at rounds 2, 4, 8, ...: the parties learn
    the merge depth rounded up to a power of two (docs/leakage.md), and the
    merge ends after a few rounds instead of m."""
    m = a.size(0)
    at = fixed_operand(a.t(), low)                # (keep^T A^T)^T = A keep, modulo 2^low
    blocked = (m + 1) * (1 - nonempty)            # an empty centroid is never kept
    keep, prev = nonempty, None
    check = 2
    for t in range(m):
        s = keep.reshape(1, m).matmul(at).reshape(m, 1) + blocked
        parts = [-s]
        probe = not oblivious and t >= check     # t >= 2: prev is round t - 1
        if probe:      # did round t change anything? (sign of t known, see above)
            sign = 1 if (t - 1) % 2 == 0 else -1
            parts.append((prev - keep).sum().reshape(1) * sign - 1)
        # integers in [-(2m + 2), 2m + 2]: a narrow sign test (fewer rounds)
        got = ge_zero(*parts, bits=[_merge_count_width(m)] * len(parts))
        prev, keep = keep, got[0]
        if probe:
            check *= 2
            if not bool(disclose(got[1], "merge-depth").item() > 0.5):
                return prev          # = keep: the fixed point, the greedy answer
    return keep


def _int_view(x):
    """The same shares read as integers (scale 1): x's fixed-point encoding itself."""
    from crypten.encoder import FixedPointEncoder  # CrypTen: loaded late (start-up cost)

    y = x.clone()
    y.encoder = FixedPointEncoder(precision_bits=0)
    return y


def _share_int_column(values: np.ndarray, rows: list, rank: int):
    """(N, 1) integer shares (scale 1) of each owner's int64 column, in rank order."""
    crypten = import_crypten()
    parts = []
    for src, n in enumerate(rows):
        data = (torch.from_numpy(np.asarray(values, np.int64)).reshape(-1, 1) if src == rank
                else torch.zeros(n, 1, dtype=torch.long))
        parts.append(crypten.cryptensor(data, src=src, precision=0))
    return crypten.cat(parts, dim=0) if len(parts) > 1 else parts[0]


def _on_grid(c, bits: int):
    """c (m, d) at 2^bits, rounded exactly to the edge test's grid
    (kernels.EDGE_GRID_BITS): integer shares (scale 1) of floor(C / s + 1/2),
    s = 2^(bits - EDGE_GRID_BITS), kernels.on_edge_grid on shares. The
    truncation t of C + s/2 by s is off by at most one unit (probabilistic:
    local at two parties, one masked opening at three or more); dev = s t -
    (C + s/2) is in (-s, 0] exactly when t is right, so one narrow sign test
    on both sides, every row at once, says which way to fix it."""
    t, tests, widths = _grid_tests(c, bits)
    if not tests:
        return t
    high, low = ge_zero(*tests, bits=widths)
    return _grid_fix(t, high, low)


def _grid_tests(c, bits: int) -> tuple:
    """_on_grid up to its sign test: (t, the two tests, their PUBLIC widths),
    for a caller that batches the tests with its own (_settle)."""
    s = 2 ** (bits - EDGE_GRID_BITS)
    if s == 1:
        return _int_view(c), [], []
    half = _int_view(c) + s // 2
    t = half.div(s)
    dev = t * s - half                          # in (-2s, s]
    width = (2 * s).bit_length() + 1
    return t, [dev - 1, -dev - s], [width, width]


def _grid_fix(t, high, low):
    """t one unit down where it was too high, one up where too low."""
    return t - high + low


def _exact_edge(c, xi_t, xx, radius2: float, bits: int):
    """r^2 - |c - x|^2 >= 0, decided exactly on the integer encodings: with
    c = C 2^-P (P = bits) and x = X 2^-16, at scale 2^(2P)
        T = floor(r^2 2^2P) - C.C + 2^(P-15) C.X - 2^(2P-32) X.X
    is an exact ring integer (no truncation: a secret times an integer view needs
    none) of magnitude < d 2^(2P+2), and its sign is exactly the flat kernel's
    test for the centroid the parties hold (the protocol's: c on the edge
    grid, P = 16, _on_grid). C.C and C.X share one opening.
    C.X enters T alone, times 2^(P-15), and T only the next sign test: its
    product is folded into that test's mask (square_and_matmul's fold: the
    dealer's correction of C.X, 5 MB an iteration at 1,000 points, is not sent).
    Returns T relabelled at 16 bits (same shares, same sign) for ge_zero, right
    only as that test's input."""
    from crypten.encoder import FixedPointEncoder  # CrypTen: loaded late (start-up cost)

    cx_scale = 2 ** (bits - 15)        # C.X's coefficient in T: also the fold's
    sq, cx = square_and_matmul(_int_view(c), xi_t, fold=cx_scale)   # C*C, C.X (m, n)
    cc = sq.sum(dim=1, keepdim=True)
    r = int(math.floor(radius2 * 2.0 ** (2 * bits)))
    t = cx * cx_scale - cc - xx * (2 ** (2 * bits - 32)) + r
    t.encoder = FixedPointEncoder(precision_bits=BULK_BITS)
    return t


def ring_width(bound: float, scale_bits: int) -> Optional[int]:
    """A PUBLIC comparison width l (signtest.py): every ring integer v with
    |v| <= bound 2^scale_bits (plus a few units of rounding) lies in
    [-2^(l-1), 2^(l-1)), with one bit of margin; None (the whole ring) if that
    needs 64 bits or more. A value whose arithmetic failed (a truncation wrap)
    has a meaningless sign at any width: the range tests catch those."""
    width = (math.ceil(bound * 2.0 ** scale_bits) + 16).bit_length() + 2
    return width if width < 64 else None


def edge_width(d: int, radius2: float, bits: int) -> Optional[int]:
    """The narrowest PUBLIC width l with _exact_edge's T in [-2^(l-1), 2^(l-1))
    for every centroid the range test lets through: T = floor(r^2 2^2P) -
    |C - 2^(P-16) X|^2 is an exact integer (no rounding to allow for), each
    coordinate of c lies in [-slack, 1 + slack] (give or take the test's
    constant, one unit 2^-P) and of x in [0, 1], so -2^2P d (1 + slack +
    2^-P)^2 <= T <= 2^2P r^2. None (the whole ring) if that needs 64 bits or
    more. A centroid outside the box makes T meaningless anyway, and the range
    test, on the whole ring, sends that pass to a retry. (A bit narrower than
    ring_width's bound: at d = 2, 35 bits on the edge grid's 2^-16, 43 at
    2^-20.)"""
    return _exact_sq_width(d, radius2, 1.0 + RANGE_SLACK, bits)


def _exact_sq_width(d: int, radius2: float, span: float, bits: int) -> Optional[int]:
    """The narrowest PUBLIC width of an exact T = floor(r^2 2^2P) - |Delta|^2
    (integer encodings at 2^-P, no rounding to allow for) when each of Delta's
    d coordinates lies within span plus one unit: -2^2P d (span + 2^-P)^2 <= T
    <= 2^2P r^2. None (the whole ring) if that needs 64 bits or more."""
    far = d * (span + 2.0 ** -bits) ** 2
    width = math.ceil(max(radius2, far) * 4.0 ** bits).bit_length() + 1
    return width if width < 64 else None


def _initial_centroids(pts, unit_points, weights, rank: int, world: int,
                       total_rows: int, p: MeanShiftParams) -> tuple:
    """(m, d) initial centroids at p.precision_bits: the dusts (public rows of the
    shared points), then every party's binned local peaks (seeds.py), each
    secret-shared by its owner; m = p.n_seeds(world, N) is public. With
    seeding "points" every shared row is a seed. Returns (c, c on the edge grid
    or None): seeds that are rows of the shared points (seeding "points", or
    dusts only) lie on the points' 2^-16 grid already, so their rounding is
    their integer view, exact without a test (the first pass then skips
    _on_grid, and shares its phase with every later pass of a settled loop)."""
    crypten = import_crypten()
    if p.seeding == "points":
        return rescale(pts, p.precision_bits), _int_view(pts)
    if p.seeding == BIN_SEEDING:      # every candidate bin, public (binseeds.py)
        return rescale(shared_bin_seeds(p), p.precision_bits), None
    parts = []
    if p.uses_dust:
        idx = torch.from_numpy(dust_indices(p.seed, total_rows, p.n_dust))
        parts.append(pts[idx])
    if p.uses_bins:
        k = p.seeds_per_party
        mine = local_peaks(unit_points, weights, p.h_unit, k)
        parts.append(_share_rows(mine, [k] * world, mine.shape[1], rank))
    c = crypten.cat(parts, dim=0) if len(parts) > 1 else parts[0]
    grid = None if p.uses_bins else _int_view(c)
    return rescale(c, p.precision_bits), grid   # centroids live at the higher precision


def _shuffle(y, world_size: int):
    """Apply each party's secret random permutation in turn: no single party
    (nor the receiver) can link an output row to a dust index."""
    crypten = import_crypten()
    m = y.size(0)
    for src in range(world_size):
        mine = src == crypten.comm.get().get_rank()
        perm = None
        if mine:
            local = crypten.generators["local"][torch.device("cpu")]   # a CSPRNG stream
            perm = local.permutation(m)
        got = shuffle_rows(y, src, perm)     # the dealer's permutation mask: O(m) bytes
        if got is not None:
            y = got
            continue
        if mine:
            mat = torch.eye(m, dtype=torch.long)[torch.from_numpy(perm)]
        else:
            mat = torch.zeros(m, m, dtype=torch.long)
        p = crypten.cryptensor(mat, src=src, precision=0)   # integer permutation matrix
        y = p.matmul(y)
    return y


# ---- the protocol's state, in typed records ----------------------------------
@dataclass
class Shared:
    """What step "share" fixes for the whole job: sizes, the shared points and
    the operands every pass reuses. Everything but the tensors is public."""
    p: MeanShiftParams            # the agreed parameters, seeding resolved
    rank: int
    world: int
    rows: list                    # rows each party shares (public)
    total_points: int             # raw points over all parties (public)
    x: np.ndarray                 # this party's points exactly as the shares hold them
    shift: int                    # public power-of-two rescaling of the weights
    max_den: float                # public bound of a kernel weight sum
    pts: object                   # (N, d) shared points
    sqn: object                   # (N, 1) shared |x|^2
    upd: object                   # what the kernel weights sum: pts, or [w x | w]
    bounds: list = field(default_factory=list)      # row chunks [(a, b)]
    right: list = field(default_factory=list)       # per chunk: distance operand
    upd_chunks: list = field(default_factory=list)  # per chunk: update operand
    xx: object = None             # (1, N) exact |X|^2 (exact flat edge only)
    occupied: object = None       # seeding "sklearn-bins": (m, 1) 0/1 [bin count >= min_bin_freq]

    @property
    def d(self) -> int:
        return self.x.shape[1]

    @property
    def total_rows(self) -> int:
        return sum(self.rows)

    @property
    def pairs(self) -> int:
        """(centroid, point) pairs of one pass: the PUBLIC size rules go by it."""
        return self.p.n_seeds(self.world, self.total_rows) * self.total_rows

    @property
    def weighted(self) -> bool:
        return self.p.summary is not None

    @property
    def kernel(self):
        return get_kernel(self.p.kernel)

    @property
    def flat(self) -> bool:
        """A sign-test kernel: its edge test is batched with the pending tests."""
        return self.kernel.edge is not None

    @property
    def exact_edge(self) -> bool:
        return self.kernel.radius2 is not None

    @property
    def update_in_kernel(self) -> bool:
        """The flat kernel's weighted sums from its sign test's conversion and a
        dealer correlation (fixedpoint.ge_zero's ``times``): m N cols
        elements of W from the dealer to one party, and K's own shares at the
        sums' width, instead of a Beaver opening of m N elements on each of the
        world (world - 1) directed links (K's shares then whole). Public rule:
        whichever sends fewer bits per (centroid, point) pair; with the sums
        at 28 bits that is every world at d = 2 (two parties: 84 bits against 120)."""
        if not self.flat:
            return False
        k = 64 if self.sum_bits is None else self.sum_bits
        return (self.upd.size(1) + 1) * k < self.world * (self.world - 1) * k + 64

    @property
    def settles(self) -> bool:
        """PUBLIC rule: settle each update at once (_iterate_settled) when a
        pass is large: from SETTLE_MIN_PAIRS (centroid, point) pairs a pass
        costs more than the ~7 rounds an iteration gains. Default mode only
        (oblivious mode has no stop test)."""
        return not self.p.oblivious and self.pairs >= SETTLE_MIN_PAIRS

    @property
    def edge_bits(self) -> Optional[int]:
        """The exact edge test's comparison width (edge_width), None: the ring."""
        return edge_width(self.d, self.kernel.radius2(self.p), EDGE_GRID_BITS) \
            if self.exact_edge else None

    @property
    def sum_bits(self) -> Optional[int]:
        """PUBLIC width at which the flat kernel's weighted sums are computed
        (None: the whole ring): the update operand is a narrow fixed operand,
        so W = rho B (or the Beaver opening of K) and K's shares travel at
        this width, and beaver.lift brings the sums back to the ring in one
        opening. A sum of k u over the points lies in [0, B 2^16], B the
        weight bound max(max_den, rows), since every coordinate of a point is
        in [0, 1] (the unit box, as the edge test's width assumes) and k is
        0/1; lift needs it below 2^(bits-2): 28 bits at 1,000 points. Not in
        DP mode, nor below NARROW_SUMS_MIN_PAIRS (centroid, point) pairs, where
        the lift's round costs more than the bytes it saves (the dust job)."""
        if not self.flat or self.p.dp or self.pairs < NARROW_SUMS_MIN_PAIRS:
            return None
        top = math.ceil(max(self.max_den, self.total_rows) * 2.0 ** BULK_BITS)
        w = top.bit_length() + 2
        return None if w > 62 else w

    @property
    def den_width(self) -> Optional[int]:
        """PUBLIC comparison width of the division's den - t_i and of den's
        range test: den in [0, max_den] and every threshold t_i below
        4 max_den (division.thresholds), at 2^P."""
        return ring_width(4.0 * max(self.max_den, 1.0) + 4.0, self.p.precision_bits)

    @property
    def distance_bits(self) -> Optional[int]:
        """PUBLIC width modulo which _exact_edge needs C.X: the edge test reads
        T (edge_bits) only, and C.X enters T times 2^(G-15), G the grid's bits."""
        e = self.edge_bits
        return None if e is None else max(2, e - (EDGE_GRID_BITS - 15))

    @property
    def lo_exp(self) -> int:
        # flat weights are 0/1 and counts integers: den is an integer count
        return COUNT_EXP_LO if self.flat and self.shift == 0 else EXP_LO


@dataclass
class Pending:
    """Sign tests of the last update, answered inside the next pass's first
    comparison: ``range`` (every centroid inside the box: catches CrypTen's
    rare truncation failures) and ``move`` (per seed: did its last update move
    it by more than tol; not in oblivious mode)."""
    range: object = None
    move: object = None

    def items(self) -> list:
        return [(n, t) for n, t in (("range", self.range), ("move", self.move))
                if t is not None]

    def widths(self, d: int, bits: int, tol: float) -> list:
        """Per item, its PUBLIC comparison width (ge_zero's ``bits``): the range
        test on the whole ring (it must catch wrapped values), the move test
        narrow (move_width)."""
        return [move_width(d, bits, tol) if n == "move" else None for n, _ in self.items()]

    def phase_key(self) -> tuple:
        """Every pass of the same shape draws the same correlated values."""
        return ("pass", tuple(sorted((n, tuple(t.size())) for n, t in self.items())))


@dataclass
class PassAnswers:
    """One pass's weighted sums and the bits of its batched sign tests (0/1 shares)."""
    num: object                   # (m, d) sum of k * x (or k * w x)
    den: object                   # (m, 1) kernel weight sums
    thr: object                   # the division's threshold bits
    den_ok: object                # denominator in range (2m, 1)
    range_ok: object = None       # the last update inside the box (Pending.range)
    still: object = None          # (m, 1) seeds still iterating (None: all)
    moving: object = None         # any seed still iterating: the stop bit, not yet opened


@dataclass
class IterationLog:
    """Seconds spent in one iteration's parts (SecureResult.per_iteration)."""
    distance_s: float = 0.0
    kernel_s: float = 0.0
    update_s: float = 0.0
    merge_s: float = 0.0
    total_s: float = 0.0
    started: float = field(default_factory=time.perf_counter, repr=False)
    tail: float = field(default=0.0, repr=False)   # when the post-chunk work began

    def finish(self) -> None:
        now = time.perf_counter()
        self.update_s += now - self.tail
        self.total_s = now - self.started

    def as_dict(self) -> dict:
        return {"distance_s": self.distance_s, "kernel_s": self.kernel_s,
                "update_s": self.update_s, "merge_s": self.merge_s, "total_s": self.total_s}


@dataclass
class Iterate:
    """The loop's state: the centroids (and the previous ones, to undo a
    corrupted update), counters, pending tests and timings."""
    c: object
    c_prev: object = None
    active: object = None         # (m, 1) 0/1 shares: seeds not yet stopped (None: all)
    intensity: object = None      # (m, 1) each seed's weight sum at its last update
    iterations: int = 0
    passes: int = 0               # _one_pass calls (retries included)
    grid: object = None           # c on the edge grid when known (_settle, _initial_centroids)
    failures: int = 0
    pending: Pending = field(default_factory=Pending)
    log: list = field(default_factory=list)       # IterationLog per iteration


def _stage(name: str) -> None:
    """Charge the bytes and rounds that follow to protocol step ``name``."""
    import_crypten().comm.get().set_step(name)


# ---- step "share" -------------------------------------------------------------
def _local_columns(x: np.ndarray, weights, p: MeanShiftParams, total_rows: int,
                   total_points: int) -> tuple:
    """This party's columns to share [x, |x|^2 (, w x, w)], the public weight
    shift and the public bound of a weight sum."""
    sq = (x * x).sum(1, keepdims=True)
    if p.summary is None:
        return np.concatenate([x, sq], axis=1), 0, float(total_points)
    # Gaussian weights are fixed point: keep sum(k w) small (see FIXED_MATMUL_ROWS)
    # by a public power-of-two rescaling of the counts; the ratio is unchanged.
    shift = 0 if p.kernel == "flat" else max(0, int(math.floor(
        math.log2(max(1.0, total_points / max(1, total_rows))))))
    w = np.asarray(weights, float).reshape(-1, 1) / 2.0**shift
    return np.concatenate([x, sq, w * x, w], axis=1), shift, total_points / 2.0**shift


def _share(unit_points: np.ndarray, weights, params: MeanShiftParams,
           original_points: int, notify: Progress) -> tuple:
    """Exchange sizes, resolve the seeding, secret-share every party's columns
    and draw the initial centroids. Returns (Shared, initial centroids, those
    on the edge grid or None: _initial_centroids).
    The "sizes" event (public: the total rows and the number of seeds) comes
    before anything is shared, so a party's limits can stop the job there."""
    comm = import_crypten().comm.get()
    rank, world = comm.get_rank(), comm.get_world_size()
    if params.dp:
        return _share_dp(unit_points, weights, params, rank, world, notify)
    rows, points = _exchange_sizes(comm, len(unit_points), original_points)
    total_rows, total_points = sum(rows), sum(points)
    p = replace(params, seeding=resolve_seeding(params.seeding, total_points, params.summary,
                                                       params))
    p.check_world(world, total_rows)
    notify({"stage": "sizes", "rows": total_rows, "seeds": p.n_seeds(world, total_rows),
            "seeding": p.seeding})
    x = quantise_points(unit_points)      # exactly what the shares hold (2^-16 grid)
    local, shift, max_den = _local_columns(x, weights, p, total_rows, total_points)
    shared = _share_rows(local, rows, local.shape[1], rank)
    d = x.shape[1]
    pts = shared[:, :d]
    sh = Shared(p, rank, world, rows, total_points, x, shift, max_den, pts,
                shared[:, d:d + 1], shared[:, d + 1:] if p.summary is not None else pts)
    c, grid = _initial_centroids(pts, x, weights, rank, world, total_rows, p)
    grid = grid if sh.exact_edge else None
    if p.seeding == BIN_SEEDING:
        sh.occupied = shared_occupancy(x, weights, p, rank, world)
    _fixed_operands(sh)
    return sh, c, grid


def _share_dp(cells: np.ndarray, counts: np.ndarray, params: MeanShiftParams, rank: int,
              world: int, notify: Progress) -> tuple:
    """DP mode: the parties' noisy histograms on the public grid, joined and clamped
    on shares (privacy.share_histogram); the public cells count as rank 0's rows,
    the seeds are the public grid's. Nothing about any party's size is exchanged."""
    notify({"stage": "sizes", "seeds": params.n_seeds(world, 0), "seeding": params.seeding})
    h = share_histogram(cells, counts, params, rank, world)
    sh = Shared(h.params, rank, world, [len(h.x)], h.total, h.x, 0, float(max(1, h.total)),
                h.pts, h.sqn, h.upd)
    c = rescale(shared_grid_seeds(h.params), h.params.precision_bits)
    _fixed_operands(sh)
    return sh, c, None


def _fixed_operands(sh: Shared) -> None:
    """Chunk the rows and fix the operands every pass reuses: the points are the
    same every iteration, so their Beaver masks are opened once."""
    pts = sh.pts
    if sh.exact_edge:       # |X|^2 of the integer encodings, exact (for _exact_edge)
        xint = np.round(sh.x * 2.0**POINT_BITS).astype(np.int64)
        sh.xx = _share_int_column((xint * xint).sum(1), sh.rows, sh.rank).t()    # (1, N)
        pts = _int_view(sh.pts)
    m = sh.p.n_seeds(sh.world, sh.total_rows)
    chunk = max(FIXED_MATMUL_ROWS, sh.p.chunk_elements // m)
    n = sh.total_rows
    sh.bounds = [(a, min(a + chunk, n)) for a in range(0, n, chunk)]
    sh.right = [fixed_operand(pts[a:b].t(), bits=sh.distance_bits) for a, b in sh.bounds]
    sh.upd_chunks = [fixed_operand(sh.upd[a:b], bits=sh.sum_bits) for a, b in sh.bounds]
    prime_fixed(*sh.right, *sh.upd_chunks)


# ---- one pass: distance, kernel, update over the chunks; the batched tests ----
def _chunk_sums(sh: Shared, c, pending: Pending, it: IterationLog, iteration: int,
                notify: Progress, grid=None) -> tuple:
    """Distances, kernel weights and weighted sums over every chunk. A flat
    kernel's edge test also answers the pending tests (first chunk).
    Returns (sums, den or None if weighted, {pending name: bits})."""
    p, kernel, flat = sh.p, sh.kernel, sh.flat
    if sh.exact_edge:
        _stage("kernel")                         # the edge test's centroids (kernels.py)
        cg = _on_grid(c, p.precision_bits) if grid is None else grid
    else:
        c16 = rescale(c, BULK_BITS)
        cc = (c16 * c16).sum(dim=1, keepdim=True)
    sums = den = None
    answered: dict = {}
    for ci, (a, b) in enumerate(sh.bounds):
        ta = time.perf_counter()
        _stage("distance")
        if sh.exact_edge:
            edge = _exact_edge(cg, sh.right[ci], sh.xx[:, a:b], kernel.radius2(p),
                               EDGE_GRID_BITS)
        else:
            dist = cc - 2.0 * c16.matmul(sh.right[ci]) + sh.sqn[a:b].t()
            edge = kernel.edge(dist, p) if flat else None
        tb = time.perf_counter()
        _stage("kernel")
        if flat:
            asked = pending.items() if ci == 0 else []
            tests = [edge, *[t for _, t in asked]]
            widths = [sh.edge_bits if sh.exact_edge else None] + pending.widths(
                sh.d, p.precision_bits, p.tol_unit)[:len(asked)]
            if sh.update_in_kernel:
                (k, *rest), s = ge_zero(*tests, bits=widths, times=sh.upd_chunks[ci])
            else:
                k, *rest = ge_zero(*tests, bits=widths)
            answered.update(zip([n for n, _ in asked], rest))
        else:
            k = kernel.secure(dist, p)
        tc = time.perf_counter()
        _stage("update")
        if not (flat and sh.update_in_kernel):
            s = _weighted_sums(k, sh.upd_chunks[ci], True)
        sums = s if sums is None else sums + s
        if not sh.weighted:
            ks = k.sum(dim=1, keepdim=True)
            den = ks if den is None else den + ks
        it.distance_s += tb - ta
        it.kernel_s += tc - tb
        it.update_s += time.perf_counter() - tc
        if len(sh.bounds) > 1:
            notify({"stage": "chunk", "iteration": iteration + 1, "chunk": ci + 1,
                    "chunks": len(sh.bounds)})
    if sh.sum_bits is not None:
        sums, den = _lift_sums(sums, den, sh.sum_bits)
    return sums, den, answered


def _lift_sums(sums, den, bits: int) -> tuple:
    """The narrow weighted sums (and counts) on the whole ring, in one opening
    (beaver.lift)."""
    if den is None:
        return lift(sums, bits), None
    crypten = import_crypten()
    cols = sums.size(1)
    both = lift(crypten.cat([_int_view(sums), _int_view(den)], dim=1), bits)
    s, d = both[:, :cols], both[:, cols:]
    s.encoder, d.encoder = sums.encoder, den.encoder
    return s, d


def _pass_tests(sh: Shared, sums, den, pending: Pending, answered: dict,
                active) -> PassAnswers:
    """Rescale the sums and answer, in one comparison, the division's threshold
    and range tests plus the pending tests not answered yet (smooth kernels),
    and the stop test on the seeds still iterating (flat kernel: its pending
    tests were answered by the edge test; smooth kernels: one more narrow test).
    The move test's bits are the seeds still iterating (_stop_update: a seed
    stopped before never passes it); without one, ``active`` (None: all)."""
    crypten = import_crypten()
    hi = sh.p.precision_bits
    _stage("update")
    sums = rescale(sums, hi)
    num, den = (sums[:, :sh.d], sums[:, sh.d:]) if sh.weighted else (sums, den)
    # flat kernel, unit weights: den is the exact integer count of the kernel
    # bits (scale 1), compared as an integer (division.count_threshold_inputs)
    count = den if sh.lo_exp == COUNT_EXP_LO and den.encoder.scale == 1 else None
    den = rescale(den, hi)
    _stage("division")
    spread = None
    if count is not None:
        thr, spread = count_threshold_inputs(count, sh.max_den)
        tests = [thr, crypten.cat([count, (math.floor(sh.max_den) + 1) - count])]
        widths: list = [count_width(sh.max_den)] * 2
    else:
        tests = [normaliser_inputs(den, sh.max_den, sh.lo_exp),
                 crypten.cat([den + 0.5, (sh.max_den + 1.0) - den])]
        # den - t_i narrow: a den out of range fails den's own test, on the whole
        # ring unless den is an exact lifted sum (flat kernel), which cannot wrap
        narrow = sh.den_width
        widths = [narrow, narrow if sh.sum_bits is not None else None]
    still = None
    if sh.flat and "move" in answered:
        still = answered["move"]
        tests.append(still.sum().reshape(1) - 1)
        widths.append(_count_width(still.size(0)))
    if not sh.flat:
        tests += [t for _, t in pending.items()]
        widths += pending.widths(sh.d, hi, sh.p.tol_unit)
    bits = ge_zero(*tests, bits=widths)
    thr_bits = bits[0] if spread is None else bits[0].index_select(1, spread)
    ans = PassAnswers(num, den, thr_bits, bits[1])
    answers = answered if sh.flat else dict(zip([n for n, _ in pending.items()], bits[2:]))
    if sh.flat and still is not None:
        ans.moving = bits[2]
    elif "move" in answers:
        still = answers["move"]
        (ans.moving,) = ge_zero(still.sum().reshape(1) - 1,
                                bits=[_count_width(still.size(0))])
    ans.range_ok = answers.get("range")
    ans.still = active if still is None else still
    return ans


def _count_width(m: int) -> int:
    """A PUBLIC width for a count of m 0/1 values minus 1 (in [-1, m])."""
    return (m + 1).bit_length() + 2


def _one_pass(sh: Shared, st: Iterate, it: IterationLog, notify: Progress) -> PassAnswers:
    """One pass over the shared points for the centroids st.c (step "one pass")."""
    st.passes += 1
    # a pass that rounds c to the edge grid itself draws more than one given it
    with phase((*st.pending.phase_key(), st.grid is None)):
        sums, den, answered = _chunk_sums(sh, st.c, st.pending, it, st.iterations, notify,
                                          st.grid)
        it.tail = time.perf_counter()
        return _pass_tests(sh, sums, den, st.pending, answered, st.active)


# ---- stop or retry; divide and update ----------------------------------------
def _stop_flags(ans: PassAnswers) -> tuple:
    """Open the failure count [and the stop bit]: (failed, moving or None)."""
    crypten = import_crypten()
    _stage("stop")
    bad = (1 - ans.den_ok).sum()
    if ans.range_ok is not None:
        bad = bad + (1 - ans.range_ok).sum()
    opened = [bad.reshape(1)] + ([ans.moving.reshape(1)] if ans.moving is not None else [])
    flags = disclose(crypten.cat(opened), "stop-bit" if ans.moving is not None
                     else "failure-count")       # failure count [+ the stop bit]
    return bool(flags[0] > 0.5), (bool(flags[1] > 0.5) if ans.moving is not None else None)


def _retry(st: Iterate, notify: Progress, undo) -> None:
    """Count an arithmetic failure (raise past MAX_ARITHMETIC_RETRIES), undo the
    last update if ``undo()`` says it was corrupted, and pass again."""
    st.failures += 1
    if st.failures > MAX_ARITHMETIC_RETRIES:
        raise ArithmeticFailure("fixed-point arithmetic failed repeatedly")
    if undo():
        st.c, st.iterations = st.c_prev, st.iterations - 1      # undo the corrupted update
        st.grid = None                  # c_prev's rounding: the next pass makes it
        st.log.pop()
        # c_prev's move test was answered already: st.active holds it
        st.pending = Pending()
    notify({"stage": "retry", "iteration": st.iterations + 1})


def _notify_iteration(notify: Progress, st: Iterate, p: MeanShiftParams, moving,
                      seconds: float) -> None:
    notify({"stage": "iteration", "iteration": st.iterations, "max_iter": p.max_iter,
            "moving": moving, "seconds": seconds})


def _divide(sh: Shared, ans: PassAnswers, c):
    """The update C' = num / den (rows with a too small den keep c)."""
    return divide_with_bits(ans.num, ans.den, ans.thr, c, sh.max_den, sh.p.precision_bits,
                            sh.lo_exp)


def _update(sh: Shared, st: Iterate, ans: PassAnswers, intensity) -> tuple:
    """The division and the per-seed stop (one phase): (div, new centroids,
    new intensities, the move test); _stop_update."""
    _stage("division")
    with phase(("divide", st.active is not None)):
        div = _divide(sh, ans, st.c)
        return (div, *_stop_update(st.c, div, ans.den, st.active, intensity,
                                   sh.p.tol_unit, sh.p.precision_bits))


def _iterate_revealing(sh: Shared, st: Iterate, notify: Progress):
    """Iterate until the one opened stop bit says no seed is still moving, or
    max_iter; a seed stops on its own once its update moves it by at most tol
    (scikit-learn's rule, on shares). Returns each seed's weight sum at its
    last update (the merge's intensities). Small passes answer an update's
    tests inside the next pass's comparisons (no rounds of their own); large
    ones settle each update at once (_iterate_settled, Shared.settles)."""
    if sh.settles:
        return _iterate_settled(sh, st, notify)
    crypten = import_crypten()
    p = sh.p
    while True:
        it = IterationLog()
        ans = _one_pass(sh, st, it, notify)
        failed, moving = _stop_flags(ans)
        if failed:
            rng = ans.range_ok
            _retry(st, notify, lambda: rng is not None and _range_failed(rng))
            continue
        st.active = ans.still
        if st.intensity is None:       # the first pass: every seed's weight sum
            st.intensity = ans.den
        if moving is not None:
            _notify_iteration(notify, st, p, moving, st.log[-1].total_s)
            if not moving:       # every seed has stopped; this pass's update is dropped
                extra = time.perf_counter() - it.started
                st.log[-1].update_s += extra
                st.log[-1].total_s += extra
                return st.intensity
        div, new, st.intensity, move = _update(sh, st, ans, st.intensity)
        # the range test on the update itself: new is between c and div
        st.pending = Pending(range=crypten.cat([div + RANGE_SLACK, (1.0 + RANGE_SLACK) - div]),
                             move=move)
        st.c_prev, st.c, st.grid = st.c, new, None     # the next pass rounds new
        st.iterations += 1
        it.finish()
        st.log.append(it)
        if st.iterations >= p.max_iter:
            _notify_iteration(notify, st, p, None, it.total_s)
            # one more pass only if needed to check the final update
            if not _check_range(st.pending.range):
                _retry(st, notify, lambda: True)
                continue
            return st.intensity


def _iterate_settled(sh: Shared, st: Iterate, notify: Progress):
    """_iterate_revealing for large passes: each update's range and move tests,
    then the count of seeds still moving, right after the update, and the
    failure count and stop bit opened then (the same one opening per
    iteration). The pass after the last update, whose sums only carried that
    update's tests, is never run: 1/16 of the every-point job's bytes and
    passes, for about 7 rounds per iteration (small sign tests)."""
    p = sh.p
    while True:
        it = IterationLog()
        ans = _one_pass(sh, st, it, notify)
        div, new, intensity, move = _update(sh, st, ans,
                                           ans.den if st.intensity is None else st.intensity)
        with phase(("settle", st.active is not None)):
            failed, moving, still, grid = _settle(sh, ans, new, div, move)
        if failed:                      # nothing committed: the same pass again
            _retry(st, notify, lambda: False)
            continue
        st.c_prev, st.c, st.intensity, st.active = st.c, new, intensity, still
        st.grid = grid
        st.iterations += 1
        it.finish()
        st.log.append(it)
        _notify_iteration(notify, st, p, moving, it.total_s)
        if not moving or st.iterations >= p.max_iter:
            return st.intensity


def _settle(sh: Shared, ans: PassAnswers, new, div, move) -> tuple:
    """An update's tests at once: in one comparison, div inside the box, each
    seed's move test (its still bit) and the new centroids' rounding to the
    edge grid (_on_grid's tests); then [any still]; then ONE opening of
    [failures (the pass's den range tests and these), the stop bit].
    Returns (failed, moving, still (m, 1) shares, new on the edge grid or None)."""
    crypten = import_crypten()
    pending = Pending(range=crypten.cat([div + RANGE_SLACK, (1.0 + RANGE_SLACK) - div]),
                      move=move)
    tests = [t for _, t in pending.items()]
    widths = pending.widths(sh.d, sh.p.precision_bits, sh.p.tol_unit)
    t = grid_tests = None
    if sh.exact_edge:
        t, grid_tests, grid_widths = _grid_tests(new, sh.p.precision_bits)
        tests, widths = tests + grid_tests, widths + grid_widths
    in_box, still, *fix = ge_zero(*tests, bits=widths)
    grid = _grid_fix(t, *fix) if grid_tests else t
    _stage("stop")
    (moving,) = ge_zero(still.sum().reshape(1) - 1, bits=[_count_width(still.size(0))])
    bad = (1 - ans.den_ok).sum() + (1 - in_box).sum()
    flags = disclose(crypten.cat([bad.reshape(1), moving.reshape(1)]), "stop-bit")
    return bool(flags[0] > 0.5), bool(flags[1] > 0.5), still, grid


def _iterate_oblivious(sh: Shared, st: Iterate, notify: Progress):
    """Exactly max_iter updates and nothing opened before the end, not even a
    failure count: a row whose update failed a sanity test keeps its position
    (on shares). Returns the last pass's weight sums."""
    p = sh.p
    while True:
        it = IterationLog()
        ans = _one_pass(sh, st, it, notify)
        if st.iterations >= p.max_iter:
            return ans.den
        with phase("divide+keep"):
            st.c = _keep_if_valid(_divide(sh, ans, st.c), st.c, ans.den_ok)
        st.iterations += 1
        it.finish()
        st.log.append(it)
        _notify_iteration(notify, st, p, None, it.total_s)


# ---- merge, sizes and suppression, reveal --------------------------------------
def _merge(sh: Shared, c, den):
    """keep (m, 1) 0/1 shares: which centroids survive the merge."""
    p = sh.p
    _stage("merge")
    if p.merge == "intensity":
        if sh.occupied is not None:     # an unoccupied bin's seed counts as empty
            den = sh.occupied * den
        # the last pass's weight sums (what the twin calls intensity), public rescaling undone
        return _merge_keep_intensity(c, den * (2**sh.shift) if sh.shift else den,
                                     p.merge_unit, p.keep_threshold, p.oblivious,
                                     max_intensity=sh.max_den * 2**sh.shift)
    return _merge_keep(c, p.merge_unit)


def _sizes_and_suppress(sh: Shared, c, keep) -> tuple:
    """Cluster sizes on shares if asked for or needed, and the suppression of
    small clusters. Returns (keep, sizes or None, suppressed flags or None)."""
    p = sh.p
    if not (p.return_sizes or p.min_cluster_size > 1):
        return keep, None, None
    _stage("sizes")
    sizes = _nearest_sizes(rescale(c, BULK_BITS), keep, sh.pts, sh.sqn,
                           sh.upd if sh.weighted else None, sh.bounds, p)
    if sh.weighted and sh.shift:
        sizes = sizes * (2**sh.shift)     # undo the public weight rescaling
    small = None
    if p.min_cluster_size > 1:
        keep, small = suppress_small(keep, sizes, p.min_cluster_size)
    return keep, sizes, small


def _reveal(sh: Shared, c, keep, sizes, small) -> tuple:
    """Shuffle [keep * c, keep (, sizes)(, small)] and open it to the receivers
    only; with ``export_shares`` every party also exports its re-randomised share
    (secure_meanshift.output) for receivers outside the parties. Returns (the
    opened table on receiving ranks else None, this party's export or None)."""
    crypten = import_crypten()
    p, hi = sh.p, sh.p.precision_bits
    _stage("reveal")
    out = crypten.cat([keep * c, rescale(keep * 1, hi)], dim=1)
    if p.return_sizes:
        out = crypten.cat([out, rescale(sizes, hi)], dim=1)
    if small is not None:
        out = crypten.cat([out, rescale(small * 1, hi)], dim=1)
    out = _shuffle(out, sh.world)
    mine = disclose(out, "result", to=p.receivers(sh.world))
    mine = None if mine is None else mine.double().numpy()
    share = None
    if p.export_shares:        # for receivers outside the parties: nothing is opened
        share = export_share(out, sh.rank, sh.d, p.return_sizes, small is not None, p.lo,
                             p.scale)
        record("result", out.size(), to=())    # to receivers outside the ranks, sealed
    return mine, share


def _read_output(sh: Shared, mine: Optional[np.ndarray], has_small: bool,
                 notify: Progress) -> tuple:
    """(centroids, sizes, suppressed count) from the opened table, sorted rows."""
    if mine is None:
        return None, None, None
    dec = decode(mine, sh.d, sh.p.return_sizes, has_small)
    if dec.suppressed is not None:      # only the count of suppressed clusters is learned
        notify({"stage": "suppressed", "count": dec.suppressed})
    return dec.centroids, dec.sizes, dec.suppressed


def run_protocol(unit_points: np.ndarray, weights: Optional[np.ndarray],
                 params: MeanShiftParams, progress: Optional[Progress] = None,
                 original_points: Optional[int] = None) -> SecureResult:
    """Run secure mean-shift for this party.

    Args:
        unit_points: (n, d) this party's points (or summary representatives),
            already checked and mapped into the unit box.
        weights: (n,) positive weights (summary counts) or None for exact mode.
            Every party must agree on exact vs weighted (``params.summary``).
        params: the agreed job parameters.
        progress: called with a dict after each iteration (no secret inside).
        original_points: this party's raw row count (defaults to n).
    Returns:
        SecureResult; ``centroids`` (unit box) only on ranks in ``reveal_to``.
    """
    if params.summary == "auto" and weights is None:   # the rows as given: exact mode
        params = replace(params, summary=None)
    comm = import_crypten().comm.get()
    comm.reset_communication_stats()
    _stage("share")
    notify = progress or (lambda ev: None)
    t_share = time.perf_counter()
    sh, c, grid = _share(unit_points, weights, params,
                   original_points if original_points is not None else len(unit_points), notify)
    share_s = time.perf_counter() - t_share
    notify({"stage": "shared", "rows": sh.total_rows, "points": sh.total_points,
            "seconds": share_s})
    # an oblivious loop keeps one phase for every pass: its first rounds c too
    st = Iterate(c, grid=None if sh.p.oblivious else grid)
    den = (_iterate_oblivious if sh.p.oblivious else _iterate_revealing)(sh, st, notify)
    t_merge = time.perf_counter()
    keep = _merge(sh, st.c, den)
    keep, sizes, small = _sizes_and_suppress(sh, st.c, keep)
    mine, share = _reveal(sh, st.c, keep, sizes, small)
    merge_s = time.perf_counter() - t_merge
    if st.log:
        st.log[-1].merge_s = merge_s
        st.log[-1].total_s += merge_s
    centroids, sizes_out, suppressed = _read_output(sh, mine, small is not None, notify)
    stats = comm.get_communication_stats()
    notify({"stage": "done", "iterations": st.iterations})
    return SecureResult(centroids=centroids, sizes=sizes_out, iterations=st.iterations,
                        passes=st.passes,
                        per_iteration=[i.as_dict() for i in st.log],
                        share_s=share_s, merge_s=merge_s,
                        communication={"bytes": int(stats.get("bytes", 0)),
                                       "dealer_bytes": int(stats.get("dealer_bytes", 0)),
                                       "rounds": int(stats.get("rounds", 0)),
                                       "steps": stats.get("steps", {})},
                        points=sh.total_points, rows=sh.total_rows, suppressed=suppressed,
                        share=share)


def suppress_small(keep, sizes, k: int):
    """Output privacy on shares: drop every kept centroid whose cluster has fewer
    than k points (or weight). keep: (m, 1) 0/1 shares (scale 1); sizes: (m, 1)
    fixed-point shares (points nearest to each kept centroid, _nearest_sizes).
    Returns (new keep, suppressed flags), both (m, 1) 0/1 shares; nothing is opened."""
    (big,) = ge_zero(sizes - (k - 0.5))
    new_keep = keep * big
    return new_keep, keep - new_keep


def _nearest_sizes(c, keep, pts, sqn, upd, bounds, p):
    """(m, 1) number (or weight) of points whose nearest kept centroid is c_i."""
    far = (1 - keep) * 4.0 * p.distance_bound       # push merged-away centroids out of reach
    cc = (c * c).sum(dim=1, keepdim=True) + far
    sizes = None
    for a, b in bounds:
        dist = cc - 2.0 * c.matmul(pts[a:b].t()) + sqn[a:b].t()
        onehot = dist.argmin(dim=0, one_hot=True)    # (m, rows)
        if upd is not None:
            s = onehot.matmul(upd[a:b, -1:])
        else:
            s = rescale(onehot.sum(dim=1, keepdim=True), BULK_BITS)
        sizes = s if sizes is None else sizes + s
    return sizes
