"""Results end to end: the carrying party encrypts the revealed centroids to
each analyst receiver's certificate key; the coordinator relays ciphertext and
never holds a centroid.

Scheme (ECIES over the certificate's P-256 key): a fresh ephemeral key per
receiver, ECDH with the receiver's public key, HKDF-SHA256, AES-256-GCM; the
job id and the receiver's identity are authenticated data, so a sealed result
cannot be moved to another job or another receiver.
"""

from __future__ import annotations

import json
import os

INFO = b"secure-meanshift result v1"


class SealError(ValueError):
    pass


def _aad(job_id: str, recipient: str) -> bytes:
    return json.dumps([job_id, recipient]).encode()


def _kdf(shared: bytes, eph: bytes):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=eph, info=INFO).derive(shared)


def seal(cert_pem: bytes, job_id: str, recipient: str, doc: dict) -> tuple:
    """(ephemeral public key, nonce, ciphertext) of doc for the certificate's owner."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    pub = x509.load_pem_x509_certificate(cert_pem).public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        raise SealError("receiver: only EC certificate keys can receive sealed results")
    eph = ec.generate_private_key(pub.curve)
    eph_bytes = eph.public_key().public_bytes(serialization.Encoding.X962,
                                              serialization.PublicFormat.UncompressedPoint)
    key = _kdf(eph.exchange(ec.ECDH(), pub), eph_bytes)
    nonce = os.urandom(12)
    ct = AESGCM(key).encrypt(nonce, json.dumps(doc).encode(), _aad(job_id, recipient))
    return eph_bytes, nonce, ct


def unseal(key_pem: bytes, job_id: str, recipient: str, eph: bytes, nonce: bytes,
           ct: bytes) -> dict:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = serialization.load_pem_private_key(key_pem, None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SealError("only EC keys can open sealed results")
    try:
        pub = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, eph)
        k = _kdf(key.exchange(ec.ECDH(), pub), eph)
        return json.loads(AESGCM(k).decrypt(nonce, ct, _aad(job_id, recipient)))
    except (InvalidTag, ValueError):
        raise SealError("sealed result: does not open with this key (altered, or for "
                        "another receiver or job)") from None
