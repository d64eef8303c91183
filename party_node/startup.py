"""Starting a node daemon: the party or dealer node for a config, its signal
handling (SIGTERM stops it, SIGHUP checks every data set again), its main loop."""

from __future__ import annotations

import os
import signal
import threading
from typing import Optional

from .config import NodeConfig
from .dealer import DealerNode
from .node import PartyNode


def _watch_signals(node: PartyNode) -> None:
    """SIGTERM asks the node to stop, SIGHUP to check every data set again. The
    handlers run on the main thread between any two of its steps, maybe while it
    holds a lock (the node's, an Event's, gRPC's): they only write the signal's
    number to a pipe; a thread of its own reads it and does the work."""
    rfd, wfd = os.pipe()
    os.set_blocking(wfd, False)

    def on_signal(signum, _frame) -> None:
        try:
            os.write(wfd, bytes([signum]))
        except OSError:                   # the pipe is full: a signal is pending anyway
            pass

    def dispatch() -> None:
        while True:
            signum = os.read(rfd, 1)[0]
            if signum == signal.SIGTERM:
                node.request_stop()
            elif signum == signal.SIGHUP:
                threading.Thread(target=node.recheck_datasets, args=(True,),
                                 daemon=True).start()

    threading.Thread(target=dispatch, name="signals", daemon=True).start()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)


def run_node(cfg: NodeConfig, checked: Optional[dict] = None) -> None:
    """Run until SIGTERM / Ctrl-C; stops the current job's worker on the way out.
    SIGHUP checks every data set again. ``checked``: datasets.check_all's result."""
    node = DealerNode(cfg, checked) if cfg.role == "dealer" else PartyNode(cfg, checked)
    _watch_signals(node)
    try:
        node.run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
