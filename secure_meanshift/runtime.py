"""One rank's MPC session: the single place where the links between ranks,
the source of correlated randomness and every random generator are set up.

- links (mpc/mesh.py): one TCP connection per pair of ranks, TLS 1.3 with each
  peer's certificate pinned to the identity the job lists at its rank; plaintext
  only as the explicit ``trusted-network`` transport;
- randomness (mpc/csprng.py): AES-CTR streams with 256-bit keys; the keys shared
  by neighbouring parties (zero sharings) travel over the encrypted links;
- correlated randomness (mpc/correlations.py; the dealer: mpc/dealer_service.py):
  a dealer rank that holds no data, or, for local simulation only, rank 0
  itself (``first-party``, CrypTen's TFP model); every change to CrypTen is
  installed by mpc/crypten_patches.py;
- agreement: before anything secret moves, every pair of ranks compares the job
  digest (spec, seed, ranks, identities, dealer, provider, transport).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .data import check_finite, check_points, clip_to_bounds, from_unit, to_unit
from .errors import PEER_LOST, InputError, MPCError, PeerLost, Refused
from .local_data import LocalData
from .mpc import correlations, crypten_patches, csprng
from .mpc._compat import import_crypten
from .mpc.communicator import MeshCommunicator
from .mpc.config import PROVIDERS, MPCConfig
from .mpc.dealer_service import serve
from .mpc.mesh import TRANSPORTS, LinkSecurity, Mesh, Peer
from .mpc.transport import Transport
from .params import MeanShiftParams, resolve_summary
from .privacy import local_release
from .outcome import PartyOutcome
from .protocol import Progress, SecureResult, run_protocol
from .summary import summarize

TORCH_THREADS = 1     # per rank: a job's ranks often share a machine's cores

__all__ = ["MPCConfig", "Peer", "LinkSecurity", "PartyOutcome", "run_party", "run_dealer",
           "PEER_LOST", "PROVIDERS", "TRANSPORTS"]


def _connect(c: MPCConfig) -> Mesh:
    security = c.security if c.transport == "tls" else None
    try:
        return Mesh(c.rank, c.peers, c.digest(), security, c.timeout_s,
                    listen_host=c.listen_host)
    except OSError as exc:
        me = c.peers[c.rank]
        raise PeerLost(f"could not listen on {me.host}:{me.port} "
                       f"({type(exc).__name__})") from None


class _Session:
    """Links, generators and correlated randomness for one party; one per worker.
    ``transport``: the links to use (default: connect the job's mesh, _connect)."""

    def __init__(self, cfg: MPCConfig, transport: Optional[Transport] = None):
        self.cfg = cfg
        self.mesh: Optional[Transport] = transport
        self.corr = None

    def __enter__(self):
        c = self.cfg
        torch.set_num_threads(TORCH_THREADS)
        if self.mesh is None:
            self.mesh = _connect(c)
        mesh = self.mesh
        try:
            k, r = c.world_size, c.rank
            # keys for zero sharings: one with each neighbour, one for all
            nxt = csprng.new_key()
            mesh.send((r + 1) % k, nxt)
            if r == 0:
                glob = csprng.new_key()
                for p in range(1, k):
                    mesh.send(p, glob)
            prev = bytes(mesh.recv((r - 1) % k))
            if r != 0:
                glob = bytes(mesh.recv(0))
            self.corr = correlations.party_setup(mesh, r, k, c.provider)
            crypten_patches.install_generators(prev, nxt, csprng.new_key(), glob)
        except MPCError:
            mesh.close()
            raise
        comm = MeshCommunicator(mesh, k)
        crypten_patches.install_session(comm, self.corr)
        self.corr.on_request = comm.count_dealer
        return self

    def __exit__(self, exc_type, *exc):
        try:
            if exc_type is None and self.corr is not None:
                self.corr.finish()
        except MPCError:
            pass
        crypten_patches.uninstall_session()
        if self.mesh is not None:
            self.mesh.close()
        return False


def run_dealer(mpc: MPCConfig, transport: Optional[Transport] = None) -> int:
    """The dealer rank's whole job (holds no data): connect (or use
    ``transport``), hand out keys, answer party 0's requests. Returns the number
    of values dealt."""
    if not mpc.is_dealer:
        raise InputError("rank: the dealer's rank is world_size")
    torch.set_num_threads(TORCH_THREADS)
    mesh = transport if transport is not None else _connect(mpc)
    try:
        return serve(mesh, mpc.world_size)
    except MPCError:
        raise
    except Exception as exc:
        raise _aborted("dealer aborted", exc) from None
    finally:
        mesh.close()


def prepare_local(points, params: MeanShiftParams, name: str = "points",
                  clip: bool = False) -> tuple[np.ndarray, Optional[np.ndarray], int]:
    """Check the owner's points and map them to the unit box; summarise them
    locally when the job asks for it. Returns (rows, weights or None, n).

    ``points``: an (n, d) array, or a LocalData (local_data.py) already checked
    by its ``check``: summarised out of core, read whole only in exact mode.
    ``clip``: rows outside the public bounds are clipped into them (data.
    clip_to_bounds) instead of rejected, so acceptance never depends on the data."""
    if isinstance(points, LocalData):
        if params.summary is not None:      # clipped as its check was told
            reps, w, info = points.summarize(params.lo, params.scale,
                                             params.h_unit * params.summary)
            return reps, w, info.points
        points = points.points()
    x = clip_to_bounds(points, params.bounds, name)[0] if clip else \
        check_points(points, params.bounds, name)
    unit = to_unit(x, params.lo, params.scale)
    if params.summary is None:
        return unit, None, len(x)

    reps, w = summarize(unit, params.h_unit * params.summary)
    return reps, w, len(x)


def _check_before_connecting(points, params: MeanShiftParams, name: str, clip: bool,
                             before: Optional[Callable]) -> tuple:
    """(points, n_rows, clipped, summary made in advance or None, its cell)."""
    if isinstance(points, LocalData) and params.dp:     # counted chunk by chunk later
        return points, points.check(params.bounds, name, clip=True), 0, None, None
    if isinstance(points, LocalData) and params.standardises:   # standardised in memory
        n_rows = points.check(params.bounds, name, clip=clip)
        return points.points(), n_rows, 0, None, None
    if isinstance(points, LocalData):
        n_rows = points.check(params.bounds, name, clip=clip)
        local = None
        if before is None:     # the cell is known (summary "auto": the total is >= n_rows):
            local = resolve_summary(params.summary, n_rows)   # summarise before connecting,
            if local is not None:                            # not while the peers wait
                return points, n_rows, 0, points.summarize(
                    params.lo, params.scale, params.h_unit * local), local
        return points, n_rows, 0, None, local
    clipped = 0
    if clip:
        points, clipped = clip_to_bounds(points, params.bounds, name)
    if params.dp:
        check_finite(points, name, params.dim)      # out-of-bounds rows are clipped
    else:
        check_points(points, params.bounds, name)
    return points, len(points), clipped, None, None


def run_party(points, params: MeanShiftParams, mpc: MPCConfig,
              progress: Optional[Progress] = None, name: str = "points",
              before: Optional[Callable] = None, clip: bool = False,
              keep_noise: bool = False,
              transport: Optional[Transport] = None,
              min_bandwidth: float = 0.0) -> PartyOutcome:
    """Everything one party does for one job, in its own (fresh) process.
    ``points``: an (n, d) array or a LocalData (rows where they live).

    Bad input raises InputError before any connection is made.
    A lost peer or a timeout raises MPCError. With ``params.scaling`` "standard"
    the pooled moments come first in the session (moments.standardise_party;
    the run then uses the derived parameters, PartyOutcome.params); a LocalData
    is then read whole. ``before(params, rows) -> params``, if given, runs next
    inside the same MPC session with this party's checked (and standardised)
    rows (e.g. the bandwidth estimate of a ``bandwidth: auto`` job), so the
    dealer and the links serve every step. ``min_bandwidth``: this party's
    policy floor in the job's bounds' units (a fraction of their largest span):
    a smaller bandwidth, once estimated or standardised (the floor scales with
    the bounds), aborts the job before any centroid is computed.
    ``clip``: rows outside the bounds are clipped into them (data.clip_to_bounds);
    their number is in the outcome's ``clipped``, for the owner's log only.
    In DP mode (``params.privacy``) the party shares only its noisy histogram on
    the public grid (privacy.local_release; rows outside the bounds are clipped);
    ``keep_noise`` (tests only) returns this party's own noise in the outcome.
    ``transport``: links already made (tests); default: connect the job's mesh.
    """
    t0 = time.perf_counter()
    points, n_rows, clipped, pre, local = _check_before_connecting(
        points, params, name, clip, before)          # fail before connecting to anyone
    noise = moments = None
    with _Session(mpc, transport):
        try:
            span = params.scale
            if params.standardises:
                from .moments import standardise_party

                points, params, moments = standardise_party(points, params)
            if before is not None:
                params = before(params, points)
            if min_bandwidth and not params.estimates_bandwidth and \
                    params.bandwidth < min_bandwidth * params.scale / span:
                raise InputError("policy: the bandwidth (estimated or standardised) is below "
                                 "this party's minimum (relative to the bounds)")
            if params.summary == "auto":
                params = replace(params, summary=resolve_summary("auto", _total_points(n_rows)))
            if params.dp:
                rel = local_release(points, params, keep_noise)
                rows, weights, n, noise = rel.cells, rel.counts, len(rel.cells), rel.noise
            elif pre is not None and params.summary == local:
                rows, weights, n = pre[0], pre[1], pre[2].points
            else:
                rows, weights, n = prepare_local(points, params, name, clip=clip)
            res: SecureResult = run_protocol(rows, weights, params, progress, n)
        except (InputError, MPCError, Refused):
            raise
        except Exception as exc:
            raise _aborted("secure computation aborted", exc) from None
    cents = None if res.centroids is None else from_unit(res.centroids, params.lo, params.scale)
    if moments is not None and res.share is not None:   # analysts decode to data units too
        res.share.update(moments.to_dict())
    return PartyOutcome(**res.figures(), rank=mpc.rank,
                        centroids=cents if moments is None else moments.inverse(cents),
                        sizes=res.sizes, wall_s=time.perf_counter() - t0,
                        provider=mpc.provider, transport=mpc.transport, params=params,
                        clipped=clipped, share=res.share, dp_noise=noise, moments=moments,
                        standardised=None if moments is None else cents)


def _total_points(n: int) -> int:
    crypten = import_crypten()
    return int(sum(int(t) for t in crypten.comm.get().all_gather(torch.tensor([n]))))


_LOST_HINTS = ("Connection closed by peer", "Connection reset", "Timed out",
               "timeout", "Broken pipe", "Connection refused")


def _describe(exc: BaseException) -> tuple:
    """A reason without payloads: (exception type plus a short, value-free hint,
    whether the hint says a peer was lost)."""
    if isinstance(exc, PeerLost):
        return exc.detail, True
    text = str(exc).lower()
    for hint in _LOST_HINTS:
        if hint.lower() in text:
            return f"{type(exc).__name__} ({hint.lower()})", True
    return type(exc).__name__, False


def _aborted(what: str, exc: BaseException) -> MPCError:
    """The error to raise for an unexpected exception: PeerLost if it says a
    peer was lost, else MPCError; the message names only the exception's kind."""
    reason, lost = _describe(exc)
    return PeerLost(f"{what}: {reason}") if lost else MPCError(f"{what}: {reason}")
