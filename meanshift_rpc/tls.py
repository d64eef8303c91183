"""Mutual TLS: a development CA, certificates for the coordinator, parties and
analysts, and identities read from the peer certificate.

Identities are certificate common names: ``coordinator``, ``party:<id>``,
``dealer:<id>``, ``analyst:<name>``, ``operator:<name>``. Every certificate also
carries its role in the subject's organizational unit (OU); a certificate whose
OU and common name disagree is no identity at all. Only a coordinator
certificate carries host names and the reserved name ``coordinator``, and every
client verifies the server against that name (see :func:`open_channel`), so no
other certificate of the CA can act as the coordinator. (Party and dealer
certificates carry server usage too: their MPC workers accept the job's other
ranks over TLS, each pinned to the certificate that rank announced.) A revocation list (a
file of certificate serials, hex, one a line) is loaded by the coordinator and
the nodes. With ``--insecure`` (local experiments only, loopback only) there is
no TLS and the identity is taken from the ``x-identity`` metadata header.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import re
import stat
import threading
from dataclasses import dataclass
from typing import Optional, Sequence

import grpc

IDENTITY_HEADER = "x-identity"
ROLES = ("coordinator", "party", "dealer", "analyst", "operator")
COORDINATOR_NAME = "coordinator"      # the one name clients verify the server against
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ANONYMOUS = "anonymous"


class IdentityError(ValueError):
    """A certificate or identity that does not follow the role convention."""


def role_of(identity: str) -> str:
    """The role an identity string names ('' when it names none)."""
    if identity == COORDINATOR_NAME:
        return "coordinator"
    role, _, name = identity.partition(":")
    return role if role in ROLES and role != "coordinator" and NAME_RE.fullmatch(name) else ""


def check_identity(identity: str) -> str:
    """'coordinator' or '<role>:<name>' with a known role and a plain name."""
    if not role_of(identity):
        raise IdentityError(f"identity {identity!r}: expected 'coordinator' or "
                            f"'<role>:<name>' with role in {', '.join(ROLES[1:])}")
    return identity


@dataclass(frozen=True)
class CertInfo:
    identity: str
    role: str
    serial: int


def cert_info(pem: bytes) -> CertInfo:
    """Identity, role and serial of a certificate; IdentityError if the common
    name and the role (subject OU) disagree."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(pem)
    cn = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    ou = [a.value for a in cert.subject.get_attributes_for_oid(
        NameOID.ORGANIZATIONAL_UNIT_NAME)]
    if len(cn) != 1 or len(ou) != 1:
        raise IdentityError("certificate: needs exactly one common name and one role (OU)")
    ident = str(cn[0])
    if role_of(ident) != ou[0]:
        raise IdentityError(f"certificate: role {ou[0]!r} does not match identity {ident!r}")
    return CertInfo(ident, str(ou[0]), cert.serial_number)


def load_revoked(path: Optional[str]) -> set:
    """Serials (hex, optionally 0x-prefixed, '#' comments) from a revocation file."""
    if not path:
        return set()
    out = set()
    with open(path) as fh:
        for line in fh:
            word = line.split("#", 1)[0].strip()
            if word:
                out.add(int(word.lower().removeprefix("0x").replace(":", ""), 16))
    return out


class Revocations:
    """A revocation list file, re-read when it changes (no restart needed)."""

    def __init__(self, path: Optional[str]):
        self.path = path
        self._mtime = None
        self._serials: set = set()
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> None:
        if not self.path:
            return
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            raise FileNotFoundError(f"revocation list {self.path} does not exist") from None
        with self._lock:
            if mtime != self._mtime:
                self._serials, self._mtime = load_revoked(self.path), mtime

    def revoked(self, serial: int) -> bool:
        if self.path:
            try:
                self.refresh()
            except FileNotFoundError:
                return True          # fail closed when the list disappears
        return serial in self._serials


def check_key_file(path: str) -> None:
    """Refuse a private key that others can read (group or world bits)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise FileNotFoundError(f"TLS key {path} does not exist") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(f"private key {path} is readable by others "
                              f"(mode {stat.S_IMODE(mode):o}); fix it with: chmod 600 {path}")


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
                 hosts: Sequence[str] = ("localhost", "127.0.0.1"), days: int = 90) -> dict:
    """Create ca.pem/ca.key and a key/cert pair per identity in ``directory``.

    Only the coordinator's certificate carries ``hosts`` (plus the reserved
    name ``coordinator``) as subject alt names and server usage; every
    certificate names its role in the subject OU and is valid ``days`` days
    (the CA 365; an existing CA in ``directory`` is reused). With no names, only
    the CA. Returns {identity: TLSFiles}.
    Development use: the CA key sits next to it, and the CA generates every key
    (in a deployment use ``certs request`` / ``certs sign`` instead).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    os.makedirs(directory, mode=0o700, exist_ok=True)
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

    out = {}
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        role = role_of(name)
        cert = issue_certificate(ca_cert, ca_key, key.public_key(), name,
                                 hosts if role == "coordinator" else (), days=days,
                                 role=role or None)
        files = TLSFiles.in_dir(directory, name)
        write_key(files.key, key)
        with open(files.cert, "wb") as fh:
            fh.write(cert.public_bytes(serialization.Encoding.PEM))
        out[name] = files
    return out


def issue_certificate(ca_cert, ca_key, public_key, identity: str, hosts: Sequence[str] = (),
                      days: int = 90, role: Optional[str] = None):
    """The CA's one way to make a leaf: role in the OU, host names only for the
    coordinator; server usage for the coordinator and for the MPC workers of
    parties and dealers (peer-to-peer TLS, name pinned per rank). ``role=None`` is for names without a role
    (tests of what a role-less certificate can do)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, identity)]
    if role:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role))
    b = (x509.CertificateBuilder().subject_name(x509.Name(attrs))
         .issuer_name(ca_cert.subject).public_key(public_key)
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if role == "coordinator":
        sans = [x509.DNSName(COORDINATOR_NAME)]
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                if h != COORDINATOR_NAME:
                    sans.append(x509.DNSName(h))
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    elif role in ("party", "dealer"):
        # their MPC workers accept TLS connections from the job's other ranks
        # (secure_meanshift/mpc/mesh.py pins each peer's name); with no host names and
        # not the name "coordinator", they still cannot pass for the coordinator
        usage = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    else:
        usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
    b = b.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return b.sign(ca_key, hashes.SHA256())


def make_request(directory: str, identity: str) -> tuple[str, str]:
    """`certs request`: a new private key (0600, never leaves this host) and a
    certificate signing request for ``identity``. Returns (key path, csr path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    check_identity(identity)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    safe = identity.replace(":", "_")
    key_path, csr_path = os.path.join(directory, f"{safe}.key"), os.path.join(directory,
                                                                             f"{safe}.csr")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
           .sign(key, hashes.SHA256()))
    with open(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    with open(csr_path, "wb") as fh:
        fh.write(csr.public_bytes(serialization.Encoding.PEM))
    return key_path, csr_path


def sign_request(ca_dir: str, csr_pem: bytes, hosts: Sequence[str] = (), days: int = 90,
                 expect: Optional[str] = None) -> bytes:
    """`certs sign`: the CA signs a request; it never sees the private key. The
    role comes from the requested identity; only what the CA decides (role OU,
    usage, host names for the coordinator) goes into the certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    csr = x509.load_pem_x509_csr(csr_pem)
    if not csr.is_signature_valid:
        raise IdentityError("request: its signature is not valid")
    cn = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if len(cn) != 1:
        raise IdentityError("request: needs exactly one common name")
    ident = check_identity(str(cn[0]))
    if expect is not None and ident != expect:
        raise IdentityError(f"request: is for {ident!r}, not {expect!r}")
    with open(os.path.join(ca_dir, "ca.pem"), "rb") as fh:
        ca_cert = x509.load_pem_x509_certificate(fh.read())
    with open(os.path.join(ca_dir, "ca.key"), "rb") as fh:
        ca_key = serialization.load_pem_private_key(fh.read(), None)
    cert = issue_certificate(ca_cert, ca_key, csr.public_key(), ident, hosts, days,
                             role=role_of(ident))
    return cert.public_bytes(serialization.Encoding.PEM)


def verify_chain(cert_pem: bytes, ca_pem: bytes, revoked: Optional["Revocations"] = None
                 ) -> CertInfo:
    """A leaf issued directly by the CA, valid now, not revoked, role consistent."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
    except ValueError:
        raise IdentityError("certificate: not a PEM certificate") from None
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # noqa: BLE001 - any failure means: not from our CA
        raise IdentityError("certificate: not issued by this federation's CA") from None
    now = datetime.datetime.now(datetime.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise IdentityError("certificate: expired or not yet valid")
    info = cert_info(cert_pem)
    if revoked is not None and revoked.revoked(info.serial):
        raise IdentityError("certificate: revoked")
    return info
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
    if cert_info(cert).role != "coordinator":
        raise IdentityError(f"{files.cert}: only a coordinator certificate can serve")
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
    # Pinned: whatever address or server_name was given, the server must present
    # a certificate for the reserved name 'coordinator', which the CA puts only
    # into the coordinator's certificate (server_name is accepted and ignored).
    opts.append(("grpc.ssl_target_name_override", COORDINATOR_NAME))
    return grpc.secure_channel(address, creds, options=opts)


def server_identity(address: str, files: TLSFiles, timeout: float = 5.0) -> CertInfo:
    """The certificate the server at ``address`` presents, verified against the CA
    and the pinned name (a separate handshake: gRPC does not expose the peer's
    certificate to a client). Lets nodes apply their revocation list and role
    check to the coordinator too."""
    import socket
    import ssl

    host, _, port = address.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(files.ca)
    ctx.load_cert_chain(files.cert, files.key)
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection((host.strip("[]"), int(port)), timeout) as sock:
        with ctx.wrap_socket(sock, server_hostname=COORDINATOR_NAME) as tls:
            der = tls.getpeercert(binary_form=True)
    return cert_info(ssl.DER_cert_to_PEM_cert(der).encode())


_INFO_CACHE: dict = {}


def peer_cert_info(context: grpc.ServicerContext) -> Optional[CertInfo]:
    """Identity, role and serial of the caller's certificate (None if unusable)."""
    pems = context.auth_context().get("x509_pem_cert") or []
    if not pems:
        return None
    key = hashlib.sha256(pems[0]).digest()
    if key not in _INFO_CACHE:
        try:
            info = cert_info(pems[0])
        except (IdentityError, ValueError):
            info = None
        if len(_INFO_CACHE) > 4096:
            _INFO_CACHE.clear()
        _INFO_CACHE[key] = info
    return _INFO_CACHE[key]


def peer_identity(context: grpc.ServicerContext, insecure: bool,
                  revoked: Optional[Revocations] = None) -> str:
    """The caller's identity: certificate CN whose role (OU) agrees with it, not
    revoked; or the header in insecure mode. 'anonymous' otherwise."""
    if insecure:
        for k, v in context.invocation_metadata():
            if k == IDENTITY_HEADER:
                return v if role_of(v) else ANONYMOUS
        return ANONYMOUS
    info = peer_cert_info(context)
    if info is None or (revoked is not None and revoked.revoked(info.serial)):
        return ANONYMOUS
    return info.identity


def refusal(context: grpc.ServicerContext, insecure: bool,
            revoked: Optional[Revocations] = None) -> str:
    """Why peer_identity found no identity, naming the certificate (its identity
    and serial) and the cause: revoked, role and name disagreeing, or none."""
    if insecure:
        return "no valid identity header (insecure mode)"
    pems = context.auth_context().get("x509_pem_cert") or []
    if not pems:
        return "no client certificate"
    try:
        info = cert_info(pems[0])
    except (IdentityError, ValueError) as exc:
        return f"the client certificate is not a role certificate ({exc})"
    if revoked is not None and revoked.revoked(info.serial):
        return (f"the certificate of {info.identity} (serial {serial_hex(info.serial)}) is "
                "revoked (on the coordinator's revocation list)")
    return "no valid role certificate"


def serial_hex(serial: int) -> str:
    """A certificate serial as revocation lists write it (hex)."""
    return f"{serial:x}"


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
