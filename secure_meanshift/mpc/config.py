"""How one rank joins a job: :class:`MPCConfig` (its rank, who is at every
other rank, its link security, the provider of correlated randomness, the
transport, the job's context) and the providers a job may name.

Free of torch and CrypTen on purpose: the simulator's caller, the estimator
and the services build configs without loading the runtime (importing torch
costs about 1.5 s of CPU, and its teardown at exit another 0.5 s)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from ..errors import InputError
from .mesh import TRANSPORTS, LinkSecurity, Peer, job_digest

# who makes the correlated randomness: a dealer rank holding no data, or rank 0
# itself (simulation only: rank 0 could read every share)
PROVIDERS = ("dealer", "first-party")


@dataclass(frozen=True)
class MPCConfig:
    """How this rank joins the job's other ranks.

    rank: 0..world_size-1 for the parties (in the job's party order);
        world_size for the dealer.
    world_size: number of parties (the dealer is not counted).
    peers: who is expected at each rank and where it listens: one Peer per
        party, then the dealer's (with provider "dealer").
    security: this rank's certificate, key and the CA (transport "tls").
    transport: "tls" (default) or "trusted-network" (plaintext TCP; only on a
        network every party trusts, and only if its policy allows it).
    provider: "dealer" (default) or "first-party" (rank 0 deals: simulation only).
    context: what the job is (e.g. canonical spec and seed); part of the digest
        every rank must agree on before anything secret moves.
    timeout_s: bound on connecting and on every exchange.
    listen_host: where this rank listens, if not at its own peer entry's host
        (a node behind NAT, or "" for every interface).
    """

    rank: int
    world_size: int
    peers: tuple = ()
    security: Optional[LinkSecurity] = None
    transport: str = "tls"
    provider: str = "dealer"
    context: str = ""
    timeout_s: float = 60.0
    listen_host: Optional[str] = None   # bind address if not this rank's advertised host
                                        # ("" = every interface)

    def __post_init__(self) -> None:
        object.__setattr__(self, "peers", tuple(
            p if isinstance(p, Peer) else Peer(*p) for p in self.peers))
        if isinstance(self.security, (tuple, list)):
            object.__setattr__(self, "security", LinkSecurity(*self.security))
        if self.provider not in PROVIDERS:
            raise InputError(f"provider: {self.provider!r} not available "
                             f"({', '.join(PROVIDERS)})")
        if self.transport not in TRANSPORTS:
            raise InputError(f"transport: {self.transport!r} not available "
                             f"({', '.join(TRANSPORTS)})")
        if self.world_size < 2:
            raise InputError("parties: at least 2 parties are needed")
        ranks = self.world_size + (1 if self.provider == "dealer" else 0)
        if not 0 <= self.rank < ranks:
            raise InputError("rank: must be in [0, world_size) (or world_size for the dealer)")
        if len(self.peers) != ranks:
            raise InputError(f"peers: expected {ranks} (parties"
                             f"{' and the dealer' if self.provider == 'dealer' else ''}), "
                             f"got {len(self.peers)}")
        if self.transport == "tls" and self.security is None:
            raise InputError("security: transport 'tls' needs a certificate, key and CA")
        if len({p.identity for p in self.peers}) != len(self.peers):
            raise InputError("peers: every rank needs its own identity")

    @property
    def is_dealer(self) -> bool:
        return self.rank == self.world_size

    def digest(self) -> bytes:
        return job_digest(self.context, json.dumps([[p.identity, p.host, p.port, p.fingerprint]
                                                    for p in self.peers]),
                          self.provider, self.transport, str(self.world_size))
