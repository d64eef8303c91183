"""Local simulator: every party is a separate OS process (spawned, not forked)
talking gloo over loopback, exactly as a deployed worker would."""

from __future__ import annotations

import multiprocessing as mp
import queue
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from .errors import InputError, MPCError
from .params import MeanShiftParams


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _party_main(rank: int, world: int, port: int, points: np.ndarray,
                params: MeanShiftParams, timeout_s: float, out: mp.Queue,
                report_progress: bool) -> None:
    from .runtime import MPCConfig, run_party

    def progress(ev: dict) -> None:
        if report_progress and rank == 0:
            out.put(("progress", rank, ev))

    try:
        cfg = MPCConfig(rank=rank, world_size=world, master_port=port, timeout_s=timeout_s)
        res = run_party(points, params, cfg, progress, name=f"party {rank}")
        out.put(("result", rank, res))
    except (InputError, MPCError) as exc:
        out.put(("error", rank, (type(exc).__name__, str(exc))))
    except BaseException as exc:  # never let a worker die silently
        out.put(("error", rank, ("MPCError", f"{type(exc).__name__} in party {rank}")))
        traceback.print_exc(limit=0)


@dataclass
class SimulationRun:
    outcomes: list            # PartyOutcome per rank
    wall_s: float

    @property
    def receiver(self):
        return next(o for o in self.outcomes if o.centroids is not None)


def run_simulation(parts: Sequence[np.ndarray], params: MeanShiftParams,
                   timeout_s: float = 120.0,
                   progress: Optional[Callable[[dict], None]] = None) -> SimulationRun:
    """Run one job with len(parts) party processes; raise InputError/MPCError on failure."""
    world = len(parts)
    if world < 2:
        raise InputError("parties: at least 2 parties are needed")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_party_main,
                         args=(r, world, port, np.asarray(parts[r]), params, timeout_s, out,
                               progress is not None), daemon=True)
             for r in range(world)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results: dict = {}
    errors: list = []
    deadline = time.monotonic() + timeout_s * (params.max_iter + 10)
    try:
        while len(results) + len(errors) < world:
            try:
                kind, rank, payload = out.get(timeout=1.0)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise MPCError("simulation timed out") from None
                dead = [r for r, p in enumerate(procs)
                        if not p.is_alive() and r not in results
                        and r not in {e[0] for e in errors}]
                if dead and out.empty():
                    time.sleep(0.5)
                    if out.empty():
                        raise MPCError(f"party {dead[0]} exited without a result") from None
                continue
            if kind == "progress":
                progress(payload)
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
    if errors:
        input_errs = [e for e in errors if e[1][0] == "InputError"]
        rank, (kind, msg) = (input_errs or errors)[0]
        raise (InputError if kind == "InputError" else MPCError)(msg)
    return SimulationRun([results[r] for r in range(world)], time.perf_counter() - t0)


def _fn_main(rank: int, world: int, port: int, fn, args, timeout_s: float, out) -> None:
    from .params import MeanShiftParams
    from .runtime import MPCConfig, _Session

    try:
        cfg = MPCConfig(rank=rank, world_size=world, master_port=port, timeout_s=timeout_s)
        dummy = MeanShiftParams(bandwidth=0.1, bounds=([0.0], [1.0]))
        with _Session(cfg, dummy):
            out.put(("result", rank, fn(rank, *args)))
    except BaseException as exc:
        out.put(("error", rank, f"{type(exc).__name__}: {exc}"))


def run_mpc_function(fn, world_size: int, args: tuple = (), timeout_s: float = 60.0) -> list:
    """Run fn(rank, *args) inside an MPC session in world_size spawned processes;
    return the per-rank results. For tests and experiments with protocol pieces."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_fn_main, args=(r, world_size, port, fn, args, timeout_s, out),
                         daemon=True) for r in range(world_size)]
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
    return [results[r] for r in range(world_size)]
