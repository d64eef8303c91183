"""What a node checks before it takes part in a job, as functions of what it
holds (its CA, its revocation list, the signed job) and what the coordinator
relays: the submitter's signature on the offer, the ranks and peers of the
Run against the signed spec and every node's own signed announcement. A node
believes nothing the coordinator says that it can check."""

from __future__ import annotations

import hashlib
from typing import Callable, Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from meanshift_proto.v1 import service_pb2 as pb
from meanshift_rpc import signing
from meanshift_rpc.tls import Revocations


def verify_offer(offer: pb.Offer, ca_pem: bytes, revoked: Optional[Revocations],
                 seen_before: Callable[[str, float], bool]) -> tuple:
    """(spec, submitter, receivers' certificates) from the submitter's signature,
    checked against this node's own CA and revocation list; SignatureError naming
    the check otherwise. ``seen_before(job_id, window)`` records and tells replays."""
    v = signing.verify(offer.signed_spec, offer.signature, offer.signer_cert, ca_pem, revoked)
    if v.job_id != offer.job_id:
        raise signing.SignatureError("job_id: not the id the submitter signed")
    # remembered across restarts: a signed job is valid for MAX_AGE_S after issue
    if seen_before(v.job_id, signing.MAX_AGE_S + 2 * signing.MAX_SKEW_S):
        raise signing.SignatureError("job_id: this signed job was offered before (replay)")
    missing = [r for r in v.spec.reveal_to if r.startswith("analyst:") and r not in v.receivers]
    if missing:
        raise signing.SignatureError(f"receivers: no certificate for {missing[0]} in the "
                                     "signed job (results are sealed end to end)")
    return v.spec, v.submitter, v.receivers


def expected_peers(spec: pb.JobSpec) -> list:
    """Identities at each rank, from the spec alone: parties in order, then the dealer."""
    return [f"party:{p.id}" for p in spec.parties] + [f"dealer:{spec.dealer}"]


def _peers_reason(spec: pb.JobSpec, run: pb.Run, identity: str, port: int,
                  advertise: str) -> str:
    expected = expected_peers(spec)
    if [p.identity for p in run.peers] != expected:
        return "the peer list does not match the job's parties and dealer"
    if run.world_size != len(spec.parties):
        return "the world size does not match the job's parties"
    if run.rank != expected.index(identity):
        return "this node's rank does not match its place in the job"
    me = run.peers[run.rank]
    if me.port != port or me.host != advertise:
        return "this node's own MPC address was altered"
    if any(not 0 < p.port < 65536 or not 0 < len(p.host) <= 253 or
           not all(c.isalnum() or c in ".-:[]_" for c in p.host) for p in run.peers):
        return "a peer address is malformed"
    return ""


def check_run(job_id: str, spec: pb.JobSpec, run: pb.Run, identity: str, port: int,
              advertise: str, ca_pem: Optional[bytes],
              revoked: Optional[Revocations]) -> tuple:
    """(reason or '', fingerprints): everything the coordinator says about ranks and
    peers, against the signed spec and every node's own signed announcement; the
    SHA-256 of the certificate each rank signed with (its MPC link accepts only that)."""
    reason = _peers_reason(spec, run, identity, port, advertise)
    if reason or ca_pem is None:
        return reason, {}
    dealer = expected_peers(spec)[-1]
    try:        # where each rank listens, as that rank itself signed it
        announced, certs = {}, {}
        for c in run.commits:
            announced[f"party:{c.party}"] = signing.verify_announcement(
                c.announcement, c.signature, c.cert, ca_pem, job_id, c.party, c.commitment,
                revoked)
            certs[f"party:{c.party}"] = c.cert
        d = run.dealer
        announced[dealer] = signing.verify_announcement(
            d.announcement, d.signature, d.cert, ca_pem, job_id, spec.dealer, b"", revoked,
            identity=dealer)
        certs[dealer] = d.cert
    except signing.SignatureError as exc:
        return f"a peer's address is not as that node signed it ({exc})", {}
    if any(announced.get(p.identity) != (p.host, p.port) for p in run.peers):
        return "a peer's address is not the one that node announced", {}
    return "", {who: fingerprint(pem) for who, pem in certs.items()}


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of a certificate's DER encoding (hex)."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def job_context(job_id: str, spec: pb.JobSpec, seed: int) -> str:
    """What every rank of a job must agree on (hashed into the job digest)."""
    return f"{job_id}\n{spec.SerializeToString(deterministic=True).hex()}\n{seed:032x}"
