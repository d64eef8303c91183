"""The one way a secret-shared value becomes public in the engine.

Every opening of an unmasked secret goes through :func:`disclose`, which names
*why* the value may be opened: a key of :data:`REASONS`, each of which marks a
row of docs/leakage.md (``[key]``; tests/test_disclosure.py checks both ways).
The masked openings inside the MPC primitives (Beaver x - a, truncation and
sign-test x + r, in mpc/beaver.py, signtest.py and division.py) reveal uniformly
random values and are not disclosures.

A choke point that makes a value public without opening it here (e.g. a
party's own output share exported to an analyst) calls :func:`record`, so that
observers see it too. Tests watch disclosures with :func:`observe`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

from .mpc._compat import import_crypten

# key -> what is disclosed (each key marks its row in docs/leakage.md as [key])
REASONS: dict = {
    "stop-bit": "one bit per iteration, is any seed still moving (each seed stops "
                "once an update moves it by at most tol), opened together with that "
                "iteration's failure count (default mode)",
    "failure-count": "how many sanity tests of an update failed (default mode), "
                     "alone when no stop bit is due",
    "merge-depth": "after merge rounds 2, 4, 8, ...: did the last round change any "
                   "keep flag (default mode, more than 32 centroids)",
    "bandwidth": "the sum of the sample's k-th-neighbour brackets (bandwidth: auto)",
    "result": "the shuffled merged centroids (and sizes, suppressed count), to the "
              "receivers only",
    "pooled-moments": "SecureStandardScaler and jobs with scale: standard: the pooled "
                      "per-feature sums (mean, then squared deviations from it) over all "
                      "parties' rows",
    "dp-total": "DP mode: the sum of the clamped noisy cell counts (post-processing of "
                "the DP histogram), the division's public bound",
}


@dataclass(frozen=True)
class Disclosure:
    """One disclosure as observers see it: no value, only its reason and shape."""
    why: str
    shape: tuple
    to: Optional[tuple]          # receiving ranks; None = every rank


Observer = Callable[[Disclosure], None]
_OBSERVERS: list = []


def _check(why: str) -> None:
    if why not in REASONS:
        raise ValueError(f"disclosure reason {why!r} is not in disclosure.REASONS")


def record(why: str, shape: Sequence[int], to: Optional[Sequence[int]] = None) -> None:
    """Announce a disclosure of a value of ``shape`` to ranks ``to`` (None: all)
    to every observer. :func:`disclose` calls it; a choke point that makes a
    value public by other means must call it itself."""
    _check(why)
    event = Disclosure(why, tuple(int(s) for s in shape),
                       None if to is None else tuple(int(r) for r in to))
    for fn in list(_OBSERVERS):
        fn(event)


def disclose(value, why: str, to: Optional[Sequence[int]] = None):
    """Open the secret-shared ``value`` (an MPCTensor) because of ``why`` (a key
    of REASONS). ``to=None``: to every rank, returns the plain tensor on each;
    ``to=[ranks]``: only to those ranks (each receives the others' shares),
    returns the plain tensor there and None on every other rank. Every rank
    must call it (the opening is a collective)."""
    record(why, value.size(), to)
    if to is None:
        return value.get_plain_text()

    rank = import_crypten().comm.get().get_rank()
    mine = None
    for r in to:
        val = value.get_plain_text(dst=r)
        if r == rank:
            mine = val
    return mine


def add_observer(fn: Observer) -> None:
    """Call ``fn(Disclosure)`` for every later disclosure in this process."""
    _OBSERVERS.append(fn)


def remove_observer(fn: Observer) -> None:
    _OBSERVERS.remove(fn)


@contextlib.contextmanager
def observe(callback: Optional[Observer] = None) -> Iterator[list]:
    """Within the block, collect every disclosure of this process in the
    yielded list (and pass each to ``callback``, if given)."""
    seen: list = []

    def fn(event: Disclosure) -> None:
        seen.append(event)
        if callback is not None:
            callback(event)

    add_observer(fn)
    try:
        yield seen
    finally:
        remove_observer(fn)
