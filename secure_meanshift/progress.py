"""A progress line for long fits, fed by party 0's progress events.

First a line with the fit's choices (parties, points, bandwidth, seeding,
summary: the estimator's header; a bandwidth estimated in the run and the
seeding picked with it are added, or said on a line of their own, once the
parties know them), then a line that shows the stage, the iteration (of
max_iter), the chunk within it, the elapsed time and an estimate of the time
left. The events carry no data: stage names, counts and seconds (and, outside
oblivious mode, whether any seed still moves, which every party learns anyway;
in a local simulation only, whose caller holds every party's data, the
estimated bandwidth, which every party learns as a job parameter).

``verbose``: 0 never prints; 1 (the estimator's default) starts printing once a
fit has run for SHOW_AFTER_S seconds; 2 prints from the start.
On a terminal the line is redrawn in place; otherwise one line is written at
most every LOG_EVERY_S seconds (and at the end).
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

SHOW_AFTER_S = 3.0
LOG_EVERY_S = 10.0


def _clock(seconds: float) -> str:
    s = int(round(max(0.0, seconds)))
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60:02d}:{rem % 60:02d}"


class ProgressLine:
    """Callable progress sink: ``ProgressLine(verbose)(event)``; ``close()`` at the end."""

    def __init__(self, verbose: int = 1, max_iter: Optional[int] = None,
                 stream: Optional[TextIO] = None, label: str = "secure mean-shift",
                 header: str = "", announce_seeding: bool = False):
        self.verbose = int(verbose)
        self.header = header
        self.announce_seeding = announce_seeding   # say the seeding the parties resolved
        self.max_iter = max_iter
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.t0 = time.monotonic()
        self.iteration = 0
        self.iter_started = self.t0
        self.iter_seconds: list = []
        self.stage = "starting"
        self.chunk = ""
        self.shown = False
        self.last_write = 0.0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, ev: dict) -> None:
        now = time.monotonic()
        stage = ev.get("stage", "")
        if "bandwidth" in ev:          # estimated in this run (simulate: party 0's event)
            self.note(f"bandwidth {float(ev['bandwidth']):.6g} (estimated under MPC)")
        if stage == "sizes" and self.announce_seeding and ev.get("seeding"):
            self.note(f"seeding {ev['seeding']} ({int(ev.get('seeds', 0)):,} seeds)")
        if stage == "iteration":
            self.iteration = int(ev.get("iteration", self.iteration))
            self.max_iter = int(ev.get("max_iter") or self.max_iter or 0) or None
            self.iter_seconds.append(now - self.iter_started)
            self.iter_started = now
            self.chunk = ""
            self.stage = "iterating" if ev.get("moving") is not False else "converged"
        elif stage == "chunk":
            self.chunk = f" chunk {ev.get('chunk')}/{ev.get('chunks')}"
        elif stage == "done":
            self.stage = "done"
        elif stage:
            self.stage = stage
            if stage == "shared":
                self.iter_started = now
        self.render(now)

    def eta(self) -> Optional[float]:
        """Seconds left if every remaining iteration runs (an upper bound unless
        oblivious: the run stops as soon as no seed moves)."""
        if not self.iter_seconds or not self.max_iter:
            return None
        recent = self.iter_seconds[-5:]
        return (self.max_iter - self.iteration) * sum(recent) / len(recent)

    def text(self, now: float) -> str:
        it = f"iteration {self.iteration}/{self.max_iter or '?'}{self.chunk}"
        eta = self.eta()
        left = "" if eta is None or self.stage in ("done", "converged") \
            else f", at most {_clock(eta)} left"
        return f"{self.label}: {self.stage}, {it}, {_clock(now - self.t0)} elapsed{left}"

    def render(self, now: Optional[float] = None, final: bool = False) -> None:
        now = time.monotonic() if now is None else now
        if self.verbose <= 0 or (self.verbose == 1 and now - self.t0 < SHOW_AFTER_S
                                 and not self.shown):
            return
        if not self.tty and not final and now - self.last_write < LOG_EVERY_S and self.shown:
            return
        line = self.text(now)
        if not self.shown and self.header:
            self.stream.write(f"{self.label}: {self.header}\n")
        if self.tty:
            self.stream.write("\r" + line.ljust(100)[:100] + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.shown = True
        self.last_write = now

    def note(self, text: str) -> None:
        """A choice made during the run (e.g. the estimated bandwidth): added to
        the header if nothing was shown yet, else a line of its own."""
        if self.verbose <= 0:
            return
        if not self.shown:
            self.header = f"{self.header}; {text}" if self.header else text
            return
        self.stream.write(("\r" if self.tty else "") + f"{self.label}: {text}".ljust(
            100 if self.tty else 0) + "\n")
        self.stream.flush()

    def close(self) -> None:
        """The final line (only if a line was shown before)."""
        if self.shown:
            self.render(final=True)
