"""Following a job from the command line: its progress events, printed as a
one-line bar on a terminal (or one line per event), until the job ends."""

from __future__ import annotations

import sys


def follow(c, job_id: str, json_mode: bool = False) -> dict:
    """Print progress (a one-line bar on a terminal) until the job ends."""
    tty = sys.stderr.isatty() and not json_mode

    def show(ev: dict) -> None:
        if json_mode:
            return
        stage = ev.get("stage", "")
        if stage in ("iteration", "chunk") and ev.get("max_iter"):
            it, mx = ev.get("iteration", 0), ev["max_iter"]
            bar = "#" * int(30 * it / mx)
            mv = {"yes": "moving", "no": "converged"}.get(ev.get("moving", ""), "")
            line = f"[{bar:<30}] iteration {it}/{mx}  {ev.get('seconds', 0):.2f} s/it  {mv}"
        elif stage == "local":
            line = (f"local summary (rank 0): {int(ev.get('rows', 0)):,} rows read, "
                    f"{int(ev.get('cells', 0)):,} cells, {ev.get('seconds', 0):.1f} s")
        elif stage == "queued":
            line = f"queued: position {ev.get('queue_position', '?')} in the queue"
        else:
            line = f"{ev.get('state', '')}: {ev.get('message', '') or stage}"
        if tty:
            sys.stderr.write("\r\033[K" + line)
            if stage in ("end",):
                sys.stderr.write("\n")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return c.wait(job_id, on_event=show)
