"""Preloaded by the simulator's fork server (simulate.FORK_SERVER_PRELOAD):
importing this module imports what every party and dealer process needs
(the runtime, torch, CrypTen with its torch-2.x shim), once, before the
server forks the ranks of a run, and sets the allocator up for them."""

import ctypes
import gc
import sys

# The cyclic collector ran dozens of times over torch's and CrypTen's import
# (their objects are permanent): off while they load, then those objects are
# frozen out of every later collection, the forked ranks' too. The server's
# import is on every run's critical path (the ranks wait for it).
gc.disable()

import encodings.idna  # noqa: E402,F401  (each rank's connects encode host names with it)
import multiprocessing.synchronize  # noqa: E402,F401  (the result queue's lock, in each rank)

from .mpc._compat import import_crypten, stand_in_meta_registrations  # noqa: E402

stand_in_meta_registrations()      # before torch loads (the ranks use no meta tensors)

from . import runtime, simulate  # noqa: E402,F401  (the ranks' targets, the runtime, torch)

import_crypten()
gc.freeze()
gc.enable()

# glibc's malloc, as the forked ranks inherit it: a rank allocates and frees
# tensors of 1-50 MB every round (shares, dealer streams, openings). By default
# glibc returns freed memory above 32-64 MB to the kernel at once and maps
# arrays above 32 MB afresh, so the next round page-faults them in again:
# about 1 s of system time of the 3-party every-point job (1,000 points),
# 5% of its CPU. Keeping up to 256 MB of freed heap (and mapping only arrays
# above 64 MB) removes most of it; memory is still returned above that.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MB = 1 << 20


def _keep_freed_memory() -> None:
    """mallopt on glibc (Linux); a no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):        # not glibc (e.g. musl)
        return
    for option, value in ((_M_MMAP_THRESHOLD, 64 * _MB), (_M_TRIM_THRESHOLD, 256 * _MB),
                          (_M_TOP_PAD, 64 * _MB)):
        mallopt(option, value)


_keep_freed_memory()
