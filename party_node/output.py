"""What a party does with its output: its own copy of a result (a CSV in its
results folder) and its share for each analyst receiver, sealed to that
analyst's key and signed (meanshift_rpc.results). A share is never logged nor
written."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from meanshift_rpc import results, signing


def header(columns: list, dim: int) -> list:
    """The result's column names: the data set's, else x0, x1, ..."""
    return list(columns) if len(columns) == dim else [f"x{i}" for i in range(dim)]


def write_result(results_dir: str, job_id: str, cents: np.ndarray, dim: int,
                 header: Optional[list] = None) -> str:
    """The party's copy of a result: named from the validated job id only, inside
    results_dir (0700), owner-only (0600), never following a link; the header is
    the data set's column names."""
    if not signing.valid_job_id(job_id):
        raise ValueError("job id is malformed")
    os.makedirs(results_dir, mode=0o700, exist_ok=True)
    os.chmod(results_dir, 0o700)
    path = os.path.join(results_dir, f"{job_id}.csv")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        np.savetxt(fh, cents.reshape(-1, dim), delimiter=",", comments="",
                   header=",".join(header or [f"x{i}" for i in range(dim)]))
    return path


def sealed_shares(share: dict, columns: list, analysts: list, certs: dict, job_id: str,
                  signed_spec: bytes, rank: int, party_id: str, key_pem: Optional[bytes],
                  cert_pem: Optional[bytes]) -> list:
    """This party's output share for each analyst receiver, sealed to the
    certificate the signed job names for it (``certs``) and signed; without a key
    (insecure mode: local experiments only) unsealed."""
    if key_pem is None:
        return [results.plain_share(share, columns, rank, who) for who in analysts]
    return [results.seal_share(share, columns, job_id, signed_spec, rank, party_id, who,
                               certs[who], key_pem, cert_pem) for who in analysts]
