"""Why a node cannot connect, in one line an operator understands.

gRPC reports every failed connection as UNAVAILABLE with a raw TLS library
message; :func:`diagnose` finds the cause itself: this node's certificate
(expired, not yet valid, not signed by the configured CA, issued for another
role), a TCP connection that cannot be opened, or a TLS handshake that fails
(the coordinator's certificate, or the coordinator rejecting ours)."""

from __future__ import annotations

import datetime
import socket
import ssl
from typing import Optional

from cryptography import x509
from meanshift_rpc.tls import COORDINATOR_NAME, TLSFiles

# the client half of an HTTP/2 start: the preface and an empty SETTINGS frame
_H2_START = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


# the server checks the client's certificate after the client has finished its
# half of the handshake (TLS 1.3): a rejection shows as a closed connection
_REJECTED = ("TLS: the coordinator rejected this node's certificate (it closed the connection "
             "in the handshake: it does not trust the CA that signed the certificate)")


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "localhost", int(port)


def check_own_certificate(files: TLSFiles, identity: str) -> str:
    """A problem with this node's own certificate, or "" (local files only)."""
    try:
        with open(files.cert, "rb") as fh:
            cert = x509.load_pem_x509_certificate(fh.read())
        with open(files.ca, "rb") as fh:
            ca = x509.load_pem_x509_certificate(fh.read())
    except (OSError, ValueError) as exc:
        return f"TLS: cannot read the certificate or CA file ({type(exc).__name__}: {exc})"
    cns = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    if identity not in cns:
        return (f"wrong role: the certificate {files.cert} is for "
                f"{cns[0] if cns else 'no name'!r}, this node is {identity!r}")
    now = datetime.datetime.now(datetime.timezone.utc)
    serial = f"serial {cert.serial_number:x}"
    if cert.not_valid_after_utc < now:
        return (f"expired: this node's certificate {files.cert} ({serial}) expired on "
                f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC (valid from "
                f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC)")
    if cert.not_valid_before_utc > now:
        return (f"TLS: this node's certificate {files.cert} ({serial}) is not valid before "
                f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (is this host's clock right?)")
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:      # noqa: BLE001 - wrong issuer name, wrong signature, wrong key type
        return (f"TLS: this node's certificate {files.cert} is not signed by the configured "
                f"CA {files.ca}")
    return ""


def _verify_problem(exc: ssl.SSLCertVerificationError, ca: str, name: str) -> str:
    code = getattr(exc, "verify_code", 0)
    if code == 10:                                       # X509_V_ERR_CERT_HAS_EXPIRED
        return "TLS: the coordinator's certificate has expired"
    if code == 9:                                        # X509_V_ERR_CERT_NOT_YET_VALID
        return ("TLS: the coordinator's certificate is not yet valid (is this host's "
                "clock right?)")
    if code in (62, 64):                                 # hostname / IP mismatch
        return (f"TLS: the server's certificate does not name {name!r}: it is not the "
                "federation's coordinator (only the coordinator's certificate carries "
                "that name)")
    return f"TLS: the coordinator's certificate is not signed by the configured CA {ca}"


def _alert_problem(exc: ssl.SSLError) -> str:
    text = str(exc).lower()
    if "expired" in text:
        return "TLS: the coordinator rejected this node's certificate as expired"
    if "unknown ca" in text or "bad certificate" in text or "decrypt" in text:
        return ("TLS: the coordinator rejected this node's certificate (not signed by the "
                "CA the coordinator trusts)")
    return f"TLS: the coordinator ended the handshake ({exc.reason or exc})"


def probe(address: str, files: Optional[TLSFiles], server_name: Optional[str] = None,
          timeout: float = 3.0) -> str:
    """Open a TCP connection and, with TLS, do the handshake the way gRPC would;
    the first problem found, or "" when both work."""
    try:
        host, port = split_address(address)
    except ValueError:
        return f"the coordinator address {address!r} is not host:port"
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        if isinstance(exc, socket.timeout):
            why = f"no answer within {timeout:.0f} s"
        return f"unreachable: cannot open a TCP connection to {address} ({why})"
    if files is None:
        raw.close()
        return ""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(files.ca)
        ctx.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        raw.close()
        return f"TLS: cannot load the certificate, key or CA file ({exc})"
    ctx.set_alpn_protocols(["h2"])
    # as open_channel: the server must be the coordinator whatever address was dialled
    # (server_name is accepted and ignored)
    name = COORDINATOR_NAME
    try:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            tls.settimeout(timeout)
            tls.sendall(_H2_START)       # TLS 1.3: a rejected client certificate shows here
            if not tls.recv(64):
                return _REJECTED
    except ssl.SSLCertVerificationError as exc:
        return _verify_problem(exc, files.ca, name)
    except ssl.SSLError as exc:
        return _alert_problem(exc)
    except socket.timeout:
        return f"the coordinator at {address} did not answer the TLS handshake"
    except (ConnectionResetError, BrokenPipeError):
        return _REJECTED
    except OSError as exc:
        return (f"the connection to {address} broke during the TLS handshake "
                f"({exc.strerror or type(exc).__name__})")
    finally:
        raw.close()
    return ""


def diagnose(address: str, files: Optional[TLSFiles], identity: str,
             server_name: Optional[str] = None, grpc_detail: str = "",
             whose: str = "this node's") -> str:
    """One line: why this node (or, with whose="your", a client) is not connected
    to the coordinator; independent of any revocation list."""
    found = check_own_certificate(files, identity) if files is not None else ""
    found = found or probe(address, files, server_name)
    if not found:
        detail = grpc_detail.splitlines()[0][:200] if grpc_detail else "no reason given"
        found = f"the coordinator did not accept the node's command stream ({detail})"
    return found.replace("this node's", whose).replace("the node's", whose)
