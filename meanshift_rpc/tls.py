"""Mutual TLS: a development CA, certificates for the coordinator, parties and
analysts, and identities read from the peer certificate.

Identities are certificate common names: ``coordinator``, ``party:<id>``,
``analyst:<name>``. With ``--insecure`` (local experiments only) there is no
TLS and the identity is taken from the ``x-identity`` metadata header.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import grpc

IDENTITY_HEADER = "x-identity"


@dataclass(frozen=True)
class TLSFiles:
    ca: str
    cert: str
    key: str

    @classmethod
    def in_dir(cls, directory: str, name: str) -> "TLSFiles":
        safe = name.replace(":", "_")
        return cls(os.path.join(directory, "ca.pem"), os.path.join(directory, f"{safe}.pem"),
                   os.path.join(directory, f"{safe}.key"))

    def read(self) -> tuple[bytes, bytes, bytes]:
        for path in (self.ca, self.cert, self.key):
            if not os.path.exists(path):
                raise FileNotFoundError(f"TLS file {path} does not exist")
        with open(self.ca, "rb") as a, open(self.cert, "rb") as c, open(self.key, "rb") as k:
            return a.read(), c.read(), k.read()


def make_dev_pki(directory: str, names: Sequence[str],
                 hosts: Sequence[str] = ("localhost", "127.0.0.1")) -> dict:
    """Create ca.pem/ca.key and a key/cert pair per identity in ``directory``.

    Server certificates (the coordinator) carry ``hosts`` as subject alt names.
    Returns {identity: TLSFiles}. Development use: the CA key sits next to it.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    os.makedirs(directory, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_path, ca_key_path = os.path.join(directory, "ca.pem"), os.path.join(directory, "ca.key")

    def write_key(path, key):
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))

    if os.path.exists(ca_path) and os.path.exists(ca_key_path):
        with open(ca_path, "rb") as fh:
            ca_cert = x509.load_pem_x509_certificate(fh.read())
        with open(ca_key_path, "rb") as fh:
            ca_key = serialization.load_pem_private_key(fh.read(), None)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secure-meanshift dev CA")])
        ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
                   .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=365))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .sign(ca_key, hashes.SHA256()))
        write_key(ca_key_path, ca_key)
        with open(ca_path, "wb") as fh:
            fh.write(ca_cert.public_bytes(serialization.Encoding.PEM))

    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    out = {}
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(ca_cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=90))
                   .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                         ExtendedKeyUsageOID.CLIENT_AUTH]),
                                  critical=False))
        cert = builder.sign(ca_key, hashes.SHA256())
        files = TLSFiles.in_dir(directory, name)
        write_key(files.key, key)
        with open(files.cert, "wb") as fh:
            fh.write(cert.public_bytes(serialization.Encoding.PEM))
        out[name] = files
    return out


# Keepalive pings every 10 s, 5 s to answer: a dead connection (a link down, a
# half-open TCP after a peer's host vanished) is noticed within ~15 s on both ends.
# gRPC's own reconnect back-off (default up to 120 s) is capped at 4 s.
CHANNEL_OPTIONS = (("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000),
                   ("grpc.keepalive_permit_without_calls", 1),
                   ("grpc.http2.max_pings_without_data", 0),
                   ("grpc.initial_reconnect_backoff_ms", 500),
                   ("grpc.min_reconnect_backoff_ms", 1_000),
                   ("grpc.max_reconnect_backoff_ms", 4_000))
# The server accepts those pings (its defaults answer a ping more often than every
# 5 min on an idle connection with GOAWAY "too_many_pings") and pings back.
SERVER_OPTIONS = (("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000),
                  ("grpc.keepalive_permit_without_calls", 1),
                  ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
                  ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                  ("grpc.http2.max_ping_strikes", 0),
                  ("grpc.http2.max_pings_without_data", 0))


def server_credentials(files: TLSFiles) -> grpc.ServerCredentials:
    ca, cert, key = files.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                       require_client_auth=True)


def open_channel(address: str, files: Optional[TLSFiles], identity: str = "",
                 server_name: Optional[str] = None) -> grpc.Channel:
    """A channel to the coordinator: mutual TLS, or plaintext when files is None."""
    opts = list(CHANNEL_OPTIONS)
    if files is None:
        ch = grpc.insecure_channel(address, options=opts)
        if identity:
            ch = grpc.intercept_channel(ch, _IdentityHeader(identity))
        return ch
    ca, cert, key = files.read()
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                         certificate_chain=cert)
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(address, creds, options=opts)


def peer_identity(context: grpc.ServicerContext, insecure: bool) -> str:
    """The caller's identity: certificate CN, or the header in insecure mode."""
    if insecure:
        for k, v in context.invocation_metadata():
            if k == IDENTITY_HEADER:
                return v
        return "anonymous"
    auth = context.auth_context()
    names = auth.get("x509_common_name") or []
    return names[0].decode() if names else "anonymous"


class _IdentityHeader(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self, identity: str):
        self.identity = identity

    def _with(self, details):
        md = list(details.metadata or []) + [(IDENTITY_HEADER, self.identity)]
        return details._replace(metadata=md) if hasattr(details, "_replace") else \
            _Details(details.method, details.timeout, md, details.credentials,
                     getattr(details, "wait_for_ready", None),
                     getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with(details), request)


class _Details(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = (credentials, wait_for_ready,
                                                                   compression)
