"""Which queued jobs start now: strict first come, first served over each node.

Jobs are taken in submission order. A job starts when every member (its parties
and its dealer) is connected and has a free slot (``max_concurrent_jobs`` minus
the jobs it holds). A job that cannot start because a member is busy *reserves*
a slot at each of its members: no later job takes a slot it waits for, so a
stream of small jobs never overtakes a large one forever (no starvation). A job
waiting for a member that is not connected reserves nothing (it may wait long:
the jobs behind it that do not need that member run).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Waiting:
    job_id: str
    members: tuple


def pick(queued: list, free: dict, connected: set) -> list:
    """The ids of the queued jobs (``Waiting``, oldest first) to start now, given
    each connected member's free slots."""
    free = dict(free)
    start = []
    for w in queued:
        if not all(m in connected for m in w.members):
            continue
        if all(free.get(m, 0) > 0 for m in w.members):
            start.append(w.job_id)
        for m in w.members:          # taken, or reserved for this job
            free[m] = free.get(m, 0) - 1
    return start


def waiting_for(w: Waiting, connected: set) -> str:
    """The first member the job waits for that is not connected, or ''."""
    return next((m for m in w.members if m not in connected), "")
