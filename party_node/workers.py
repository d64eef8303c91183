"""A node's worker processes: each job runs in a fresh ``party_node.worker``
process; with ``prewarm`` one spare waits with torch and CrypTen loaded (and
nothing else done) for the next job. Concurrent jobs each take their own
process (the spare if it is alive, else a new one)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from typing import Optional

log = logging.getLogger("party_node")


def spawn(prewarm: bool) -> subprocess.Popen:
    """A new worker process (its stderr discarded: it reports on stdout, as JSON lines)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", SMS_NODE_PID=str(os.getpid()),
               SMS_WORKER_PREWARM="1" if prewarm else "0")
    return subprocess.Popen([sys.executable, "-m", "party_node.worker"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)


class WorkerPool:
    """At most one spare worker, started ahead of time when ``prewarm``."""

    def __init__(self, prewarm: bool):
        self.prewarm = prewarm
        self._spare: Optional[subprocess.Popen] = None
        self._lock = threading.Lock()

    def take(self) -> subprocess.Popen:
        """A job's worker: the spare if it is alive, else a new process."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare.poll() is None:
            return spare
        return spawn(prewarm=False)

    def refill(self) -> None:
        """Start a spare if prewarming and none is alive."""
        if not self.prewarm:
            return
        with self._lock:
            if self._spare is not None and self._spare.poll() is None:
                return
            try:
                self._spare = spawn(prewarm=True)
            except OSError as exc:
                log.warning("could not start a spare worker (%s)", type(exc).__name__)
                self._spare = None

    def drop(self) -> None:
        """End the spare (an empty job: it exits by itself)."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare.poll() is None:
            try:
                spare.stdin.close()
                spare.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                spare.kill()
