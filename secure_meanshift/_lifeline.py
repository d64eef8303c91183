"""A party process of a local simulation dies with its caller.

simulate.PartyProcess starts each party (or the fork server that forks the
parties: simulate._start_method) with SECURE_MEANSHIFT_CALLER_PID set to the
caller's pid; this module, imported first by the package (before numpy,
torch or CrypTen, whose imports take seconds), arms Linux's parent-death signal
so that a killed caller (even SIGKILL) takes its party processes (or the
server, whose forked parties arm the signal again: simulate._child_setup) with
it, and exits at once if the caller is already gone. Any other process: no effect.
"""

import ctypes
import os
import signal
import sys

CALLER_ENV = "SECURE_MEANSHIFT_CALLER_PID"


def arm_parent_death_signal() -> None:
    """In a party process: SIGKILL when the parent exits (Linux prctl)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _arm_if_party() -> None:
    caller = os.environ.pop(CALLER_ENV, None)     # not inherited any further
    if not caller or not caller.isdigit():
        return
    arm_parent_death_signal()
    if os.getppid() != int(caller):               # the caller died before the signal was armed
        os._exit(1)


_arm_if_party()
