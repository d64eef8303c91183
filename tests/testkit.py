"""The tests' one home for what many test files need: free loopback ports, a
development PKI, the MPC configs of a job on loopback, and the job spec a test
submits. tests/conftest.py offers each as a pytest fixture too; modules that
are not tests (cluster.py, hostile.py, security_jobs.py, pg_cluster.py) import
them from here.

The product code keeps the real implementations (free ports:
secure_meanshift.simulate, certificates: meanshift_rpc.tls and
secure_meanshift.devcerts); this module only gives the tests one name for each."""

from __future__ import annotations

import dataclasses
import datetime
import os
import socket
from typing import Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meanshift_rpc.tls import TLSFiles, make_dev_pki
from secure_meanshift.devcerts import ephemeral_pki
from secure_meanshift.simulate import free_port, free_ports
from secure_meanshift.simulate import local_configs as simulated_configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

__all__ = ["ROOT", "free_port", "free_ports", "free_port_range", "dev_pki", "cert_from_ca",
           "job_configs", "job_spec", "signed_spec", "DEALER"]

DEALER = "dd"             # the tests' dealer node id (dealer:dd)


# ---- ports ------------------------------------------------------------------

def free_port_range(n: int, lo: int = 31000, hi: int = 32000) -> Optional[tuple]:
    """n consecutive ports in [lo, hi) that nothing listens on (probed), as
    (first, last); None when no such range is free."""
    for start in range(lo, hi - n + 1, n):
        ok = True
        for p in range(start, start + n):
            with socket.socket() as s:
                try:
                    s.bind(("", p))
                except OSError:
                    ok = False
        if ok:
            return start, start + n - 1
    return None


# ---- certificates -----------------------------------------------------------

def dev_pki(directory: str, names: Sequence[str],
            hosts: Sequence[str] = ("localhost", "127.0.0.1"), days: int = 90) -> dict:
    """The service's development CA in ``directory`` with a certificate per
    identity ("coordinator", "party:alpha", ...): {identity: TLSFiles}. An
    existing CA there is reused (meanshift_rpc.tls.make_dev_pki)."""
    return make_dev_pki(directory, names, hosts=hosts, days=days)


def cert_from_ca(ca_dir: str, cn: str, out: str, role: Optional[str] = None,
                 days_from: float = -2, days_to: float = -1) -> TLSFiles:
    """A certificate for common name ``cn`` (subject OU ``role`` when given)
    signed by the CA in ``ca_dir`` (ca.pem, ca.key) and valid between the two
    offsets in days from now: by default one that expired a day ago; a positive
    ``days_from``, one from a host whose clock is ahead. Written to ``out``.pem and
    ``out``.key."""
    ca_pem = os.path.join(ca_dir, "ca.pem")
    with open(ca_pem, "rb") as fh:
        ca = x509.load_pem_x509_certificate(fh.read())
    with open(os.path.join(ca_dir, "ca.key"), "rb") as fh:
        ca_key = serialization.load_pem_private_key(fh.read(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    name = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if role:
        name.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name(name))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=days_from))
            .not_valid_after(now + datetime.timedelta(days=days_to))
            .sign(ca_key, hashes.SHA256()))
    with open(out + ".pem", "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(out + ".key", "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return TLSFiles(ca_pem, out + ".pem", out + ".key")


# ---- MPC configs for a job on loopback ----------------------------------------

def job_configs(world: int, transport: str = "tls", directory: Optional[str] = None,
                context: str = "", timeout_s: float = 60.0, extra_identities=(),
                ports: Optional[Sequence[int]] = None) -> tuple:
    """MPCConfig for every rank of a dealer job on loopback (parties, then the
    dealer), as secure_meanshift.simulate.local_configs, but the PKI is made here
    so that it can also hold certificates for identities that are not in the job
    (``extra_identities``), and the ports can be given. Returns
    (configs, {identity: LinkSecurity})."""
    cfgs = simulated_configs(world, "dealer", "trusted-network", timeout_s=timeout_s,
                             context=context)
    names = [p.identity for p in cfgs[0].peers]
    peers = cfgs[0].peers
    if ports is not None:
        peers = tuple(dataclasses.replace(p, port=port) for p, port in zip(peers, ports))
    pki = ephemeral_pki(directory, names + list(extra_identities)) if transport == "tls" else {}
    return [dataclasses.replace(c, peers=peers, security=pki.get(n), transport=transport)
            for c, n in zip(cfgs, names)], pki


# ---- the job spec a test submits ----------------------------------------------

def job_spec(parties: Sequence[str] = ("alpha", "beta"), dealer: str = DEALER,
             dataset: str = "points", **kw) -> dict:
    """A job spec (the dict a client submits; YAML keys) for ``parties`` with
    the tests' usual small, exact, flat-kernel settings; ``kw`` replaces or adds
    fields. Results go to analyst:ann and the first party."""
    names = list(parties)
    d = {"name": "test", "parties": [{"id": n, "dataset": dataset} for n in names],
         "bandwidth": 0.12, "dust": 6, "kernel": "flat", "max_iter": 20,
         "bounds": {"lo": [0, 0], "hi": [1, 1]}, "reveal_to": ["analyst:ann", names[0]],
         "summary": "exact", "dealer": dealer}
    d.update(kw)
    return d


def signed_spec(parties: Sequence[str] = ("alpha", "beta"), dataset: str = "d", **kw):
    """The job spec as the node receives it (a meanshift_proto JobSpec, proto field
    names), for tests of a node's checks and policy without a coordinator: a small
    flat-kernel job of ``parties`` on the data set ``dataset`` with the dealer dd;
    ``parties`` holds ids or PartyRefs; ``kw`` replaces or adds fields."""
    from meanshift_proto.v1 import service_pb2 as pb

    refs = [n if isinstance(n, pb.PartyRef) else pb.PartyRef(id=n, dataset=dataset)
            for n in parties]
    d = dict(parties=refs, bandwidth=0.1,
             n_dust=4, kernel="flat", max_iter=5, bounds_lo=[0, 0], bounds_hi=[1, 1],
             dealer=DEALER)
    d.update(kw)
    return pb.JobSpec(**d)
