"""The links a job's ranks talk over, as an interface.

The communicator (communicator.py), the session set-up (runtime.py) and the
dealer (correlations.py, dealer_service.py) use only :class:`Transport`. Two implementations:

- :class:`mesh.Mesh`: the job's real links, TLS 1.3 with pinned identities
  (or plaintext TCP as the explicit "trusted-network" transport); every
  deployment and every test whose subject is the link uses it;
- :class:`LocalLinks`: already connected socket pairs between processes
  forked from one parent, with no handshake, no certificate and no
  encryption. For protocol unit tests only (comparisons, division, merge,
  opening counts), where the link is not what is tested: they start in a
  fraction of the time. Never for data anyone needs to protect.
"""

from __future__ import annotations

import socket
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from .mesh import Mesh, Peer, _Link


@runtime_checkable
class Transport(Protocol):
    """Framed, ordered, reliable messages between this rank and every other."""

    rank: int
    sent_bytes: int          # payload bytes queued for sending so far

    def send(self, rank: int, payload) -> None:
        """Queue one frame (bytes-like) for ``rank``; sent by the next flush/recv."""

    def recv(self, rank: int) -> np.ndarray:
        """The next frame from ``rank`` (uint8 array), waiting for it; raises
        errors.PeerLost if the peer left or did not answer in time."""

    def ready(self, rank: int) -> bool:
        """Whether a frame from ``rank`` has arrived (recv would not wait); never waits."""

    def flush(self) -> None:
        """Send everything queued."""

    def received_from(self, rank: int) -> int:
        """Payload bytes received from ``rank`` so far."""

    def close(self) -> None:
        """Close every link."""


class LocalLinks(Mesh):
    """Links over connected sockets made by :func:`socket_pairs` before the
    ranks' processes were forked: the framing and the pump of :class:`Mesh`,
    without its connection set-up, handshake or TLS."""

    def __init__(self, rank: int, socks: dict, timeout_s: float = 60.0):
        n = max([rank, *socks]) + 1
        self._init_links(rank, [Peer(f"local:{r}", "localhost", 0) for r in range(n)],
                         timeout_s)
        self.digest, self.security, self._listen_host = b"", None, None
        self.links = {r: _Link(r, s) for r, s in socks.items()}
        self._watch_links()


def socket_pairs(n: int) -> list:
    """For n ranks, one connected socket pair per pair of ranks: element r is
    {peer rank: rank r's end}. Fork the ranks, then give each
    :func:`keep_own` its element."""
    ends: list = [{} for _ in range(n)]
    for a in range(n):
        for b in range(a + 1, n):
            ends[a][b], ends[b][a] = socket.socketpair()
    return ends


def keep_own(ends: Sequence[dict], rank: int) -> dict:
    """In rank's process: close every other rank's ends; returns rank's own."""
    for r, socks in enumerate(ends):
        if r != rank:
            for s in socks.values():
                s.close()
    return dict(ends[rank])
