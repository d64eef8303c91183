"""What a run ends with, free of torch and CrypTen: the simulator's caller
unpickles every party's :class:`PartyOutcome` without loading the runtime.
:class:`RunFigures` is what the protocol measured (protocol.SecureResult
carries it too)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Optional

import numpy as np

from .params import MeanShiftParams

if TYPE_CHECKING:
    from .moments import Moments


@dataclass(kw_only=True)
class RunFigures:
    """What a run measured: the protocol's result and a party's outcome carry it."""

    iterations: int
    passes: int = 0           # passes over the points (iterations, +1 unless each update settled)
    per_iteration: list = field(default_factory=list)
    share_s: float = 0.0
    communication: dict = field(default_factory=dict)
    points: int = 0
    rows: int = 0

    def figures(self) -> dict:
        """These fields by name (to hand them on, e.g. to a PartyOutcome)."""
        return {f.name: getattr(self, f.name) for f in fields(RunFigures)}


@dataclass(kw_only=True)
class PartyOutcome(RunFigures):
    """What one party's worker ends with. Centroids are in data units and are
    present only on ranks listed in ``reveal_to``."""

    rank: int
    centroids: Optional[np.ndarray]
    sizes: Optional[np.ndarray]
    wall_s: float = 0.0
    provider: str = "dealer"
    transport: str = "tls"
    params: Optional[MeanShiftParams] = None    # as run (e.g. with an estimated bandwidth)
    clipped: int = 0          # rows moved into the bounds (clip=True): the owner's log only
    share: Optional[dict] = None   # params.export_shares: this party's output share (sealed
                                   # by the node to each analyst receiver; never logged)
    # DP mode, tests only (run_party(keep_noise=True)): this party's own noise per
    # cell, so the twin can replay the run; never in to_dict, never sent anywhere
    dp_noise: Optional[np.ndarray] = None
    # scale "standard": the opened pooled moments (moments.Moments) and the centres
    # as opened, in standardised units (``centroids`` are then in data units)
    moments: Optional["Moments"] = None
    standardised: Optional[np.ndarray] = None

    def to_dict(self) -> dict:
        return {
            "rank": self.rank,
            "centroids": None if self.centroids is None else self.centroids.tolist(),
            "sizes": None if self.sizes is None else self.sizes.tolist(),
            "iterations": self.iterations,
            "passes": self.passes,
            "per_iteration": self.per_iteration,
            "share_s": self.share_s,
            "wall_s": self.wall_s,
            "communication": self.communication,
            "points": self.points,
            "rows": self.rows,
            "provider": self.provider,
            "transport": self.transport,
            "moments": None if self.moments is None else self.moments.to_dict(),
            "standardised_centroids": None if self.standardised is None
            else self.standardised.tolist(),
        }
