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
                report_progress: bool, keep_noise: bool = False, links=None) -> None:
    from .runtime import run_dealer, run_party

    rank = cfg.rank

    def progress(ev: dict) -> None:
        if report_progress and rank == 0:
            out.put(("progress", rank, ev))

    try:
        if cfg.is_dealer:
            out.put(("dealer", rank, run_dealer(cfg, links)))
            return
        res = run_party(points, params, cfg, progress, name=f"party {rank}", transport=links,
                        keep_noise=keep_noise)
        out.put(("result", rank, res))
    except (InputError, MPCError) as exc:
        out.put(("error", rank, (type(exc).__name__, str(exc))))
    except BaseException as exc:  # never let a worker die silently
        out.put(("error", rank, ("MPCError", f"{type(exc).__name__} in rank {rank}")))
        traceback.print_exc(limit=0)


@dataclass
class SimulationRun:
    outcomes: list            # PartyOutcome per rank
    wall_s: float

    @property
    def receiver(self):
        return next(o for o in self.outcomes if o.centroids is not None)

    @property
    def dp_noise(self) -> Optional[np.ndarray]:
        """DP mode with keep_noise (tests): the parties' total noise per cell, for
        reference_meanshift(..., noise=...)."""
        if any(o.dp_noise is None for o in self.outcomes):
            return None
        return np.sum([o.dp_noise for o in self.outcomes], axis=0)


def run_simulation(parts: Sequence[np.ndarray], params: MeanShiftParams,
                   timeout_s: float = 120.0,
                   progress: Optional[Callable[[dict], None]] = None,
                   provider: str = "dealer", transport: str = "tls",
                   keep_noise: bool = False) -> SimulationRun:
    """Run one job with len(parts) party processes (plus the dealer's);
    raise InputError/MPCError on failure. ``transport``: "tls" (default),
    "trusted-network" (plaintext TCP) or "local" (tests: see _start_ranks).
    ``keep_noise`` (DP mode, tests only): every party returns its own noise
    (SimulationRun.dp_noise)."""
    import json

    world = len(parts)
    if world < 2:
        raise InputError("parties: at least 2 parties are needed")
    local = transport == "local"
    out = _context(local).Queue()
    tmp = tempfile.TemporaryDirectory(prefix="sms-sim-")
    cfgs = local_configs(world, provider, "trusted-network" if local else transport, tmp.name,
                         timeout_s, context=json.dumps(params.to_dict(), sort_keys=True))
    empty = np.zeros((0, params.dim))
    t0 = time.perf_counter()
    procs = _start_ranks(cfgs, _party_main, lambda cfg: (
        np.asarray(parts[cfg.rank]) if cfg.rank < world else empty, params, out,
        progress is not None, keep_noise), local)
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


def _fn_main(cfg, fn, args, out, links=None) -> None:
    from .runtime import _Session, run_dealer

    try:
        if cfg.is_dealer:
            run_dealer(cfg, links)
            return
        with _Session(cfg, links):
            out.put(("result", cfg.rank, fn(cfg.rank, *args)))
    except BaseException as exc:
        out.put(("error", cfg.rank, f"{type(exc).__name__}: {exc}"))


def _context(local: bool):
    return mp.get_context("fork" if local else "spawn")


def _local_rank(target, cfg, args: tuple, ends: list) -> None:
    """A forked rank over its socket pairs (transport "local")."""
    from .transport import LocalLinks, keep_own

    target(cfg, *args, links=LocalLinks(cfg.rank, keep_own(ends, cfg.rank), cfg.timeout_s))


def _start_ranks(cfgs: list, target, args_of: Callable, local: bool) -> list:
    """Start target(cfg, *args_of(cfg)) for every rank: in spawned processes
    that connect the job's mesh, or (local) in processes forked from this one
    over socket pairs made before the fork: no TLS, no handshake, no fresh
    interpreter (transport.LocalLinks; for tests whose subject is not the link)."""
    ctx = _context(local)
    if not local:
        procs = [ctx.Process(target=target, args=(cfg, *args_of(cfg)), daemon=True)
                 for cfg in cfgs]
    else:
        from .transport import socket_pairs

        ends = socket_pairs(len(cfgs))
        procs = [ctx.Process(target=_local_rank, args=(target, cfg, args_of(cfg), ends),
                             daemon=True) for cfg in cfgs]
    for p in procs:
        p.start()
    if local:
        for socks in ends:          # every rank holds its own ends now
            for s in socks.values():
                s.close()
    return procs


def run_mpc_function(fn, world_size: int, args: tuple = (), timeout_s: float = 60.0,
                     provider: str = "dealer", transport: str = "tls") -> list:
    """Run fn(rank, *args) inside an MPC session in world_size processes (plus
    the dealer's); return the per-rank results. For tests and experiments with
    protocol pieces. ``transport="local"``: forked ranks over socket pairs
    (see _start_ranks)."""
    local = transport == "local"
    out = _context(local).Queue()
    tmp = tempfile.TemporaryDirectory(prefix="sms-fn-")
    cfgs = local_configs(world_size, provider, "trusted-network" if local else transport,
                         tmp.name, timeout_s)
    procs = _start_ranks(cfgs, _fn_main, lambda cfg: (fn, args, out), local)
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
