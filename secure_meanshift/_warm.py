"""Preloaded by the simulator's fork server (simulate.FORK_SERVER_PRELOAD):
importing this module imports what every party and dealer process needs
(the runtime, torch, CrypTen with its torch-2.x shim), once, before the
server forks the ranks of a run."""

from .mpc._compat import import_crypten
from . import runtime, simulate  # noqa: F401  (the ranks' targets, the runtime, torch)

import_crypten()
