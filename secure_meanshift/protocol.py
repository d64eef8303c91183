"""The secure mean-shift protocol, run by every party inside an initialised
CrypTen session (see runtime.py for how a session is started).

Every step is one vectorised operation over all dusts and all points:

  share    each party secret-shares [x, |x|^2] (and [w x, w] for summaries)
  dust     C = X[dust rows]                       (public rows, local slicing)
  distance D = |c|^2 - 2 C X^T + |x|^2            (one Beaver matmul per chunk)
  kernel   K = flat(D) or gaussian(D)             (kernels.py)
  update   S = K [w x | w];  C' = S_x / S_w       (division.py)
  stop     reveal one bit: did any |C' - C|_inf exceed tol   (not if oblivious)
  merge    "intensity" (default, scikit-learn's): greedy in decreasing kernel
           weight sum, drop a centroid within the radius of a kept one;
           "first": keep_i = no earlier centroid within the merge radius
  shuffle  every party applies a secret permutation, so position reveals nothing
  reveal   [keep * C, keep] to the ranks in reveal_to only

What each party learns is listed in docs/leakage.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np
import torch

from ._compat import import_crypten
from .dealer import fixed_operand, phase, prime_fixed, square_and_matmul
from .division import COUNT_EXP_LO, EXP_LO, divide_with_bits, normaliser_inputs
from .fixedpoint import BULK_BITS, ge_zero, rescale
from .kernels import get_kernel
from .params import MeanShiftParams, dust_indices, resolve_seeding
from .plaintext import POINT_BITS, quantise_points
from .seeds import local_peaks

# Rows per Beaver matmul when fixed-point weights meet fixed-point points: the
# pre-truncation sum stays below 2^44, so CrypTen's probabilistic truncation
# fails with probability < 2^-20 per output element.
FIXED_MATMUL_ROWS = 4096

Progress = Callable[[dict], None]
RANGE_SLACK = 0.05          # centroids stay in the unit box; beyond this slack = corrupted
MAX_ARITHMETIC_RETRIES = 3
MERGE_TREE_UP_TO = 32      # more centroids: the merge's rounds by counts (O(m) bytes a round)


class ArithmeticFailure(RuntimeError):
    """CrypTen's probabilistic truncation failed more often than retries allow."""


def _check_range(terms) -> bool:
    """Open only whether any range test failed (a count, not a value)."""
    (bits,) = ge_zero(terms)
    return bool((1 - bits).sum().get_plain_text().item() < 0.5)


@dataclass
class SecureResult:
    centroids: Optional[np.ndarray]   # (c, d) unit box; None unless this rank receives
    sizes: Optional[np.ndarray]
    iterations: int
    per_iteration: list = field(default_factory=list)
    share_s: float = 0.0
    merge_s: float = 0.0
    communication: dict = field(default_factory=dict)
    points: int = 0
    rows: int = 0
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


def _movement_terms(new, old, tol: float):
    """Values whose sign says |new - old| >= tol, per coordinate (2m x d)."""
    crypten = import_crypten()
    delta = new - old
    return crypten.cat([delta - tol, -delta - tol])


def _any_bit(bits):
    """OR of 0/1 (scale 1) shares as 1 - prod(1 - b): log2(n) multiplication rounds."""
    crypten = import_crypten()
    v = 1 - bits.flatten()
    while v.nelement() > 1:
        if v.nelement() % 2:
            v = crypten.cat([v, v[:1]])
        half = v.nelement() // 2
        v = v[:half] * v[half:]
    return 1 - v


def _keep_if_valid(new, old, den_bits):
    """Oblivious mode: new where the update passed its sanity tests (denominator
    in range, centroid inside the box), else old; one comparison, no opening."""
    crypten = import_crypten()
    m = new.size(0)
    (inside,) = ge_zero(crypten.cat([new + RANGE_SLACK, (1.0 + RANGE_SLACK) - new], dim=1))
    ok = _rows_all_zero(1 - crypten.cat([inside, den_bits[:m], den_bits[m:]], dim=1))
    return old + ok * (new - old)


def _pair_sq_distances(c):
    cc = (c * c).sum(dim=1, keepdim=True)
    return cc + cc.t() - 2.0 * c.matmul(c.t())


def _merge_keep(c, radius: float):
    """The "first" rule: keep_i = 1 - [exists j < i: |c_i - c_j|^2 < radius^2], on shares."""
    m = c.size(0)
    (close,) = ge_zero(radius * radius - _pair_sq_distances(c))      # (m, m), scale 1
    earlier = torch.tril(torch.ones(m, m, dtype=torch.long), diagonal=-1)
    dups = (close * earlier).sum(dim=1, keepdim=True)
    return 1 - dups.gt(0)


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
                          oblivious: bool = True):
    """scikit-learn's rule on shares. intensity (m, 1): each centroid's kernel
    weight sum. dom_ij = [I_j - I_i +- ulp >= 0] (ties: lower index wins),
    A = dom * close, then rounds of keep_i = nonempty_i * [no j: A_ij keep_j]:
    after round t the t highest-ranked centroids are final, so m rounds give the
    greedy answer (plaintext.merge_keep_intensity). One batched comparison, then
    for m <= MERGE_TREE_UP_TO m * (1 + log2 m) multiplication rounds and nothing
    opened; for more centroids _merge_rounds_by_counts."""
    m = c.size(0)
    # Ties go to the lower index by one unit in the last place: the order (I, -i) is
    # then strict and transitive on the exact encodings. (A wider tie band, like the
    # twin's TIE, is not transitive: with fixed-point noise it made cycles
    # 5 > 0 > 2 > 5 among copies of one mode, and all of them were kept.)
    ulp = 1.0 / intensity.encoder.scale
    j_lt_i = torch.tril(torch.ones(m, m), diagonal=-1)
    tie = j_lt_i * ulp - (1 - j_lt_i) * ulp
    diff = intensity.reshape(1, m) - intensity.reshape(m, 1) + tie
    close, dom, nonempty = ge_zero(radius * radius - _pair_sq_distances(c), diff,
                                   intensity - min_weight)
    a = (close * dom) * (1 - torch.eye(m, dtype=torch.long))
    if m > MERGE_TREE_UP_TO:
        return _merge_rounds_by_counts(a, nonempty, oblivious)
    keep = nonempty
    for _ in range(m):       # a fixed, public number of rounds
        keep = nonempty * _rows_all_zero(a * keep.reshape(1, m))
    return keep


def _merge_rounds_by_counts(a, nonempty, oblivious: bool):
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
    at = fixed_operand(a.t())                     # (keep^T A^T)^T = A keep
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
        got = ge_zero(*parts)
        prev, keep = keep, got[0]
        if probe:
            check *= 2
            if not bool(got[1].get_plain_text().item() > 0.5):
                return prev          # = keep: the fixed point, the greedy answer
    return keep


def _int_view(x):
    """The same shares read as integers (scale 1): x's fixed-point encoding itself."""
    from crypten.encoder import FixedPointEncoder

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


def _exact_edge(c, xi_t, xx, radius2: float, bits: int):
    """r^2 - |c - x|^2 >= 0, decided exactly on the integer encodings: with
    c = C 2^-P (P = bits) and x = X 2^-16, at scale 2^(2P)
        T = floor(r^2 2^2P) - C.C + 2^(P-15) C.X - 2^(2P-32) X.X
    is an exact ring integer (no truncation: a secret times an integer view needs
    none) of magnitude < d 2^(2P+2), and its sign is exactly the flat kernel's
    test for the centroid the parties hold. C.C and C.X share one opening.
    Returns T relabelled at 16 bits (same shares, same sign) for ge_zero."""
    from crypten.encoder import FixedPointEncoder

    sq, cx = square_and_matmul(_int_view(c), xi_t)              # C*C, C.X (m, n)
    cc = sq.sum(dim=1, keepdim=True)
    r = int(math.floor(radius2 * 2.0 ** (2 * bits)))
    t = cx * (2 ** (bits - 15)) - cc - xx * (2 ** (2 * bits - 32)) + r
    t.encoder = FixedPointEncoder(precision_bits=BULK_BITS)
    return t


def _initial_centroids(pts, unit_points, weights, rank: int, world: int,
                       total_rows: int, p: MeanShiftParams):
    """(m, d) initial centroids at p.precision_bits: the dusts (public rows of the
    shared points), then every party's binned local peaks (seeds.py), each
    secret-shared by its owner; m = p.n_seeds(world, N) is public. With
    seeding "points" every shared row is a seed."""
    crypten = import_crypten()
    if p.seeding == "points":
        return rescale(pts, p.precision_bits)
    if p.seeding == "grid":      # DP mode: public seeds
        from .privacy import shared_grid_seeds

        return rescale(shared_grid_seeds(p), p.precision_bits)
    parts = []
    if p.uses_dust:
        idx = torch.from_numpy(dust_indices(p.seed, total_rows, p.n_dust))
        parts.append(pts[idx])
    if p.uses_bins:
        k = p.seeds_per_party
        mine = local_peaks(unit_points, weights, p.h_unit, k)
        parts.append(_share_rows(mine, [k] * world, mine.shape[1], rank))
    c = crypten.cat(parts, dim=0) if len(parts) > 1 else parts[0]
    return rescale(c, p.precision_bits)   # centroids live at the higher precision


def _shuffle(y, world_size: int):
    """Apply each party's secret random permutation in turn: no single party
    (nor the receiver) can link an output row to a dust index."""
    crypten = import_crypten()
    m = y.size(0)
    for src in range(world_size):
        if src == crypten.comm.get().get_rank():
            local = crypten.generators["local"][torch.device("cpu")]   # a CSPRNG stream
            perm = torch.from_numpy(local.permutation(m))
            mat = torch.eye(m, dtype=torch.long)[perm]
        else:
            mat = torch.zeros(m, m, dtype=torch.long)
        p = crypten.cryptensor(mat, src=src, precision=0)   # integer permutation matrix
        y = p.matmul(y)
    return y


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
    crypten = import_crypten()
    comm = crypten.comm.get()
    rank, world = comm.get_rank(), comm.get_world_size()
    p = params
    comm.reset_communication_stats()
    stage = comm.set_step       # bytes and rounds are charged per protocol step
    stage("share")
    notify = progress or (lambda ev: None)
    t_share = time.perf_counter()

    d = unit_points.shape[1]
    weighted = p.summary is not None
    if p.dp:     # DP mode: the noisy histogram on the public grid is shared (privacy.py)
        from .privacy import share_histogram

        hist = share_histogram(unit_points, weights, p, rank, world)
        p, x, rows, shift = hist.params, hist.x, [len(hist.x)], 0
        total_rows, total_points, max_den = len(x), hist.total, float(max(1, hist.total))
        pts, sqn, upd = hist.pts, hist.sqn, hist.upd
    else:
        rows, points = _exchange_sizes(comm, len(unit_points),
                                       original_points if original_points is not None
                                       else len(unit_points))
        total_rows, total_points = sum(rows), sum(points)
        p = replace(p, seeding=resolve_seeding(p.seeding, total_points, p.summary))
        p.check_world(world, total_rows)

        x = quantise_points(unit_points)      # exactly what the shares hold (2^-16 grid)
        sq = (x * x).sum(1, keepdims=True)
        shift = 0
        if weighted:
            # Gaussian weights are fixed point: keep sum(k w) small (see FIXED_MATMUL_ROWS)
            # by a public power-of-two rescaling of the counts; the ratio is unchanged.
            shift = 0 if p.kernel == "flat" else max(0, int(math.floor(
                math.log2(max(1.0, total_points / max(1, total_rows))))))
            w = np.asarray(weights, float).reshape(-1, 1) / 2.0**shift
            local = np.concatenate([x, sq, w * x, w], axis=1)
            max_den = total_points / 2.0**shift
        else:
            local = np.concatenate([x, sq], axis=1)
            max_den = float(total_points)
        shared = _share_rows(local, rows, local.shape[1], rank)
        pts, sqn = shared[:, :d], shared[:, d:d + 1]
        upd = shared[:, d + 1:] if weighted else pts

    kernel = get_kernel(p.kernel)
    flat_kernel = kernel.edge is not None     # a sign test: batched with the pending ones
    # flat weights are 0/1 and counts integers: den is an integer count
    lo_exp = COUNT_EXP_LO if flat_kernel and shift == 0 else EXP_LO
    hi_bits = p.precision_bits
    c = _initial_centroids(pts, x, weights, rank, world, total_rows, p)
    exact_edge = kernel.radius2 is not None
    if exact_edge:       # |X|^2 of the integer encodings, exact (for _exact_edge)
        xint = np.round(x * 2.0**POINT_BITS).astype(np.int64)
        xx = _share_int_column((xint * xint).sum(1), rows, rank).t()    # (1, N)
        pts_int = _int_view(pts)
    m = p.n_seeds(world, total_rows)
    chunk = max(FIXED_MATMUL_ROWS, p.chunk_elements // m)
    bounds = [(a, min(a + chunk, total_rows)) for a in range(0, total_rows, chunk)]
    # the points are the same every iteration: their Beaver masks are opened once
    right = [fixed_operand(pts_int[a:b].t() if exact_edge else pts[a:b].t())
             for a, b in bounds]
    upd_chunks = [fixed_operand(upd[a:b]) for a, b in bounds]
    prime_fixed(*right, *upd_chunks)
    share_s = time.perf_counter() - t_share
    notify({"stage": "shared", "rows": total_rows, "points": total_points,
            "seconds": share_s})

    per_iter: list = []
    iterations = 0
    # Sign tests of the last update, answered inside the next pass's first
    # comparison: "move" (stop test; not in oblivious mode) and "range" (is every
    # centroid inside the box: catches CrypTen's rare truncation failures).
    pending: dict = {}
    c_prev = c
    failures = 0
    while True:
        t0 = time.perf_counter()
        t_dist = t_kern = t_upd = 0.0
        if not exact_edge:
            c16 = rescale(c, BULK_BITS)
            cc = (c16 * c16).sum(dim=1, keepdim=True)
        # every pass of the same shape draws the same correlated values: from the
        # third on, party 0 asks the dealer for all of them at the start
        key = ("pass", tuple(sorted((n, tuple(t.size())) for n, t in pending.items())))
        with phase(key):
            sums = den = None
            answers: dict = {}
            for ci, (a, b) in enumerate(bounds):
                ta = time.perf_counter()
                stage("distance")
                if exact_edge:
                    edge = _exact_edge(c, right[ci], xx[:, a:b], kernel.radius2(p), hi_bits)
                else:
                    dist = cc - 2.0 * c16.matmul(right[ci]) + sqn[a:b].t()
                    edge = kernel.edge(dist, p) if flat_kernel else None
                tb = time.perf_counter()
                stage("kernel")
                if flat_kernel:
                    names = list(pending) if ci == 0 else []
                    k, *rest = ge_zero(edge, *[pending[n] for n in names])
                    answers.update(zip(names, rest))
                else:
                    k = kernel.secure(dist, p)
                tc = time.perf_counter()
                stage("update")
                s = _weighted_sums(k, upd_chunks[ci], True)
                sums = s if sums is None else sums + s
                if not weighted:
                    ks = k.sum(dim=1, keepdim=True)
                    den = ks if den is None else den + ks
                td = time.perf_counter()
                t_dist += tb - ta
                t_kern += tc - tb
                t_upd += td - tc
                if len(bounds) > 1:
                    notify({"stage": "chunk", "iteration": iterations + 1, "chunk": ci + 1,
                            "chunks": len(bounds)})
            tc = time.perf_counter()
            stage("update")
            sums = rescale(sums, hi_bits)
            if weighted:
                num, den = sums[:, :d], sums[:, d:]
            else:
                num = sums
            den = rescale(den, hi_bits)
            stage("division")
            parts = {"thr": normaliser_inputs(den, max_den, lo_exp),
                     "den": crypten.cat([den + 0.5, (max_den + 1.0) - den])}
            if flat_kernel and "move" in answers:
                parts["any"] = rescale(answers["move"].sum() - 1, hi_bits).reshape(1)
            if not flat_kernel:
                parts.update(pending)
            answers.update(zip(parts, ge_zero(*parts.values())))
            if not flat_kernel and "move" in answers:
                answers["any"] = _any_bit(answers["move"])
        if p.oblivious:
            # nothing is opened before the end, not even a failure count: a row whose
            # update failed a sanity test keeps its position (on shares)
            if iterations >= p.max_iter:
                break
            with phase("divide+keep"):
                new = divide_with_bits(num, den, answers["thr"], c, max_den,
                                       p.precision_bits, lo_exp)
                c = _keep_if_valid(new, c, answers["den"])
            iterations += 1
            t_upd += time.perf_counter() - tc
            total = time.perf_counter() - t0
            per_iter.append({"distance_s": t_dist, "kernel_s": t_kern, "update_s": t_upd,
                             "merge_s": 0.0, "total_s": total})
            notify({"stage": "iteration", "iteration": iterations, "max_iter": p.max_iter,
                    "moving": None, "seconds": total})
            continue
        stage("stop")
        bad = (1 - answers["den"]).sum()
        if "range" in answers:
            bad = bad + (1 - answers["range"]).sum()
        opened = [bad.reshape(1)] + ([answers["any"].reshape(1)] if "any" in answers else [])
        flags = crypten.cat(opened).get_plain_text()   # failure count [+ the stop bit]
        if flags[0] > 0.5:
            failures += 1
            if failures > MAX_ARITHMETIC_RETRIES:
                raise ArithmeticFailure("fixed-point arithmetic failed repeatedly")
            if "range" in answers and (1 - answers["range"]).sum().get_plain_text() > 0.5:
                c, iterations = c_prev, iterations - 1      # undo the corrupted update
                per_iter.pop()
            pending = {}
            notify({"stage": "retry", "iteration": iterations + 1})
            continue
        if "any" in answers:
            moving = bool(flags[1] > 0.5)                      # the one revealed bit
            notify({"stage": "iteration", "iteration": iterations, "max_iter": p.max_iter,
                    "moving": moving, "seconds": per_iter[-1]["total_s"]})
            if not moving:       # c is the converged update; this pass's update is dropped
                extra = time.perf_counter() - t0
                per_iter[-1]["update_s"] += extra
                per_iter[-1]["total_s"] += extra
                break
        if iterations >= p.max_iter:     # only reached to check the last update
            break
        stage("division")
        with phase("divide"):
            new = divide_with_bits(num, den, answers["thr"], c, max_den, p.precision_bits,
                                   lo_exp)
        pending = {"range": crypten.cat([new + RANGE_SLACK, (1.0 + RANGE_SLACK) - new])}
        if not p.oblivious:
            pending["move"] = _movement_terms(new, c, p.tol_unit)
        c_prev, c = c, new
        iterations += 1
        t_upd += time.perf_counter() - tc
        total = time.perf_counter() - t0
        per_iter.append({"distance_s": t_dist, "kernel_s": t_kern, "update_s": t_upd,
                         "merge_s": 0.0, "total_s": total})
        if p.oblivious or iterations >= p.max_iter:    # progress without any revealed bit
            notify({"stage": "iteration", "iteration": iterations, "max_iter": p.max_iter,
                    "moving": None, "seconds": total})
        if iterations >= p.max_iter:
            # one more pass only if needed to check the final update
            pending.pop("move", None)
            if not _check_range(pending["range"]):
                failures += 1
                if failures > MAX_ARITHMETIC_RETRIES:
                    raise ArithmeticFailure("fixed-point arithmetic failed repeatedly")
                c, iterations = c_prev, iterations - 1
                per_iter.pop()
                pending = {}
                notify({"stage": "retry", "iteration": iterations + 1})
                continue
            break

    t_merge = time.perf_counter()
    stage("merge")
    if p.merge == "intensity":
        # the last pass's weight sums (what the twin calls intensity), public rescaling undone
        keep = _merge_keep_intensity(c, den * (2**shift) if shift else den, p.merge_unit,
                                     p.keep_threshold, p.oblivious)
    else:
        keep = _merge_keep(c, p.merge_unit)
    small = None
    if p.return_sizes or p.min_cluster_size > 1:
        stage("sizes")
        sizes_col = _nearest_sizes(rescale(c, BULK_BITS), keep, pts, sqn,
                                   upd if weighted else None, bounds, p)
        if weighted and shift:
            sizes_col = sizes_col * (2**shift)     # undo the public weight rescaling
        if p.min_cluster_size > 1:
            keep, small = suppress_small(keep, sizes_col, p.min_cluster_size)
    stage("reveal")
    out = crypten.cat([keep * c, rescale(keep * 1, p.precision_bits)], dim=1)
    if p.return_sizes:
        out = crypten.cat([out, rescale(sizes_col, hi_bits)], dim=1)
    if small is not None:
        out = crypten.cat([out, rescale(small * 1, hi_bits)], dim=1)
    out = _shuffle(out, world)
    mine = None
    for r in p.receivers(world):
        val = out.get_plain_text(dst=r)
        if r == rank:
            mine = val.double().numpy()
    share = None
    if p.export_shares:        # for receivers outside the parties: nothing is opened
        from .output import export_share

        share = export_share(out, rank, d, p.return_sizes, small is not None, p.lo, p.scale)
    merge_s = time.perf_counter() - t_merge
    if per_iter:
        per_iter[-1]["merge_s"] = merge_s
        per_iter[-1]["total_s"] += merge_s

    centroids = sizes = suppressed = None
    if mine is not None:
        from .output import decode

        dec = decode(mine, d, p.return_sizes, small is not None)
        centroids, sizes, suppressed = dec.centroids, dec.sizes, dec.suppressed
        if suppressed is not None:      # only the count of suppressed clusters is learned
            notify({"stage": "suppressed", "count": suppressed})
    stats = comm.get_communication_stats()
    notify({"stage": "done", "iterations": iterations})
    return SecureResult(centroids, sizes, iterations, per_iter, share_s, merge_s,
                        {"bytes": int(stats.get("bytes", 0)),
                         "dealer_bytes": int(stats.get("dealer_bytes", 0)),
                         "rounds": int(stats.get("rounds", 0)),
                         "steps": stats.get("steps", {})},
                        total_points, total_rows, suppressed, share)


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
