"""The job's output for receivers outside the parties (analysts): no rank opens
it. Each party exports its own additive share of the shuffled output, first
re-randomised by a fresh sharing of zero (so a share says nothing about the
computation that produced it); the receiver adds every party's share and
decodes. The services only move and seal these exports; their layout and the
fixed-point decoding live here, next to the protocol that makes them.

The output table (``protocol.run_protocol``'s reveal step), one row per
centroid slot, in the parties' joint secret order: d centroid coordinates
(unit box; zero where the slot is not kept), the keep flag, then optionally
the cluster size and the "suppressed as too small" flag.

``export_share`` needs CrypTen (a party's worker); ``decode`` and
``combine_shares`` only numpy (the analyst's client).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .data import from_unit
from .mpc._compat import import_crypten

FORMAT = "sms-share/1"


class ShareError(ValueError):
    """Exported shares that cannot be combined; the message names the problem."""


@dataclass(frozen=True)
class Decoded:
    """A decoded output: centroids (unit box, sorted), sizes, suppressed count."""
    centroids: np.ndarray
    sizes: Optional[np.ndarray]
    suppressed: Optional[int]


def decode(table: np.ndarray, dim: int, with_sizes: bool, with_small: bool) -> Decoded:
    """The opened output table -> the kept centroids (lexicographic order), their
    sizes if present, and how many were suppressed as too small (if that column
    is present: only this count is learned of them)."""
    kept = table[:, dim] > 0.5
    suppressed = int(round(float(table[:, -1].sum()))) if with_small else None
    cents = table[kept, :dim]
    sizes = np.round(table[kept, dim + 1]) if with_sizes else None
    order = np.lexsort(cents.T[::-1])
    return Decoded(cents[order], sizes[order] if sizes is not None else None, suppressed)


def export_share(out, rank: int, dim: int, with_sizes: bool, with_small: bool,
                 lo: Sequence[float], scale: float) -> dict:
    """This party's share of the output table ``out`` (an MPCTensor, the same on
    every party's call: all parties call this together), re-randomised by a fresh
    zero sharing, with its layout. ``lo``/``scale``: the public map from the unit
    box back to data units. JSON-safe; a secret share, for sealing only."""
    crypten = import_crypten()
    zero = crypten.mpc.primitives.arithmetic.ArithmeticSharedTensor.PRZS(out.size())
    share = (out._tensor.share + zero.share).reshape(-1)     # zero sums to 0 over parties
    return {"format": FORMAT, "rank": int(rank), "rows": int(out.size(0)),
            "cols": int(out.size(1)), "frac_scale": int(out.encoder.scale),
            "dim": int(dim), "sizes": bool(with_sizes), "small": bool(with_small),
            "lo": [float(v) for v in lo], "scale": float(scale),
            "values": [int(v) for v in share.tolist()]}


_LAYOUT = ("format", "rows", "cols", "frac_scale", "dim", "sizes", "small", "lo", "scale",
           "mean", "std")


def combine_shares(shares: Sequence[dict], world_size: int) -> Decoded:
    """Add every party's exported share (ranks 0..world_size-1, each once, one
    layout) and decode; centroids in data units. ShareError if they do not fit.
    A job with ``scale: standard`` adds the opened pooled moments to every
    share ("mean", "std": runtime.run_party): the unit box maps back to
    standardised units, then centre * std + mean to data units."""
    if sorted(_int(s, "rank") for s in shares) != list(range(world_size)):
        raise ShareError(f"shares: need exactly one from each of the {world_size} parties")
    first = shares[0]
    if any(any(s.get(k) != first.get(k) for k in _LAYOUT) for s in shares):
        raise ShareError("shares: the parties' layouts differ")
    if first.get("format") != FORMAT:
        raise ShareError("shares: not a format this version understands")
    rows, cols, dim = _int(first, "rows"), _int(first, "cols"), _int(first, "dim")
    if not (0 < dim and cols == dim + 1 + bool(first["sizes"]) + bool(first["small"])
            and len(first["lo"]) == dim and _int(first, "frac_scale") > 0):
        raise ShareError("shares: an inconsistent layout")
    total = np.zeros(rows * cols, dtype=np.uint64)
    for s in shares:
        vals = s.get("values")
        if not isinstance(vals, list) or len(vals) != rows * cols:
            raise ShareError("shares: a share of the wrong size")
        try:
            total += np.array(vals, dtype=np.int64).view(np.uint64)   # the ring Z/2^64
        except (OverflowError, TypeError, ValueError):
            raise ShareError("shares: not 64-bit ring elements") from None
    table = total.view(np.int64).astype(np.float64).reshape(rows, cols) / first["frac_scale"]
    dec = decode(table, dim, bool(first["sizes"]), bool(first["small"]))
    cents = from_unit(dec.centroids, np.asarray(first["lo"], float), float(first["scale"]))
    if first.get("mean") is not None:
        mean, std = _vector(first, "mean", dim), _vector(first, "std", dim)
        cents = cents * std + mean
    return Decoded(cents, dec.sizes, dec.suppressed)


def _vector(d: dict, key: str, dim: int) -> np.ndarray:
    v = d.get(key)
    try:
        arr = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise ShareError(f"shares: {key} is not a list of numbers") from None
    if arr.shape != (dim,) or not np.isfinite(arr).all():
        raise ShareError(f"shares: {key} is not {dim} finite numbers")
    return arr


def _int(d: dict, key: str) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ShareError(f"shares: {key} is missing or not an integer")
    return v
