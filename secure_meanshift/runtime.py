"""One party's MPC session: the single place where the Beaver-triple provider
and the transport between workers are chosen, and where every rendezvous and
collective gets a timeout.

Today: provider "TFP" (CrypTen's trusted first party: rank 0 deals the triples
and could see everything; fine for simulation), transport "gloo" (plaintext TCP).
Hardening swaps these two choices here and nowhere else.
"""

from __future__ import annotations

import datetime
import functools
import os
import time
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from ._compat import import_crypten
from .data import check_points, from_unit, to_unit
from .errors import InputError, MPCError
from .params import MeanShiftParams, resolve_summary
from .protocol import Progress, SecureResult, run_protocol

PEER_LOST = "a peer left or stopped answering"   # the coordinator keys its blame on this
PROVIDERS = ("TFP",)
# "gloo-p2p": gloo TCP pairs, every opening sent point to point (one hop; transport.py)
# "gloo":     CrypTen's own ring collectives over the same pairs
TRANSPORTS = ("gloo-p2p", "gloo")


@dataclass(frozen=True)
class MPCConfig:
    """How this worker joins the other parties' workers.

    rank / world_size: this party's position among the job's parties.
    master_addr / master_port: the TCP rendezvous one party advertises.
    timeout_s: bound on the rendezvous and on every collective.
    """

    rank: int
    world_size: int
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    timeout_s: float = 60.0
    provider: str = "TFP"
    transport: str = "gloo-p2p"
    socket_ifname: Optional[str] = None
    threads: int = 1

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise InputError(f"provider: {self.provider!r} not available ({', '.join(PROVIDERS)})")
        if self.transport not in TRANSPORTS:
            raise InputError(f"transport: {self.transport!r} not available")
        if not 0 <= self.rank < self.world_size:
            raise InputError("rank: must be in [0, world_size)")


@dataclass
class PartyOutcome:
    """What one party's worker ends with. Centroids are in data units and are
    present only on ranks listed in ``reveal_to``."""

    rank: int
    centroids: Optional[np.ndarray]
    sizes: Optional[np.ndarray]
    iterations: int
    per_iteration: list = field(default_factory=list)
    share_s: float = 0.0
    wall_s: float = 0.0
    communication: dict = field(default_factory=dict)
    points: int = 0
    rows: int = 0

    def to_dict(self) -> dict:
        return {
            "rank": self.rank,
            "centroids": None if self.centroids is None else self.centroids.tolist(),
            "sizes": None if self.sizes is None else self.sizes.tolist(),
            "iterations": self.iterations,
            "per_iteration": self.per_iteration,
            "share_s": self.share_s,
            "wall_s": self.wall_s,
            "communication": self.communication,
            "points": self.points,
            "rows": self.rows,
        }


class _Session:
    """crypten.init / uninit with timeouts; one per worker process."""

    def __init__(self, cfg: MPCConfig, params: MeanShiftParams):
        self.cfg = cfg
        self.params = params

    def __enter__(self):
        import torch
        import torch.distributed as dist

        crypten = import_crypten()
        c = self.cfg
        torch.set_num_threads(max(1, c.threads))
        os.environ.update({
            "RANK": str(c.rank), "WORLD_SIZE": str(c.world_size),
            "RENDEZVOUS": f"tcp://{c.master_addr}:{c.master_port}",
            "DISTRIBUTED_BACKEND": "gloo",
        })
        if c.socket_ifname:
            os.environ["GLOO_SOCKET_IFNAME"] = c.socket_ifname
        timeout = datetime.timedelta(seconds=c.timeout_s)
        # CrypTen passes no timeout: torch's default is 30 minutes.
        if not getattr(dist.init_process_group, "_sms_patched", False):
            for name in ("init_process_group", "new_group"):
                orig = getattr(dist, name)
                patched = functools.partial(orig, timeout=timeout)
                patched._sms_patched = True
                setattr(dist, name, patched)
        crypten.cfg.mpc.provider = c.provider
        crypten.cfg.communicator.verbose = True
        crypten.cfg.encoder.precision_bits = 16   # bulk work; see fixedpoint.BULK_BITS
        try:
            crypten.init()
        except Exception as exc:  # rendezvous failure or timeout
            raise MPCError(f"could not join the other parties at {c.master_addr}:"
                           f"{c.master_port} ({type(exc).__name__}): {PEER_LOST}") from None
        from ._compat import freeze_config

        freeze_config(crypten)
        if c.transport == "gloo-p2p":
            from .transport import install_p2p

            install_p2p(crypten.comm.get())
        return self

    def __exit__(self, *exc):
        crypten = import_crypten()
        try:
            crypten.uninit()
        except Exception:
            pass
        return False


def prepare_local(points: np.ndarray, params: MeanShiftParams, name: str = "points"
                  ) -> tuple[np.ndarray, Optional[np.ndarray], int]:
    """Check the owner's points and map them to the unit box; summarise them
    locally when the job asks for it. Returns (rows, weights or None, n)."""
    x = check_points(points, params.bounds, name)
    unit = to_unit(x, params.lo, params.scale)
    if params.summary is None:
        return unit, None, len(x)
    from .summary import summarize

    reps, w = summarize(unit, params.h_unit * params.summary)
    return reps, w, len(x)


def run_party(points: np.ndarray, params: MeanShiftParams, mpc: MPCConfig,
              progress: Optional[Progress] = None, name: str = "points") -> PartyOutcome:
    """Everything one party does for one job, in its own (fresh) process.

    Bad input raises InputError before any connection is made.
    A lost peer or a timeout raises MPCError.
    """
    t0 = time.perf_counter()
    check_points(points, params.bounds, name)       # fail before connecting to anyone
    with _Session(mpc, params):
        try:
            if params.summary == "auto":
                params = replace(params, summary=resolve_summary("auto", _total_points(len(points))))
            rows, weights, n = prepare_local(points, params, name)
            res: SecureResult = run_protocol(rows, weights, params, progress, n)
        except InputError:
            raise
        except Exception as exc:
            raise MPCError(f"secure computation aborted: {_describe(exc)}") from None
    cents = None if res.centroids is None else from_unit(res.centroids, params.lo, params.scale)
    return PartyOutcome(mpc.rank, cents, res.sizes, res.iterations, res.per_iteration,
                        res.share_s, time.perf_counter() - t0, res.communication,
                        res.points, res.rows)


def _total_points(n: int) -> int:
    import torch

    crypten = import_crypten()
    return int(sum(int(t) for t in crypten.comm.get().all_gather(torch.tensor([n]))))


def _describe(exc: BaseException) -> str:
    """A reason without payloads: exception type plus a short, value-free hint."""
    text = str(exc)
    for hint in ("Connection closed by peer", "Connection reset", "Timed out",
                 "timeout", "Broken pipe", "Connection refused"):
        if hint.lower() in text.lower():
            return f"{type(exc).__name__} ({hint.lower()}): {PEER_LOST}"
    return type(exc).__name__
