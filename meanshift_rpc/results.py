"""Results only their receivers can open, and can check.

For an analyst receiver no rank opens the output: every party seals its own
re-randomised share of it (secure_meanshift.output.export_share) to the
analyst's certificate key (sealing.seal) and signs a statement binding the job
id, the digest of the job as its submitter signed it, its rank, the receiver
and the hash of the ciphertext. The coordinator relays these; the analyst's
client (``open_result``) verifies every party's statement against the CA and
the signed job's party list (every rank exactly once), unseals, and combines
the shares (secure_meanshift.output.combine_shares). A plain (unsealed) or
unsigned result, a missing or forged share, is refused.
"""

from __future__ import annotations

import hashlib
import json
from typing import Optional

from meanshift_proto.v1 import service_pb2 as pb

from . import sealing, signing
from .tls import IdentityError, Revocations, verify_chain

FORMAT = "sms-result-share/1"


class ResultError(ValueError):
    """A result the client refuses; the message says why."""


def job_digest(signed_spec: bytes) -> str:
    """SHA-256 (hex) of the job's signed bytes: what every share is bound to."""
    return hashlib.sha256(signed_spec).hexdigest()


def _ct_hash(eph: bytes, nonce: bytes, ct: bytes) -> str:
    return hashlib.sha256(b"".join(len(x).to_bytes(4, "big") + x
                                   for x in (eph, nonce, ct))).hexdigest()


def _statement(job_id: str, digest: str, rank: int, party: str, recipient: str,
               ct_hash: str) -> bytes:
    doc = {"format": FORMAT, "job_id": job_id, "job_digest": digest, "rank": int(rank),
           "party": party, "recipient": recipient, "ciphertext_sha256": ct_hash}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def seal_share(export: dict, columns: list, job_id: str, signed_spec: bytes, rank: int,
               party: str, recipient: str, recipient_cert: bytes, key_pem: bytes,
               cert_pem: bytes) -> pb.SealedShare:
    """This party's share for one analyst receiver: sealed to the receiver's key
    and signed with the party's key."""
    from cryptography.hazmat.primitives import serialization

    eph, nonce, ct = sealing.seal(recipient_cert, job_id, recipient,
                                  {"share": export, "columns": list(columns)})
    st = _statement(job_id, job_digest(signed_spec), rank, party, recipient,
                    _ct_hash(eph, nonce, ct))
    sig = signing.sign_bytes(serialization.load_pem_private_key(key_pem, None), st)
    return pb.SealedShare(rank=rank, recipient=recipient, ephemeral_key=eph, nonce=nonce,
                          ciphertext=ct, statement=st, signature=sig, cert=cert_pem)


def plain_share(export: dict, columns: list, rank: int, recipient: str) -> pb.SealedShare:
    """Insecure mode only (no keys: local experiments): the share in the clear,
    unsigned. A client with a TLS identity refuses it."""
    return pb.SealedShare(rank=rank, recipient=recipient, ciphertext=json.dumps(
        {"share": export, "columns": list(columns)}).encode())


def open_result(res: pb.JobResult, job_id: str, me: str, key_pem: Optional[bytes],
                ca_pem: Optional[bytes], revoked: Optional[Revocations] = None) -> tuple:
    """(output.Decoded in data units, column names) for receiver ``me``, after
    every check; ResultError otherwise. ``key_pem``/``ca_pem`` None: an insecure
    client (plain shares accepted, nothing verified)."""
    from secure_meanshift.output import ShareError, combine_shares

    if not res.shares:
        raise ResultError("the result holds no party shares (a plain or carried result, "
                          "not accepted: every party must seal and sign its share)")
    if key_pem is None or ca_pem is None:
        try:
            docs = {s.rank: json.loads(s.ciphertext) for s in res.shares if s.recipient == me}
        except ValueError:
            raise ResultError("a plain share is not readable") from None
        world = len(docs)
    else:
        spec = _signed_job(res, job_id, me, ca_pem)
        world = len(spec.parties)
        docs = _verified_docs(res, job_id, me, key_pem, ca_pem, revoked, spec)
    try:
        if any(d["share"]["rank"] != r for r, d in docs.items()):
            raise ShareError("a share's rank is not the one its party signed")
        out = combine_shares([d["share"] for _, d in sorted(docs.items())], world)
    except (ShareError, KeyError, TypeError) as exc:
        raise ResultError(f"the parties' shares do not combine ({exc})") from None
    cols = docs.get(0, {}).get("columns") or []
    return out, [str(c) for c in cols]


def _signed_job(res: pb.JobResult, job_id: str, me: str, ca_pem: bytes):
    if not res.signed_spec:
        raise ResultError("the result does not carry the signed job")
    try:
        v = signing.verify(res.signed_spec, res.signature, res.signer_cert, ca_pem,
                           check_age=False)
    except signing.SignatureError as exc:
        raise ResultError(f"the job the result claims to answer does not verify ({exc})") \
            from None
    if v.job_id != job_id or me not in v.spec.reveal_to:
        raise ResultError("the signed job is another job, or not for this receiver")
    return v.spec


def _verified_docs(res, job_id, me, key_pem, ca_pem, revoked, spec) -> dict:
    """rank -> unsealed share document, each from the party the signed job names
    at that rank, with its signature checked; every rank exactly once."""
    from cryptography import x509

    digest, ids = job_digest(res.signed_spec), [p.id for p in spec.parties]
    mine = [s for s in res.shares if s.recipient == me]
    if sorted(s.rank for s in mine) != list(range(len(ids))):
        raise ResultError(f"need exactly one share from each of the job's {len(ids)} parties")
    docs = {}
    for s in mine:
        party = ids[s.rank]
        try:
            info = verify_chain(s.cert, ca_pem, revoked)
        except IdentityError as exc:
            raise ResultError(f"share of rank {s.rank}: {exc}") from None
        if info.identity != f"party:{party}":
            raise ResultError(f"share of rank {s.rank}: signed by {info.identity}, not "
                              f"party:{party}")
        want = _statement(job_id, digest, s.rank, party, me,
                          _ct_hash(s.ephemeral_key, s.nonce, s.ciphertext))
        try:
            signing.verify_bytes(x509.load_pem_x509_certificate(s.cert).public_key(),
                                  s.signature, s.statement)
        except signing.SignatureError:
            raise ResultError(f"share of rank {s.rank}: the signature does not verify "
                              "(forged or altered)") from None
        if s.statement != want:
            raise ResultError(f"share of rank {s.rank}: the signed statement is for another "
                              "job, rank, receiver or ciphertext")
        try:
            docs[s.rank] = sealing.unseal(key_pem, job_id, me, s.ephemeral_key, s.nonce,
                                          s.ciphertext)
        except sealing.SealError as exc:
            raise ResultError(f"share of rank {s.rank}: {exc}") from None
    return docs
