"""Local simulator: every party (and the dealer) is a separate OS process
with its own listening port on loopback and, by default, a throw-away
certificate: the same pinned TLS links and dealer as a deployment. The
processes are forked by a fork server that has imported the engine once (a
fresh interpreter started with the first run or by start_fork_server, never
a fork of the caller; SECURE_MEANSHIFT_START=spawn spawns each rank instead).

``provider="first-party"`` (rank 0 deals, so rank 0 could read every share)
and ``transport="trusted-network"`` (plaintext links) exist for experiments
only; the outcome says which were used."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from multiprocessing import context as _mp_context
from multiprocessing import forkserver, popen_forkserver, popen_spawn_posix, spawn
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from ._lifeline import CALLER_ENV, arm_parent_death_signal
from .devcerts import ephemeral_pki
from .errors import InputError, MPCError
from .local_data import LocalData
from .mpc.transport import LocalLinks, keep_own, socket_pairs
from .data import check_points, data_bounds, to_unit
from .mpc.config import MPCConfig
from .mpc.mesh import Peer
from .params import EstimateBandwidth, MeanShiftParams, default

# The runtime (torch, CrypTen) loads in the ranks only (the fork server preloads
# it: _warm.py). The caller builds configs (mpc/config.py) and unpickles the
# outcomes (outcome.py) without it: importing torch cost the caller about 1.5 s
# of CPU, taken from the ranks on a 2-core machine, and its teardown at exit
# another 0.5 s of wall time.


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


# ---- starting party processes without the caller's __main__ -------------------
# multiprocessing's spawn re-runs the caller's main script (or module) in every
# child before unpickling the target: a script without an
# ``if __name__ == "__main__":`` guard would call fit again in each party
# process. The targets here live in this package, so the children need nothing
# from __main__: the preparation data is sent without it.

_PREP_LOCK = threading.Lock()


def _launch_without_main(launch, process_obj, env: Optional[dict] = None) -> None:
    """Run a Popen's _launch with the caller's __main__ left out of the
    preparation data, and the caller's pid in the environment (for the new
    interpreter's _lifeline: a spawned party, or the fork server), plus ``env``."""
    original = spawn.get_preparation_data

    def without_main(name):
        data = original(name)
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
        return data

    env = {CALLER_ENV: str(os.getpid()), **(env or {})}   # the child's _lifeline reads it
    with _PREP_LOCK:
        spawn.get_preparation_data = without_main
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            launch(process_obj)
        finally:
            spawn.get_preparation_data = original
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


class _NoMainPopen(popen_spawn_posix.Popen):
    def _launch(self, process_obj):
        _launch_without_main(super()._launch, process_obj)


def _server_env() -> dict:
    """The fork server's environment: it imports the engine from the caller's
    sys.path (multiprocessing passes it to spawned children, not to the server,
    which would start from the working directory and PYTHONPATH)."""
    return {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "PYTHONSAFEPATH": "1"}


class _NoMainForkServerPopen(popen_forkserver.Popen):
    def _launch(self, process_obj):
        _launch_without_main(super()._launch, process_obj, _server_env())  # may start the server


# The fork server: one interpreter per caller that imports the engine (torch,
# CrypTen) once, then forks every party and dealer process of every run. A
# spawned rank imports them itself: 2-3 s of CPU each, 4 at once on the
# benchmark machine's 2 cores (about 7 s of a job's start-up under load,
# measured with the simulator's trace). It starts with the first run (or
# earlier: start_fork_server) and lives as long as the caller (it dies with
# it: _lifeline); its children do too.
FORK_SERVER_PRELOAD = ["secure_meanshift._warm"]


def _start_method() -> str:
    """"forkserver" where available (Linux, macOS), else "spawn". The environment
    variable SECURE_MEANSHIFT_START=spawn forces spawned ranks."""
    if os.environ.get("SECURE_MEANSHIFT_START") == "spawn":
        return "spawn"
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


def start_fork_server() -> None:
    """Start the fork server now, if ranks are forked (_start_method) and it does
    not run yet: its import of the engine (about 1.5 s of CPU) then overlaps the
    caller's own work (generating or reading the data, the plaintext twin)
    instead of following it.
    Call it once the inputs are checked (a refused run starts no process).
    Returns at once; the first run's ranks are forked when the server has
    imported the engine."""
    if _start_method() != "forkserver":
        return
    forkserver.set_forkserver_preload(FORK_SERVER_PRELOAD)
    _launch_without_main(lambda _: forkserver.ensure_running(), None, _server_env())


class _ServedProcess(_mp_context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj):
        forkserver.set_forkserver_preload(FORK_SERVER_PRELOAD)   # no effect once it runs
        return _NoMainForkServerPopen(process_obj)


class PartyProcess(_mp_context.SpawnProcess):
    """A party (or dealer) process that does not import the caller's
    ``__main__``: ``fit`` works from a plain script without a ``__main__``
    guard, and from a notebook. Its target must be importable (a function of
    this package). Forked by the fork server (_start_method), else spawned."""

    @staticmethod
    def _Popen(process_obj):
        if _start_method() == "forkserver":
            return _ServedProcess._Popen(process_obj)
        return _NoMainPopen(process_obj)


def _child_setup() -> None:
    """In a party process: leave Ctrl-C to the caller (which ends every party at
    once) and die with the caller if it is killed (Linux parent-death signal)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    arm_parent_death_signal()        # armed at import already (_lifeline); again for other starts
    parent = mp.parent_process()
    if parent is not None and os.getppid() != parent.pid and not _exists(parent.pid):
        os._exit(1)          # the caller died before that (a forked rank's parent: the server)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Cancelled(KeyboardInterrupt):
    """The caller received SIGTERM during a run (every party process was ended)."""


@contextmanager
def _sigterm_cancels():
    """While a run is going: SIGTERM raises Cancelled (so the parties are ended)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Cancelled("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def end_processes(procs: Sequence, grace_s: float = 5.0, at_once: bool = False) -> None:
    """Join every process (after grace_s kill it); ``at_once``: kill them all now."""
    if at_once:
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(timeout=2)
        return
    end = time.monotonic() + grace_s
    for p in procs:
        p.join(timeout=max(0.0, end - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(timeout=2)


def _exit_done(out) -> None:
    """A rank's work is done and its last message is on the queue: wait until the
    message is in the pipe, then end the process at once, without the
    interpreter's teardown (unloading torch and CrypTen took 0.7-3.7 s per
    process here, time the caller spent joining). Its session has closed its
    links already. Only in a child process; a no-op anywhere else."""
    if mp.parent_process() is None:
        return
    out.close()
    out.join_thread()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


#: a directory: every party and dealer process writes its cProfile statistics
#: there (rank<r>.pstats; function names and times only). For profiling runs
#: (benchmarks/rank_profile.py); read when the fork server starts.
PROFILE_ENV = "SECURE_MEANSHIFT_PROFILE"


@contextmanager
def _profiled(rank: int):
    """cProfile around a rank's work when PROFILE_ENV names a directory: CPU
    time (process_time), so that waits and a busy machine do not count."""
    folder = os.environ.get(PROFILE_ENV)
    if not folder:
        yield
        return
    import cProfile

    prof = cProfile.Profile(time.process_time)
    prof.enable()
    try:
        yield
    finally:
        prof.disable()
        prof.dump_stats(os.path.join(folder, f"rank{rank}.pstats"))


def _party_main(cfg, points: np.ndarray, params: MeanShiftParams, out: mp.Queue,
                report_progress: bool, keep_noise: bool = False,
                check_bandwidth: Optional[Callable[[float], None]] = None, links=None) -> None:
    _child_setup()
    rank = cfg.rank

    def progress(ev: dict) -> None:
        if report_progress and rank == 0:
            out.put(("progress", rank, ev))

    try:
        with _profiled(rank):
            _party_work(cfg, points, params, out, progress, keep_noise, check_bandwidth, links)
    except (InputError, MPCError) as exc:
        out.put(("error", rank, (type(exc).__name__, str(exc))))
    except BaseException as exc:  # never let a worker die silently
        out.put(("error", rank, ("MPCError", f"{type(exc).__name__} in rank {rank}")))
        traceback.print_exc(limit=0)
    _exit_done(out)


def _party_work(cfg, points, params: MeanShiftParams, out, progress: Callable, keep_noise: bool,
                check_bandwidth: Optional[Callable[[float], None]], links) -> None:
    """One rank's job (_party_main): the dealer's service or a party's run; its
    result on ``out``."""
    from .runtime import run_dealer, run_party   # preloaded by the fork server

    rank = cfg.rank
    if cfg.is_dealer:
        out.put(("dealer", rank, run_dealer(cfg, links)))
    elif params.estimates_bandwidth:    # the estimate in this same session (one set of
        out.put(("result", rank, _estimate_then_run(   # processes and links serves both)
            points, params, cfg, progress, check_bandwidth, links)))
    else:
        out.put(("result", rank, run_party(points, params, cfg, progress,
                                           name=f"party {rank}", keep_noise=keep_noise,
                                           transport=links)))


def _estimate_then_run(points, params: MeanShiftParams, cfg, progress: Callable,
                       check_bandwidth: Optional[Callable[[float], None]], links):
    """bandwidth.run_party_auto: the secure estimate, then mean-shift with it, in
    one MPC session. The estimate (public to every party) also goes to the
    simulation's caller, which holds every party's data anyway."""
    from .bandwidth import run_party_auto

    def check(h: float) -> None:
        if check_bandwidth is not None:
            check_bandwidth(h)
        progress({"stage": "bandwidth", "bandwidth": float(h)})

    if isinstance(points, LocalData):          # the estimate needs the rows
        points = points.points()
    return run_party_auto(points, params, cfg, progress, name=f"party {cfg.rank}",
                          check=check, transport=links)[0]


def _party_input(part):
    """An array, or a LocalData (rows where they live: local_data.py) as it is."""
    return part if isinstance(part, LocalData) else np.asarray(part)


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


STALL_FACTOR = 3     # run_simulation fails after STALL_FACTOR * timeout_s without an event


def run_simulation(parts: Sequence[np.ndarray], params: MeanShiftParams,
                   timeout_s: float = 120.0,
                   progress: Optional[Callable[[dict], None]] = None,
                   provider: str = "dealer", transport: str = "tls",
                   keep_noise: bool = False,
                   check_bandwidth: Optional[Callable[[float], None]] = None
                   ) -> SimulationRun:
    """Run one job with len(parts) party processes (plus the dealer's);
    raise InputError/MPCError on failure. ``transport``: "tls" (default),
    "trusted-network" (plaintext TCP) or "local" (tests: see _start_ranks).
    ``keep_noise`` (DP mode, tests only): every party returns its own noise
    (SimulationRun.dp_noise).

    A bandwidth to estimate (``params.bandwidth`` an EstimateBandwidth) is
    estimated by the same party processes in the same session, then used
    (bandwidth.run_party_auto; each outcome's ``params`` hold it; party 0's
    "bandwidth" progress event carries it). ``check_bandwidth(h)`` (picklable,
    e.g. a functools.partial of validation.refuse_coarse_grid) runs in every
    party on the estimate and may refuse it with an InputError.

    Deadline: the run may go on as long as it makes progress; it fails when
    party 0 reports nothing (no sharing, chunk or iteration event) for
    STALL_FACTOR * ``timeout_s`` seconds, so the limit scales with the job
    instead of being a fixed multiple of max_iter. (A silent peer is given up
    after ``timeout_s`` by the links themselves; the factor leaves room for the
    phases without events: start-up, sharing, merge and reveal.)
    Ctrl-C (KeyboardInterrupt) or SIGTERM in the caller ends every party process
    at once; the parties ignore Ctrl-C themselves and die with the caller."""
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
    ok = False
    procs: list = []
    try:
        with _sigterm_cancels():
            _start_ranks(procs, cfgs, _party_main, lambda cfg: (
                _party_input(parts[cfg.rank]) if cfg.rank < world else empty, params, out,
                True, keep_noise, check_bandwidth), local)
            results, errors = _collect(out, procs, world, timeout_s, progress)
            ok = True
    finally:
        end_processes(procs, at_once=not ok)
        tmp.cleanup()
    if errors:
        input_errs = [e for e in errors if e[1][0] == "InputError"]
        rank, (kind, msg) = (input_errs or errors)[0]
        raise (InputError if kind == "InputError" else MPCError)(msg)
    return SimulationRun([results[r] for r in range(world)], time.perf_counter() - t0)


def _collect(out, procs: list, world: int, timeout_s: float,
             progress: Optional[Callable[[dict], None]]) -> tuple[dict, list]:
    """Read the parties' messages until every party has a result or an error."""
    results: dict = {}
    errors: list = []
    heard = time.monotonic()
    while len(results) + len(errors) < world:
        try:
            kind, rank, payload = out.get(timeout=1.0)
        except queue.Empty:
            tick = getattr(progress, "render", None)      # e.g. progress.ProgressLine
            if tick is not None:
                tick()
            if time.monotonic() - heard > STALL_FACTOR * timeout_s:
                raise MPCError(f"simulation timed out: no progress from the parties for "
                               f"{STALL_FACTOR * timeout_s:g} s ({STALL_FACTOR} x timeout_s)"
                               ) from None
            dead = [r for r, p in enumerate(procs)
                    if r < world and not p.is_alive() and r not in results
                    and r not in {e[0] for e in errors}]
            if dead and out.empty():
                time.sleep(0.5)
                if out.empty():
                    raise MPCError(f"party {dead[0]} exited without a result") from None
            continue
        heard = time.monotonic()
        if kind == "progress":
            if progress is not None:
                progress(payload)
        elif kind == "result":
            results[rank] = payload
        elif kind == "error":
            errors.append((rank, payload))
            if payload[0] == "InputError":
                break
    return results, errors


def _fn_main(cfg, fn, args, out, links=None) -> None:
    _child_setup()
    from .runtime import _Session, run_dealer   # preloaded by the fork server
    try:
        if cfg.is_dealer:
            run_dealer(cfg, links)
        else:
            with _Session(cfg, links):
                out.put(("result", cfg.rank, fn(cfg.rank, *args)))
    except BaseException as exc:
        out.put(("error", cfg.rank, f"{type(exc).__name__}: {exc}"))
    _exit_done(out)


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
    results: dict = {}
    ok = False
    procs: list = []
    try:
        with _sigterm_cancels():
            _start_ranks(procs, cfgs, _fn_main, lambda cfg: (fn, args, out), local)
            while len(results) < world_size:
                try:
                    kind, rank, payload = out.get(timeout=timeout_s)
                except queue.Empty:
                    raise MPCError("MPC function timed out") from None
                if kind == "error":
                    raise MPCError(f"rank {rank}: {payload}")
                results[rank] = payload
            ok = True
    finally:
        end_processes(procs, at_once=not ok)
        tmp.cleanup()
    return [results[r] for r in range(world_size)]


def _context(local: bool):
    return mp.get_context("fork" if local else _start_method())


def _local_rank(target, cfg, args: tuple, ends: list) -> None:
    """A forked rank over its socket pairs (transport "local")."""
    target(cfg, *args, links=LocalLinks(cfg.rank, keep_own(ends, cfg.rank), cfg.timeout_s))


def _start_ranks(procs: list, cfgs: list, target, args_of: Callable, local: bool) -> None:
    """Start target(cfg, *args_of(cfg)) for every rank, appending each process to
    ``procs`` as it starts (so the caller can end them all on an interrupt): in
    spawned processes that connect the job's mesh and do not import the
    caller's __main__ (PartyProcess), or (local) in processes forked from this
    one over socket pairs made before the fork: no TLS, no handshake, no fresh
    interpreter (transport.LocalLinks; for tests whose subject is not the link)."""
    if not local:
        for cfg in cfgs:
            p = PartyProcess(target=target, args=(cfg, *args_of(cfg)), daemon=True)
            p.start()
            procs.append(p)
        return

    ctx = _context(True)
    ends = socket_pairs(len(cfgs))
    try:
        for cfg in cfgs:
            p = ctx.Process(target=_local_rank, args=(target, cfg, args_of(cfg), ends),
                            daemon=True)
            p.start()
            procs.append(p)
    finally:
        for socks in ends:          # every rank holds its own ends now
            for s in socks.values():
                s.close()


# ---- the bandwidth estimate on its own (bandwidth.py holds its protocol) ----
def _bandwidth_job(rank, parties, bounds, quantile, n_samples, seed):
    from .bandwidth import secure_bandwidth_unit

    lo, scale = np.asarray(bounds[0], float), float(np.max(np.subtract(bounds[1], bounds[0])))
    x = to_unit(check_points(np.asarray(parties[rank], float), tuple(map(tuple, bounds))),
                lo, scale)
    return secure_bandwidth_unit(x, quantile, n_samples, seed) * scale


def estimate_bandwidth(parties: Sequence[np.ndarray], quantile: float = default("quantile"),
                       n_samples: Optional[int] = default("n_samples"), seed: int = 0,
                       bounds=None, engine: str = "secure", timeout_s: float = 300.0) -> float:
    """scikit-learn's estimate_bandwidth over several parties' points (data units).

    ``engine="secure"``: one spawned process per party, only the bandwidth is
    opened; ``"plaintext"``: the twin. ``n_samples=None`` uses every point
    (scikit-learn's default; S x S work)."""
    from .bandwidth import plain_bandwidth

    how = EstimateBandwidth(quantile, n_samples)          # checks both (InputError)
    if bounds is None:
        bounds = data_bounds(parties)
    bounds = (list(map(float, bounds[0])), list(map(float, bounds[1])))
    if engine == "plaintext":
        return plain_bandwidth(parties, bounds, how.quantile, how.n_samples, seed)
    out = run_mpc_function(_bandwidth_job, len(parties),
                           ([np.asarray(q, float) for q in parties], bounds, how.quantile,
                            how.n_samples, seed), timeout_s=timeout_s)
    return float(out[0])
