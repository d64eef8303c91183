"""What a node must remember across restarts, in one owner-only SQLite file
(``<results_dir>/node-state.sqlite``, mode 0600, its folder 0700):

- the signed jobs it has been offered (a replay within a job's validity is
  refused even after a restart);
- the privacy budget ledger: every accepted DP job's charge against its data
  set, written in one transaction at acceptance, before any share moves, and
  kept even if the job later fails.

Composition of the charges is the engine's (``secure_meanshift.privacy.
spent_epsilon``, an accountant of a well-kept library); this module only
stores the charges and compares the composed total with the budget.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

FILENAME = "node-state.sqlite"
Compose = Callable[[Sequence[float], float], float]     # (noise scales, delta) -> epsilon


@dataclass(frozen=True)
class Budget:
    """A data set's total privacy budget."""
    epsilon: float
    delta: float


@dataclass(frozen=True)
class Charge:
    """One accepted DP job's charge against a data set."""
    job_id: str
    dataset: str
    time: float
    epsilon: float
    delta: float
    scale: float


def state_path(results_dir: str) -> str:
    return os.path.join(results_dir, FILENAME)


class NodeState:
    """The node's persistent memory; every method is one transaction."""

    def __init__(self, results_dir: str, create: bool = True):
        path = state_path(results_dir)
        if create:
            os.makedirs(results_dir, mode=0o700, exist_ok=True)
            os.chmod(results_dir, 0o700)
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))
            os.chmod(path, 0o600)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        else:
            self._db = sqlite3.connect(f"file:{os.path.abspath(path)}?mode=ro", uri=True,
                                       check_same_thread=False, isolation_level=None)
        self.path = path
        self._lock = threading.Lock()
        if create:
            with self._lock:
                self._db.executescript("""
                    CREATE TABLE IF NOT EXISTS seen_offers (job_id TEXT PRIMARY KEY,
                                                            seen REAL NOT NULL);
                    CREATE TABLE IF NOT EXISTS charges (
                        job_id TEXT NOT NULL, dataset TEXT NOT NULL, time REAL NOT NULL,
                        epsilon REAL NOT NULL, delta REAL NOT NULL, scale REAL NOT NULL,
                        PRIMARY KEY (job_id, dataset));
                """)

    def close(self) -> None:
        self._db.close()

    # ---- replays --------------------------------------------------------------------
    def seen_before(self, job_id: str, keep_s: float, now: Optional[float] = None) -> bool:
        """Record that ``job_id`` was offered; True if it had been (within keep_s)."""
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM seen_offers WHERE seen < ?", (now - keep_s,))
                cur = self._db.execute("INSERT OR IGNORE INTO seen_offers VALUES (?, ?)",
                                       (job_id, now))
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._db.execute("ROLLBACK")
                raise
        return cur.rowcount == 0

    # ---- privacy budget ---------------------------------------------------------------
    def charge(self, dataset: str, job_id: str, epsilon: float, delta: float, scale: float,
               budget: Budget, compose: Compose) -> str:
        """Charge a DP job to ``dataset`` if the composed total stays within
        ``budget``: '' when charged, else a refusal naming the rule and the
        budget's numbers (spent, requested, total), never a data value."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                scales = [s for (s,) in self._db.execute(
                    "SELECT scale FROM charges WHERE dataset=? ORDER BY rowid", (dataset,))]
                spent = compose(scales, budget.delta) if scales else 0.0
                after = compose(scales + [scale], budget.delta)
                if after > budget.epsilon * (1 + 1e-9):
                    self._db.execute("ROLLBACK")
                    return (f"privacy budget of data set {dataset!r} exhausted: spent "
                            f"epsilon {spent:.4g} of {budget.epsilon:.4g} (delta "
                            f"{budget.delta:.3g}); this job (epsilon {epsilon:.4g}, delta "
                            f"{delta:.3g}) would bring it to {after:.4g}")
                self._db.execute("INSERT INTO charges VALUES (?, ?, ?, ?, ?, ?)",
                                 (job_id, dataset, time.time(), float(epsilon), float(delta),
                                  float(scale)))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return ""

    def charges(self, dataset: Optional[str] = None) -> list:
        """Every charge (of one data set), oldest first."""
        q = "SELECT job_id, dataset, time, epsilon, delta, scale FROM charges"
        with self._lock:
            rows = self._db.execute(q + (" WHERE dataset=? ORDER BY rowid" if dataset else
                                         " ORDER BY rowid"), (dataset,) if dataset else ()
                                    ).fetchall()
        return [Charge(*r) for r in rows]


def spent(charges: Sequence[Charge], budget: Budget, compose: Compose) -> float:
    """Composed epsilon of a data set's charges at the budget's delta."""
    scales = [c.scale for c in charges]
    return compose(scales, budget.delta) if scales else 0.0
