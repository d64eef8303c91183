"""Local simulator: every party (and the dealer) is a separate OS process
(spawned, not forked) with its own listening port on loopback and, by default,
a throw-away certificate: the same pinned TLS links and dealer as a deployment.

``provider="first-party"`` (rank 0 deals, so rank 0 could read every share)
and ``transport="trusted-network"`` (plaintext links) exist for experiments
only; the outcome says which were used."""

from __future__ import annotations

import multiprocessing as mp
import queue
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from .errors import InputError, MPCError
from .params import MeanShiftParams


def free_ports(k: int) -> list:
    """k distinct free loopback ports. All k sockets are held open until every
    port is known: picked one at a time, the kernel may hand out one port twice,
    and two ranks of a job would then meet at one address."""
    socks = [socket.socket() for _ in range(k)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def local_configs(world: int, provider: str = "dealer", transport: str = "tls",
                  directory: Optional[str] = None, timeout_s: float = 60.0,
                  context: str = "") -> list:
    """MPCConfig for every rank of a job on loopback (parties, then the dealer),
    with free ports and, for TLS, a throw-away CA and certificates in directory."""
    from .devcerts import ephemeral_pki
    from .runtime import MPCConfig, Peer

    names = [f"party:sim{r}" for r in range(world)]
    if provider == "dealer":
        names.append("dealer:sim")
    peers = tuple(Peer(n, "127.0.0.1", port) for n, port in zip(names, free_ports(len(names))))
    pki = {}
    if transport == "tls":
        pki = ephemeral_pki(directory or tempfile.mkdtemp(prefix="sms-sim-"), names)
    return [MPCConfig(rank=r, world_size=world, peers=peers, security=pki.get(n),
                      transport=transport, provider=provider, context=context,
                      timeout_s=timeout_s) for r, n in enumerate(names)]


def _party_main(cfg, points: np.ndarray, params: MeanShiftParams, out: mp.Queue,
                report_progress: bool) -> None:
    from .runtime import run_dealer, run_party

    rank = cfg.rank

    def progress(ev: dict) -> None:
        if report_progress and rank == 0:
            out.put(("progress", rank, ev))

    try:
        if cfg.is_dealer:
            out.put(("dealer", rank, run_dealer(cfg)))
            return
        res = run_party(points, params, cfg, progress, name=f"party {rank}")
        out.put(("result", rank, res))
    except (InputError, MPCError) as exc:
        out.put(("error", rank, (type(exc).__name__, str(exc))))
    except BaseException as exc:  # never let a worker die silently
        out.put(("error", rank, ("MPCError", f"{type(exc).__name__} in rank {rank}")))
        traceback.print_exc(limit=0)


def _party_input(part):
    """An array, or a LocalData (rows where they live: local_data.py) as it is."""
    from .local_data import LocalData

    return part if isinstance(part, LocalData) else np.asarray(part)


@dataclass
class SimulationRun:
    outcomes: list            # PartyOutcome per rank
    wall_s: float

    @property
    def receiver(self):
        return next(o for o in self.outcomes if o.centroids is not None)


def run_simulation(parts: Sequence[np.ndarray], params: MeanShiftParams,
                   timeout_s: float = 120.0,
                   progress: Optional[Callable[[dict], None]] = None,
                   provider: str = "dealer", transport: str = "tls") -> SimulationRun:
    """Run one job with len(parts) party processes (plus the dealer's);
    raise InputError/MPCError on failure."""
    import json

    world = len(parts)
    if world < 2:
        raise InputError("parties: at least 2 parties are needed")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    tmp = tempfile.TemporaryDirectory(prefix="sms-sim-")
    cfgs = local_configs(world, provider, transport, tmp.name, timeout_s,
                         context=json.dumps(params.to_dict(), sort_keys=True))
    empty = np.zeros((0, params.dim))
    procs = [ctx.Process(target=_party_main,
                         args=(cfg, _party_input(parts[cfg.rank]) if cfg.rank < world
                               else empty,
                               params, out, progress is not None), daemon=True)
             for cfg in cfgs]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results: dict = {}
    errors: list = []
    dealt = None
    deadline = time.monotonic() + timeout_s * (params.max_iter + 10)
    try:
        while len(results) + len(errors) < world:
            try:
                kind, rank, payload = out.get(timeout=1.0)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise MPCError("simulation timed out") from None
                dead = [r for r, p in enumerate(procs)
                        if r < world and not p.is_alive() and r not in results
                        and r not in {e[0] for e in errors}]
                if dead and out.empty():
                    time.sleep(0.5)
                    if out.empty():
                        raise MPCError(f"party {dead[0]} exited without a result") from None
                continue
            if kind == "progress":
                progress(payload)
            elif kind == "dealer":
                dealt = payload
            elif kind == "result":
                results[rank] = payload
            else:
                errors.append((rank, payload))
                if payload[0] == "InputError":
                    break
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        tmp.cleanup()
    if errors:
        input_errs = [e for e in errors if e[1][0] == "InputError"]
        rank, (kind, msg) = (input_errs or errors)[0]
        raise (InputError if kind == "InputError" else MPCError)(msg)
    return SimulationRun([results[r] for r in range(world)], time.perf_counter() - t0)


def _fn_main(cfg, fn, args, out) -> None:
    from .runtime import _Session, run_dealer

    try:
        if cfg.is_dealer:
            run_dealer(cfg)
            return
        with _Session(cfg):
            out.put(("result", cfg.rank, fn(cfg.rank, *args)))
    except BaseException as exc:
        out.put(("error", cfg.rank, f"{type(exc).__name__}: {exc}"))


def run_mpc_function(fn, world_size: int, args: tuple = (), timeout_s: float = 60.0,
                     provider: str = "dealer", transport: str = "tls") -> list:
    """Run fn(rank, *args) inside an MPC session in world_size spawned processes
    (plus the dealer's); return the per-rank results. For tests and experiments
    with protocol pieces."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    tmp = tempfile.TemporaryDirectory(prefix="sms-fn-")
    cfgs = local_configs(world_size, provider, transport, tmp.name, timeout_s)
    procs = [ctx.Process(target=_fn_main, args=(cfg, fn, args, out), daemon=True)
             for cfg in cfgs]
    for p in procs:
        p.start()
    results: dict = {}
    try:
        while len(results) < world_size:
            try:
                kind, rank, payload = out.get(timeout=timeout_s)
            except queue.Empty:
                raise MPCError("MPC function timed out") from None
            if kind == "error":
                raise MPCError(f"rank {rank}: {payload}")
            results[rank] = payload
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        tmp.cleanup()
    return [results[r] for r in range(world_size)]
