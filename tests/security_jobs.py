"""Rank processes for the security tests (tests/test_security.py): every rank of
a job (parties and the dealer) runs in its own spawned process, over real TLS
(or plaintext, as a control) links on loopback, exactly like simulate.py; the
entry points are module-level so that 'spawn' can pickle them.

:func:`recorded_rank` is a party (or the dealer) that records what it sees, as a
curious party would: every frame it receives from every other rank (marked with
the sender's rank; the dealer is rank ``world_size``), every opening (its own
part, the opened value, which frames were the other parties' parts), the keys
of its cryptographic streams and, on request, every frame it sent. It runs the
ordinary engine entry (``run_party`` / ``run_dealer``) unchanged.
"""

from __future__ import annotations

import inspect
import multiprocessing as mp
import queue
import time
import traceback
from typing import Optional, Sequence

import numpy as np


def _flat_numpy(x) -> np.ndarray:
    import torch

    if isinstance(x, (list, tuple)):
        return np.concatenate([_flat_numpy(t) for t in x]) if x else np.zeros(0, np.int64)
    if isinstance(x, torch.Tensor):
        return x.detach().reshape(-1).to(torch.int64).numpy().copy()
    return np.asarray(x, dtype=np.int64).reshape(-1).copy()


def _install_recorder(rec: dict, keep_sent: bool) -> None:
    """Patch the engine's link, communicator and randomness entry points of
    THIS process so that they log into ``rec`` (behaviour unchanged)."""
    from torch.distributed import ReduceOp

    from secure_meanshift.mpc import communicator as cm
    from secure_meanshift import disclosure
    from secure_meanshift.mpc import correlations, crypten_patches, csprng
    from secure_meanshift.mpc import mesh as meshmod

    state = {"phase": "connect", "op": None, "in_setup": False}
    rec.update(frames=[], openings=[], stream_keys=[], install_keys=None, sent=[],
               sends=0, recvs=0, rejected=[], collectives=[])

    # ---- links --------------------------------------------------------------
    Mesh = meshmod.Mesh
    orig_init, orig_send, orig_recv = Mesh.__init__, Mesh.send, Mesh.recv

    def init(self, *args, **kwargs):
        try:
            orig_init(self, *args, **kwargs)
        finally:
            rec["rejected"] = list(getattr(self, "rejected", []))
        state["phase"] = "setup"

    def send(self, rank, payload):
        rec["sends"] += 1
        if keep_sent:
            rec["sent"].append((rank, bytes(memoryview(payload).cast("B")), state["phase"]))
        return orig_send(self, rank, payload)

    def recv(self, rank):
        frame = orig_recv(self, rank)
        rec["recvs"] += 1
        rec["frames"].append((rank, bytes(frame), state["phase"], state["op"]))
        return frame

    Mesh.__init__, Mesh.send, Mesh.recv = init, send, recv

    # ---- collectives: own part, opened value, which frames were the others' parts
    def wrap(name):
        orig = getattr(cm.MeshCommunicator, name)
        sig = inspect.signature(orig)

        def f(self, *args, **kwargs):
            b = sig.bind(self, *args, **kwargs)
            b.apply_defaults()
            a = b.arguments
            first = len(rec["frames"])
            prev, state["op"] = state["op"], name
            try:
                out = orig(self, *args, **kwargs)
            finally:
                state["op"] = prev
            entry = {"kind": name, "phase": state["phase"], "frames": (first, len(rec["frames"]))}
            if name in ("all_reduce", "reduce"):
                entry["op"] = "BXOR" if a.get("op") == ReduceOp.BXOR else "SUM"
                entry["own"] = _flat_numpy(a["input"])
                entry["result"] = None if out is None else _flat_numpy(out)
                entry["dst"] = a.get("dst")
                rec["openings"].append(entry)
            rec["collectives"].append(name)
            return out

        setattr(cm.MeshCommunicator, name, f)

    for name in ("all_reduce", "reduce", "all_gather", "gather", "broadcast",
                 "broadcast_obj", "scatter", "send", "recv"):
        wrap(name)

    # ---- protocol phases: the end (merge, shuffle, final reveal) is marked by
    # the engine's own seams: the step it charges traffic to, and the one
    # disclosure of the result (disclosure.py) ----
    ends = {"merge": "merge", "sizes": "merge", "reveal": "shuffle"}
    orig_set_step = cm.MeshCommunicator.set_step

    def set_step(self, name):
        state["phase"] = ends.get(name, "protocol")
        return orig_set_step(self, name)

    def on_disclosure(event):
        if event.why == "result":
            state["phase"] = "reveal"

    cm.MeshCommunicator.set_step = set_step
    disclosure.add_observer(on_disclosure)

    # ---- keys of every cryptographic stream --------------------------------
    orig_stream_init = csprng.Stream.__init__

    def stream_init(self, key):
        rec["stream_keys"].append(("dealer" if state["in_setup"] else state["phase"],
                                   bytes(key)))
        return orig_stream_init(self, key)

    csprng.Stream.__init__ = stream_init
    orig_install = crypten_patches.install_generators

    def install(prev_key, next_key, local_key, global_key):
        rec["install_keys"] = {"prev": bytes(prev_key), "next": bytes(next_key),
                               "local": bytes(local_key), "global": bytes(global_key)}
        return orig_install(prev_key, next_key, local_key, global_key)

    crypten_patches.install_generators = install
    orig_setup = correlations.party_setup

    def party_setup(*args, **kwargs):
        state["in_setup"] = True
        try:
            return orig_setup(*args, **kwargs)
        finally:
            state["in_setup"] = False

    correlations.party_setup = party_setup


def recorded_rank(cfg, points, params, out, opts: Optional[dict] = None) -> None:
    """One rank of a job, recording what it sees; puts ("record", rank, rec)."""
    opts = opts or {}
    rec: dict = {"rank": cfg.rank, "dealer": cfg.is_dealer, "outcome": None, "error": None}
    t0 = time.monotonic()
    try:
        _install_recorder(rec, bool(opts.get("keep_sent")))
        from secure_meanshift.errors import InputError, MPCError
        from secure_meanshift.runtime import run_dealer, run_party

        try:
            if cfg.is_dealer:
                rec["outcome"] = run_dealer(cfg)
            else:
                rec["outcome"] = run_party(points, params, cfg, name=f"party {cfg.rank}")
        except (InputError, MPCError) as exc:     # PeerLost is an MPCError
            rec["error"] = ("InputError" if isinstance(exc, InputError) else "MPCError",
                            str(exc))
    except BaseException as exc:   # never let a rank die silently
        rec["error"] = ("crash", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    rec["wall_s"] = time.monotonic() - t0
    out.put(("record", cfg.rank, rec))


# ---- running a job's ranks (in the test process) --------------------------------
class Job:
    """The spawned processes of one job; :meth:`collect` waits for every rank."""

    def __init__(self, cfgs: Sequence, parts: Sequence[np.ndarray], params,
                 opts: Optional[dict] = None, start_delay: Optional[dict] = None,
                 hold: Sequence[int] = ()):
        """Start every rank (after its start_delay, in seconds), except the ranks
        in ``hold``: those start on :meth:`release`."""
        self._ctx = ctx = mp.get_context("spawn")
        self.out = ctx.Queue()
        self.cfgs = list(cfgs)
        self._args = (parts, params, opts)
        self.procs = {}
        self.held = set(hold)
        delays = start_delay or {}
        self.started = time.monotonic()
        for cfg in sorted(self.cfgs, key=lambda c: delays.get(c.rank, 0.0)):
            if cfg.rank in self.held:
                continue
            wait = self.started + delays.get(cfg.rank, 0.0) - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._start(cfg)

    def _start(self, cfg) -> None:
        parts, params, opts = self._args
        world = cfg.world_size
        pts = np.asarray(parts[cfg.rank]) if cfg.rank < world else np.zeros((0, params.dim))
        p = self._ctx.Process(target=recorded_rank, args=(cfg, pts, params, self.out, opts),
                              daemon=True)
        p.start()
        self.procs[cfg.rank] = p

    def release(self, rank: int) -> None:
        self.held.discard(rank)
        self._start(next(c for c in self.cfgs if c.rank == rank))

    def collect(self, timeout_s: float = 150.0) -> list:
        """Every rank's record (rank order); a rank that died or did not answer
        in time gets a record with an error."""
        for r in sorted(self.held):
            self.release(r)
        recs: dict = {}
        deadline = time.monotonic() + timeout_s
        try:
            while len(recs) < len(self.procs):
                try:
                    _, rank, rec = self.out.get(timeout=1.0)
                    rec["ended_s"] = time.monotonic() - self.started
                    recs[rank] = rec
                    continue
                except queue.Empty:
                    pass
                now = time.monotonic()
                for r, p in self.procs.items():
                    if r not in recs and not p.is_alive() and self.out.empty():
                        time.sleep(0.5)
                        if self.out.empty() and r not in recs:
                            recs[r] = {"rank": r, "error": ("died", f"exit {p.exitcode}"),
                                       "ended_s": now - self.started}
                if now > deadline:
                    for r in self.procs:
                        recs.setdefault(r, {"rank": r, "error": ("hung", "no answer in time"),
                                            "ended_s": now - self.started})
        finally:
            for p in self.procs.values():
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
                    p.join(timeout=5)
        return [recs[c.rank] for c in sorted(self.cfgs, key=lambda c: c.rank)]


def run_job(cfgs, parts, params, opts=None, start_delay=None, timeout_s=150.0) -> list:
    return Job(cfgs, parts, params, opts, start_delay).collect(timeout_s)

