"""Secure mean-shift clustering on CrypTen (the engine; knows nothing of gRPC).

Typical use, inside one party's process::

    from secure_meanshift import MeanShiftParams, MPCConfig, run_party
    params = MeanShiftParams(bandwidth=0.1, bounds=([0, 0], [1, 1]), n_dust=8)
    out = run_party(my_points, params, MPCConfig(rank=0, world_size=3,
                                                 master_addr="10.0.0.1", master_port=29500))

and, for all parties on one machine, :func:`run_simulation`. The plaintext twin
is :func:`reference_meanshift`.
"""

from .errors import InputError, MPCError
from .params import MeanShiftParams, dust_indices
from .plaintext import PlainResult, reference_meanshift

__all__ = ["SecureMeanShift", "estimate_bandwidth", "InputError", "MPCError", "MeanShiftParams", "dust_indices", "PlainResult",
           "reference_meanshift", "MPCConfig", "PartyOutcome", "run_party", "run_simulation"]


def __getattr__(name):  # heavy (torch / CrypTen) parts load on first use
    if name in ("MPCConfig", "PartyOutcome", "run_party"):
        from . import runtime
        return getattr(runtime, name)
    if name == "SecureMeanShift":
        from .estimator import SecureMeanShift
        return SecureMeanShift
    if name == "estimate_bandwidth":
        from .bandwidth import estimate_bandwidth
        return estimate_bandwidth
    if name == "run_simulation":
        from .simulate import run_simulation
        return run_simulation
    raise AttributeError(name)
