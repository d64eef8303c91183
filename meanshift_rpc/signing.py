"""Jobs signed by their submitter.

The client turns its job spec into one canonical byte string (deterministic
JSON of the parsed spec, plus a job id and an issue time it chose) and signs it
with its certificate's key. The coordinator forwards the bytes, the signature
and the signer's certificate unchanged; every node verifies them (signature,
chain to its CA, revocation, the signer's role) and takes the job only from
those bytes, so the coordinator can neither forge nor alter a job, nor replay
an old one under a new id.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Optional

import yaml

from . import jobspec
from .tls import CertInfo, IdentityError, Revocations, verify_chain

JOB_ID_RE = re.compile(r"[0-9a-f]{24}")
FORMAT = "sms-job/1"
MAX_AGE_S = 3600.0       # a signed job must reach the nodes within this long (it may wait
                         # in the coordinator's queue: --queue-timeout stays below it)
MAX_SKEW_S = 120.0       # clock skew tolerated for jobs "from the future"
SUBMITTER_ROLES = ("analyst", "operator")


class SignatureError(ValueError):
    """A signed job that does not verify; the message names the check."""


def valid_job_id(job_id: str) -> bool:
    return isinstance(job_id, str) and JOB_ID_RE.fullmatch(job_id) is not None


def new_job_id() -> str:
    return uuid.uuid4().hex[:24]


def canonical(spec_dict: dict, job_id: str, issued: float, submitter: str,
              receivers: Optional[dict] = None) -> bytes:
    """The signed bytes: sorted keys, no whitespace, ASCII only. ``receivers``:
    analyst receiver -> certificate PEM (results are sealed to these keys)."""
    doc = {"format": FORMAT, "job_id": job_id, "issued": round(float(issued), 3),
           "submitter": submitter, "spec": spec_dict, "receivers": receivers or {}}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def sign_bytes(key, data: bytes) -> bytes:
    """Sign ``data`` with a private key (EC: ECDSA-SHA256, RSA: PSS, Ed25519)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                          salt_length=padding.PSS.MAX_LENGTH), hashes.SHA256())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    raise SignatureError("signing: unsupported key type")


def verify_bytes(pub, sig: bytes, data: bytes) -> None:
    """SignatureError unless ``sig`` is the public key's signature of ``data``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    try:
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(sig, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(pub, rsa.RSAPublicKey):
            pub.verify(sig, data, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                              salt_length=padding.PSS.MAX_LENGTH),
                       hashes.SHA256())
        elif isinstance(pub, ed25519.Ed25519PublicKey):
            pub.verify(sig, data)
        else:
            raise SignatureError("signature: unsupported key type")
    except InvalidSignature:
        raise SignatureError("signature: does not verify (the job was altered or forged)") \
            from None


@dataclass(frozen=True)
class SignedJob:
    payload: bytes
    signature: bytes
    cert_pem: bytes


def sign_spec(spec_yaml: str, key_pem: bytes, cert_pem: bytes,
              job_id: Optional[str] = None, issued: Optional[float] = None,
              receiver_certs: Optional[dict] = None) -> SignedJob:
    """Parse (the same rules as the coordinator and the nodes), canonicalise, sign.
    The signer's own certificate is included when it is an analyst receiver;
    ``receiver_certs`` adds other analyst receivers' certificates."""
    from cryptography.hazmat.primitives import serialization
    from .tls import cert_info

    spec = jobspec.parse(spec_yaml)
    who = cert_info(cert_pem).identity
    receivers = {r: pem.decode() if isinstance(pem, bytes) else pem
                 for r, pem in (receiver_certs or {}).items() if r in spec.reveal_to}
    if who in spec.reveal_to:
        receivers[who] = cert_pem.decode()
    data = canonical(jobspec.to_dict(spec), job_id or new_job_id(),
                     time.time() if issued is None else issued, who, receivers)
    key = serialization.load_pem_private_key(key_pem, None)
    return SignedJob(data, sign_bytes(key, data), cert_pem)


@dataclass(frozen=True)
class VerifiedJob:
    job_id: str
    issued: float
    submitter: str
    role: str
    spec: object             # pb.JobSpec, parsed from the signed bytes
    receivers: dict = None   # analyst receiver -> certificate PEM (bytes), each verified


def verify(payload: bytes, signature: bytes, cert_pem: bytes, ca_pem: bytes,
           revoked: Optional[Revocations] = None, roles=SUBMITTER_ROLES,
           now: Optional[float] = None, check_age: bool = True) -> VerifiedJob:
    """Everything a node checks before it even looks at its policy."""
    from cryptography import x509

    if len(payload) > jobspec.MAX_SPEC_BYTES or len(signature) > 1024 or \
            len(cert_pem) > 16384:
        raise SignatureError("signed job: too large")
    try:
        info: CertInfo = verify_chain(cert_pem, ca_pem, revoked)
    except IdentityError as exc:
        raise SignatureError(f"submitter {exc}") from None
    if info.role not in roles:
        raise SignatureError(f"submitter: role {info.role!r} may not submit jobs")
    verify_bytes(x509.load_pem_x509_certificate(cert_pem).public_key(), signature, payload)
    try:
        doc = json.loads(payload)
        assert isinstance(doc, dict) and doc.get("format") == FORMAT
        job_id, issued, submitter = doc["job_id"], float(doc["issued"]), doc["submitter"]
        spec_dict, receivers = doc["spec"], doc.get("receivers") or {}
        assert isinstance(receivers, dict) and len(receivers) <= jobspec.MAX_REVEAL_TO
    except (ValueError, KeyError, TypeError, AssertionError):
        raise SignatureError("signed job: not a job this version understands") from None
    if not valid_job_id(job_id):
        raise SignatureError("job_id: must be 24 lowercase hex digits")
    if submitter != info.identity:
        raise SignatureError("submitter: the signed submitter is not the certificate's owner")
    now = time.time() if now is None else now
    if check_age and not (now - MAX_AGE_S <= issued <= now + MAX_SKEW_S):
        raise SignatureError("issued: the signed job is too old or from the future")
    try:     # YAML, not JSON text: PyYAML reads JSON's 1e-06 as a string
        spec = jobspec.parse(yaml.safe_dump(spec_dict))
    except jobspec.SpecError as exc:
        raise SignatureError(f"spec: {exc}") from None
    if jobspec.to_dict(spec) != spec_dict:
        raise SignatureError("spec: not in canonical form")
    checked = {}
    for who, pem in receivers.items():
        if who not in spec.reveal_to or not isinstance(pem, str):
            raise SignatureError("receivers: a certificate for someone who is not a receiver")
        try:
            r = verify_chain(pem.encode(), ca_pem, revoked)
        except IdentityError as exc:
            raise SignatureError(f"receivers: {who}'s {exc}") from None
        if r.identity != who or r.role != "analyst":
            raise SignatureError(f"receivers: the certificate given for {who} is not theirs")
        checked[who] = pem.encode()
    return VerifiedJob(job_id, issued, submitter, info.role, spec, checked)


# ---- the nodes' own announcements ------------------------------------------------------

def announce(job_id: str, party: str, commitment: bytes, address: str, port: int,
             key_pem: bytes) -> tuple:
    """A node's signed acceptance: its seed commitment (empty for the dealer) and
    where its MPC worker will listen. Returns (payload, signature)."""
    from cryptography.hazmat.primitives import serialization

    doc = {"format": "sms-accept/1", "job_id": job_id, "party": party,
           "commitment": commitment.hex(), "address": address, "port": int(port)}
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return data, sign_bytes(serialization.load_pem_private_key(key_pem, None), data)


def verify_announcement(payload: bytes, signature: bytes, cert_pem: bytes, ca_pem: bytes,
                        job_id: str, party: str, commitment: bytes,
                        revoked: Optional[Revocations] = None,
                        identity: Optional[str] = None) -> tuple:
    """(address, port) from a party's announcement (or the dealer's: identity
    "dealer:<name>", empty commitment), after checking that exactly this node
    signed exactly this job, name and commitment."""
    from cryptography import x509

    try:
        info = verify_chain(cert_pem, ca_pem, revoked)
    except IdentityError as exc:
        raise SignatureError(f"announcement of {party}: {exc}") from None
    if info.identity != (identity or f"party:{party}"):
        raise SignatureError(f"announcement of {party}: signed by {info.identity}")
    verify_bytes(x509.load_pem_x509_certificate(cert_pem).public_key(), signature, payload)
    try:
        doc = json.loads(payload)
        ok = (doc.get("format") == "sms-accept/1" and doc["job_id"] == job_id and
              doc["party"] == party and bytes.fromhex(doc["commitment"]) == commitment)
        addr, port = str(doc["address"]), int(doc["port"])
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise SignatureError(f"announcement of {party}: not for this job and commitment")
    return addr, port
