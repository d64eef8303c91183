"""Fallback entry point while the service CLI is absent: `simulate` only."""

import sys

from .simcli import main as _sim_main


def main() -> int:
    argv = sys.argv[1:]
    if argv and argv[0] == "simulate":
        argv = argv[1:]
    return _sim_main(argv)
