"""Throw-away certificates for local simulation: a CA made for one run and a
certificate per rank, so simulated jobs use the same pinned TLS links as a
deployment. The service has its own PKI (``secure-meanshift certs``)."""

from __future__ import annotations

import datetime
import os
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .mpc.mesh import LinkSecurity


def ephemeral_pki(directory: str, identities: Sequence[str]) -> dict:
    """Write ca.pem and one key/certificate per identity (common name) into
    ``directory`` (0700); returns {identity: LinkSecurity}. The CA key is not kept."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = dict(not_valid_before=now - datetime.timedelta(minutes=5),
                 not_valid_after=now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "simulation CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(valid["not_valid_before"]).not_valid_after(valid["not_valid_after"])
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    ca_path = os.path.join(directory, "ca.pem")
    with open(ca_path, "wb") as fh:
        fh.write(ca.public_bytes(serialization.Encoding.PEM))
    out = {}
    for i, ident in enumerate(identities):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ident)]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(valid["not_valid_before"])
                .not_valid_after(valid["not_valid_after"])
                .sign(ca_key, hashes.SHA256()))
        cert_path, key_path = (os.path.join(directory, f"rank{i}.pem"),
                               os.path.join(directory, f"rank{i}.key"))
        with open(cert_path, "wb") as fh:
            fh.write(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        out[ident] = LinkSecurity(ca_path, cert_path, key_path)
    return out
