"""Secure mean-shift clustering on CrypTen (the engine; knows nothing of gRPC).

Typical use, inside one party's process::

    from secure_meanshift import LinkSecurity, MeanShiftParams, MPCConfig, Peer, run_party
    params = MeanShiftParams(bandwidth=0.1, bounds=([0, 0], [1, 1]), n_dust=8)
    peers = [Peer("party:a", "10.0.0.1", 47000), Peer("party:b", "10.0.0.2", 47000),
             Peer("dealer:d", "10.0.0.9", 47000)]          # parties in job order, then the dealer
    out = run_party(my_points, params, MPCConfig(
        rank=0, world_size=2, peers=peers, context=canonical_spec_and_seed,
        security=LinkSecurity("ca.pem", "party_a.pem", "party_a.key")))

the dealer runs :func:`run_dealer` with rank = world_size; for all parties on
one machine, :func:`run_simulation`. The plaintext twin is
:func:`reference_meanshift`.
"""

from . import _lifeline  # noqa: F401  (first: a party process dies with its caller)
from .errors import InputError, MPCError
from .params import EstimateBandwidth, MeanShiftParams, dust_indices
from .plaintext import PlainResult, reference_meanshift
from .privacy import PrivacySpec

__all__ = ["SecureMeanShift", "SecureStandardScaler", "estimate_bandwidth", "InputError", "MPCError", "MeanShiftParams",
           "EstimateBandwidth",
           "dust_indices", "PlainResult", "reference_meanshift", "MPCConfig", "PartyOutcome",
           "run_party", "run_simulation", "run_dealer", "Peer", "LinkSecurity", "PrivacySpec"]


def __getattr__(name):  # heavy (torch / CrypTen) parts load on first use
    if name in ("MPCConfig", "Peer", "LinkSecurity"):       # torch-free
        from .mpc import config
        return getattr(config, name)
    if name == "PartyOutcome":
        from .outcome import PartyOutcome
        return PartyOutcome
    if name in ("run_party", "run_dealer"):
        from . import runtime
        return getattr(runtime, name)
    if name == "SecureMeanShift":
        from .estimator import SecureMeanShift
        return SecureMeanShift
    if name == "SecureStandardScaler":
        from .scaler import SecureStandardScaler
        return SecureStandardScaler
    if name == "estimate_bandwidth":
        from .simulate import estimate_bandwidth
        return estimate_bandwidth
    if name == "run_simulation":
        from .simulate import run_simulation
        return run_simulation
    raise AttributeError(name)
