"""The links between a job's ranks: one TCP connection per pair of ranks,
TLS 1.3 with both certificates checked against the identity the job expects
at that rank (or plaintext TCP, only as the explicit "trusted-network" transport).

No rendezvous store: every rank listens on its own address from the job's peer
table, connects to every lower rank and accepts the higher ones. A connection
counts only once it has proven its identity: TLS with a certificate of the
job's CA whose common name is the one listed for the rank it claims. Anything
else (no certificate, another CA, another identity, a rank already connected)
is dropped and the job goes on waiting for the real peer until its deadline.

Before any share moves, every pair exchanges the job digest (a hash of the
spec, seed, ranks, identities and dealer): a rank whose job differs aborts the
connection set-up with a reason naming the job, not the values.

Messages are length-prefixed frames. All sockets are non-blocking and one
loop (:meth:`Mesh._pump`, on poll) sends and receives on every link at once,
so an opening between k parties takes one network hop and never deadlocks.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import select
import socket
import ssl
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import PEER_LOST, MPCError, PeerLost  # noqa: F401 (PEER_LOST: re-exported)

log = logging.getLogger("secure_meanshift.mpc.mesh")

TRANSPORTS = ("tls", "trusted-network")
_HEADER = struct.Struct("<Q")
_CHUNK = 1 << 20
_COALESCE = 1 << 16          # frames up to this size are sent with their header
_DIRECT = 1 << 16     # bodies with at least this much left are read in place
_HANDSHAKE_S = 5.0
MAX_FRAME = 1 << 34
_READ = select.POLLIN
_READABLE = select.POLLIN | select.POLLERR | select.POLLHUP | select.POLLNVAL


@dataclass(frozen=True)
class Peer:
    """Who is expected at one rank, and where it listens. ``fingerprint``
    (SHA-256 of the DER certificate, hex), when given, pins the exact
    certificate that rank must present, not only its name."""

    identity: str
    host: str
    port: int
    fingerprint: str = ""


@dataclass(frozen=True)
class LinkSecurity:
    """This rank's certificate and the CA every peer's certificate must chain to."""

    ca: str
    cert: str
    key: str


def job_digest(*parts: str) -> bytes:
    """SHA-256 over length-prefixed parts: what every rank must agree on."""
    h = hashlib.sha256(b"secure-meanshift job v1")
    for p in parts:
        b = p.encode()
        h.update(len(b).to_bytes(8, "little") + b)
    return h.digest()


def _reader(sock) -> Callable[[int, memoryview], int]:
    """read(n, buffer) -> bytes read (0: closed). TLS reads go to the SSL object
    itself: each returns one record (16 KiB at most), and ssl.SSLSocket.recv_into
    adds three Python calls to each (a party of the 3-party every-point job
    reads 30,000 records: 0.25 s of its CPU). Its errors are the same: want-read
    when nothing is buffered, SSLError (EOF included) when the peer is gone."""
    ssl_object = getattr(sock, "_sslobj", None)
    if ssl_object is not None:
        return ssl_object.read
    return lambda n, buffer: sock.recv_into(buffer, n)


class _Link:
    def __init__(self, rank: int, sock):
        self.rank = rank
        self.sock = sock
        self.out: deque = deque()          # memoryviews still to send
        self.frames: deque = deque()       # complete received frames (bytearray)
        self._head = bytearray()
        self._body: Optional[bytearray] = None
        self._got = 0
        self.closed = False
        self.received = 0
        self.watching_write = False
        self._buf = bytearray(_DIRECT)
        self._view = memoryview(self._buf)
        self.fd = sock.fileno()
        # TLS: decrypted bytes it holds (the socket no longer signals them)
        self._pending = getattr(sock, "pending", None)
        self._read_into = _reader(sock)

    def pending(self) -> bool:
        return bool(self._pending is not None and self._pending())

    def flush(self) -> int:
        sent = 0
        if len(self.out) > 1 and sum(len(v) for v in self.out) <= _COALESCE:
            # several small frames (party 0's requests to the dealer): one record
            joined = memoryview(b"".join(self.out))
            self.out.clear()
            self.out.append(joined)
        while self.out:
            view = self.out[0]
            try:
                n = self.sock.send(view[:_CHUNK])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                return sent
            except (ConnectionError, ssl.SSLError, OSError):
                self.closed = True
                return sent
            sent += n
            if n == len(view):
                self.out.popleft()
            else:
                self.out[0] = view[n:]
        return sent

    def fill(self) -> None:
        """Read whatever has arrived (TLS may hold decrypted bytes beyond what
        poll reports, so read until the socket would block, or stop at a
        frame's end only when TLS holds nothing more: after fill, the socket's
        readiness tells all). Small frames and headers go through one buffer;
        a large body is read in place."""
        while True:
            try:
                if self._body is not None and len(self._body) - self._got >= _DIRECT:
                    if not self._read_body():
                        return
                    continue
                n = self._read_into(_DIRECT, self._view)
                if n == 0:
                    self.closed = True
                    return
                self._parse(n)
                if self._body is None and self.frames and not self.pending():
                    return      # a whole frame: poll says if more arrived (saves a read)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return
            except (ConnectionError, ssl.SSLError, OSError):
                self.closed = True
                return

    def _read_body(self) -> bool:
        """Read a large body in place, one TLS record (16 KiB) a call, with the
        loop's state in locals: about 30,000 reads a party per every-point job,
        where attribute and len() lookups per read cost more than the copy.
        False: the link closed. The read's exceptions propagate (fill)."""
        body, read = self._body, self._read_into
        size, got = len(body), self._got
        view = memoryview(body)
        try:
            while size - got >= _DIRECT:
                n = read(min(size - got, _CHUNK), view[got:])
                if n == 0:
                    self.closed = True
                    return False
                got += n
        finally:
            self._got = got
        if got == size:
            self.frames.append(body)
            self._body = None
        return True

    def _parse(self, n: int) -> None:
        """Frames from the first n bytes of the read buffer. A header and body
        that arrived whole (most frames: one TLS record) are cut out with one
        copy and no per-byte bookkeeping; a header or body split across reads
        is completed by the next ones."""
        buf, at = self._view, 0
        while at < n:
            if self._body is None:
                if self._head or n - at < _HEADER.size:
                    take = min(_HEADER.size - len(self._head), n - at)
                    self._head += buf[at:at + take]
                    at += take
                    if len(self._head) < _HEADER.size:
                        return
                    (size,) = _HEADER.unpack(self._head)
                    self._head = bytearray()
                else:
                    (size,) = _HEADER.unpack_from(buf, at)
                    at += _HEADER.size
                if size > MAX_FRAME:
                    raise MPCError(f"rank {self.rank} sent an oversized frame")
                if size <= n - at:
                    self.frames.append(np.frombuffer(self._buf, np.uint8, size, at).copy())
                    at += size
                    continue
                self._body, self._got = np.empty(size, dtype=np.uint8), 0   # no zeroing
            take = min(len(self._body) - self._got, n - at)
            self._body[self._got:self._got + take] = buf[at:at + take]
            self._got += take
            at += take
            if self._got == len(self._body):
                self.frames.append(self._body)
                self._body = None


class Mesh:
    """Framed, ordered messages between this rank and every other rank: the
    job's transport (transport.Transport) over TLS 1.3 (or plaintext TCP)."""

    def __init__(self, rank: int, peers: Sequence[Peer], digest: bytes,
                 security: Optional[LinkSecurity], timeout_s: float = 60.0,
                 listen_host: Optional[str] = None):
        self._init_links(rank, peers, timeout_s)
        self.digest = digest
        self.security = security
        self._listen_host = listen_host
        self._connect_all()

    def _init_links(self, rank: int, peers: Sequence[Peer], timeout_s: float) -> None:
        self.rank = rank
        self.peers = list(peers)
        self.timeout_s = timeout_s
        self.links: dict[int, _Link] = {}
        self.sent_bytes = 0
        self.recv_bytes = 0
        # poll, not a selector: changing a link's events is no system call, and
        # a round's wake-up costs a few microseconds less (per message: it counts)
        self._poll = select.poll()
        self._by_fd: dict[int, _Link] = {}
        self._owed = False                 # a frame was queued and may be unsent
        self.rejected: list[str] = []      # why unexpected connections were dropped

    def _watch_links(self) -> None:
        """Make every link non-blocking and let the pump watch it; read what TLS
        already holds (from set-up), so that from now on poll tells all."""
        for link in self.links.values():
            link.sock.setblocking(False)
            self._poll.register(link.fd, _READ)
            self._by_fd[link.fd] = link
            if link.pending():
                link.fill()

    # ---- set-up ---------------------------------------------------------
    def _contexts(self):
        s = self.security
        srv = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cli = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        for ctx in (srv, cli):
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            ctx.load_verify_locations(s.ca)
            ctx.load_cert_chain(s.cert, s.key)
            ctx.verify_mode = ssl.CERT_REQUIRED
        cli.check_hostname = False           # identity is pinned by name below
        srv.num_tickets = 0                  # no session resumption across jobs
        return srv, cli

    def _connect_all(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        me = self.peers[self.rank]
        srv_ctx = cli_ctx = None
        if self.security is not None:
            try:
                srv_ctx, cli_ctx = self._contexts()
            except (OSError, ssl.SSLError) as exc:
                raise MPCError(f"TLS identity of this rank could not be loaded "
                               f"({type(exc).__name__})") from None
        lst = None
        if self.rank < len(self.peers) - 1:
            host = me.host if self._listen_host is None else self._listen_host
            lst = socket.create_server((host, me.port))
        try:
            for r in range(self.rank):
                self._connect(r, cli_ctx, deadline)
            self._accept_all(lst, srv_ctx, deadline,
                             set(range(self.rank + 1, len(self.peers))))
        finally:
            if lst is not None:
                lst.close()
        self._watch_links()

    def _check_identity(self, sock, rank: int) -> None:
        if self.security is None:
            return
        cert = sock.getpeercert() or {}
        names = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
        if names != [self.peers[rank].identity]:
            raise _Reject(f"certificate does not name {self.peers[rank].identity!r} "
                          f"(expected at rank {rank})")
        pinned = self.peers[rank].fingerprint
        if pinned and hashlib.sha256(sock.getpeercert(binary_form=True)).hexdigest() != \
                pinned.lower():
            raise _Reject(f"certificate is not the one rank {rank} announced")

    def _hello(self, sock, rank: int) -> None:
        """Both sides send (rank, digest); a different digest aborts the job."""
        sock.sendall(struct.pack("<I", self.rank) + self.digest)
        got = _recv_exact(sock, 4 + len(self.digest))
        their_rank = struct.unpack("<I", got[:4])[0]
        if their_rank != rank:
            raise _Reject(f"connection claims rank {their_rank}, expected {rank}")
        if got[4:] != self.digest:
            raise self._disagreement(rank)

    def _disagreement(self, rank: int) -> MPCError:
        return MPCError(f"job agreement failed: rank {rank} ({self.peers[rank].identity}) "
                        "holds a different job (spec, seed, ranks, identities or dealer); "
                        "nothing was shared")

    def _connect(self, r: int, ctx, deadline: float) -> None:
        peer = self.peers[r]
        delay = 0.05
        while True:
            sock = None
            try:
                raw = socket.create_connection((peer.host, peer.port),
                                               timeout=max(0.1, min(_HANDSHAKE_S,
                                                                    deadline - time.monotonic())))
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock = ctx.wrap_socket(raw) if ctx is not None else raw
                self._check_identity(sock, r)
                self._hello(sock, r)
                sock.settimeout(None)
                self.links[r] = _Link(r, sock)
                return
            except _Reject as exc:
                _close(sock)
                raise MPCError(f"rank {r} at {peer.host}:{peer.port}: {exc}") from None
            except MPCError:
                _close(sock)
                raise
            except ssl.SSLError as exc:
                _close(sock)
                raise MPCError(f"TLS with rank {r} ({peer.identity}) failed: "
                               f"{exc.reason or type(exc).__name__}") from None
            except OSError:
                _close(sock)
                if time.monotonic() + delay > deadline:
                    raise PeerLost(f"could not reach rank {r} ({peer.identity}) at "
                                   f"{peer.host}:{peer.port}", (peer.identity,)) from None
                time.sleep(delay)
                delay = min(1.0, delay * 2)

    def _accept_all(self, lst, ctx, deadline: float, expected: set) -> None:
        """Accept the higher ranks. Each handshake runs in a thread of its own, so
        a stranger that connects and stays silent cannot hold up the real peers."""
        if not expected:
            return
        done: queue.Queue = queue.Queue()
        # a finished handshake wakes the wait at once (before: the next accept's
        # 0.2 s timeout ran out first, and every job's set-up waited for it)
        wake_r, wake_w = socket.socketpair()
        try:
            self._accept_loop(lst, ctx, deadline, expected, done, wake_r, wake_w)
        finally:
            wake_r.close()
            wake_w.close()

    def _accept_loop(self, lst, ctx, deadline: float, expected: set, done: queue.Queue,
                     wake_r, wake_w) -> None:
        lst.setblocking(False)
        watch = select.poll()              # poll, like the links: no FD_SETSIZE limit
        watch.register(lst.fileno(), _READ)
        watch.register(wake_r.fileno(), _READ)
        while expected:
            if time.monotonic() > deadline:
                names = ", ".join(f"rank {r} ({self.peers[r].identity})" for r in sorted(expected))
                raise PeerLost(f"{names} did not connect in time",
                               tuple(self.peers[r].identity for r in sorted(expected)))
            ready = {fd for fd, _ in watch.poll(200)}
            if wake_r.fileno() in ready:
                wake_r.recv(4096)
            if lst.fileno() in ready:
                try:
                    raw, addr = lst.accept()
                except (BlockingIOError, InterruptedError):
                    pass                   # the connection went before we took it
                else:
                    raw.setblocking(True)
                    threading.Thread(target=self._handshake, daemon=True,
                                     args=(raw, addr, ctx, frozenset(expected), done,
                                           wake_w)).start()
            while not done.empty():
                r, sock, err = done.get()
                if err is not None:
                    raise err
                if r in expected:
                    self.links[r] = _Link(r, sock)
                    expected.discard(r)
                else:
                    _close(sock)          # a second connection for a rank already linked

    def _handshake(self, raw, addr, ctx, expected: frozenset, done: queue.Queue,
                   wake_w) -> None:
        try:
            self._handshake_one(raw, addr, ctx, expected, done)
        finally:
            try:
                wake_w.send(b"!")
            except OSError:          # set-up already over (its end closed the pair)
                pass

    def _handshake_one(self, raw, addr, ctx, expected: frozenset, done: queue.Queue) -> None:
        sock = None
        try:
            raw.settimeout(_HANDSHAKE_S)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = ctx.wrap_socket(raw, server_side=True) if ctx is not None else raw
            head = _recv_exact(sock, 4)
            r = struct.unpack("<I", head)[0]
            if r not in expected:
                raise _Reject(f"rank {r} is not expected")
            self._check_identity(sock, r)
            sock.sendall(struct.pack("<I", self.rank) + self.digest)
            got = _recv_exact(sock, len(self.digest))
            if got != self.digest:
                _close(sock)
                done.put((None, None, self._disagreement(r)))
                return
            sock.settimeout(None)
            done.put((r, sock, None))
        except (_Reject, OSError, ssl.SSLError, ValueError) as exc:
            # a stranger, a wrong certificate or a slow client: drop it, keep waiting
            why = f"{addr[0]}: {exc if isinstance(exc, _Reject) else type(exc).__name__}"
            self.rejected.append(why)
            log.info("dropped a connection from %s", why)
            _close(sock or raw)

    # ---- messages -------------------------------------------------------
    def send(self, rank: int, payload) -> None:
        """Queue one frame for rank (sent by the next pump)."""
        view = memoryview(payload).cast("B")
        link = self.links[rank]
        # header and (the start of) the body in one buffer: one TLS record and
        # one syscall for a small frame, and never a record of a lone header
        # (the peer would wake for 8 bytes); the rest of a large body is sent in place
        first = min(len(view), _COALESCE)
        buf = bytearray(_HEADER.size + first)
        _HEADER.pack_into(buf, 0, len(view))
        buf[_HEADER.size:] = view[:first]
        link.out.append(memoryview(buf))
        if first < len(view):
            link.out.append(view[first:])
        self.sent_bytes += len(view)
        self._owed = True

    def recv(self, rank: int) -> np.ndarray:
        """The next frame from rank (a uint8 array), waiting for it."""
        link = self.links[rank]
        if self._owed or not link.frames:    # else: read by an earlier pump, nothing owed
            self._pump(rank)
        frame = link.frames.popleft()
        self.recv_bytes += len(frame)
        link.received += len(frame)
        return frame

    def ready(self, rank: int) -> bool:
        """Whether a frame from rank has arrived (recv would not wait): reads
        what the links hold, without waiting."""
        link = self.links[rank]
        if not link.frames:
            for fd, mask in self._poll.poll(0):
                if mask & _READABLE:
                    self._by_fd[fd].fill()
        return bool(link.frames)

    def flush(self) -> None:
        """Send everything queued (waiting as long as the peers need to read it)."""
        if self._owed:
            self._pump(None)

    def received_from(self, rank: int) -> int:
        """Payload bytes received from rank so far (0 if there is no such link)."""
        link = self.links.get(rank)
        return link.received if link is not None else 0

    def _blocking(self, need: Optional[int]) -> list:
        """The ranks we wait on: the one whose frame we need while it has not
        come, else those that have not taken the bytes owed to them. Naming
        only these keeps blame fair: a party held up behind a cut link
        elsewhere owes bytes to everyone, but waits for one."""
        if need is not None and not self.links[need].frames:
            return [need]
        return sorted(lk.rank for lk in self.links.values() if lk.out)

    def _timed_out(self, need: Optional[int]) -> PeerLost:
        """The timeout, naming the ranks it waited for."""
        ranks = self._blocking(need)
        names = tuple(self.peers[r].identity for r in ranks)
        who = ", ".join(f"rank {r} ({n})" for r, n in zip(ranks, names))
        return PeerLost(f"no answer within {self.timeout_s:.0f} s"
                        + (f" from {who}" if who else ""), names)

    def _flush_all(self) -> bool:
        """Send what every link can take now; whether bytes are still owed.
        A link with bytes left is watched for room to write, the others not."""
        owed = False
        for link in self.links.values():
            if link.out:
                link.flush()
                owed = owed or bool(link.out)
            if bool(link.out) != link.watching_write:
                link.watching_write = bool(link.out)
                self._poll.modify(link.fd, _READ | (select.POLLOUT if link.out else 0))
        self._owed = owed
        return owed

    def _pump(self, need: Optional[int]) -> None:
        """Send and receive on every link until nothing is owed to any peer and
        (need: a rank) a frame from need has come; a peer that closed fails the
        job only if we wait on it (see _blocking)."""
        deadline = time.monotonic() + self.timeout_s
        want = self.links[need] if need is not None else None
        while True:
            if not self._flush_all() and (want is None or want.frames):
                return
            for r in self._blocking(need):   # a peer that left fails us if we wait on it
                link = self.links[r]
                if link.closed:
                    raise PeerLost(f"rank {link.rank} ({self.peers[link.rank].identity}) "
                                   "closed its connection", (self.peers[link.rank].identity,))
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._timed_out(need)
            for fd, mask in self._poll.poll(min(left, 1.0) * 1000.0):
                if mask & _READABLE:          # errors and hang-ups too: fill sees them
                    self._by_fd[fd].fill()

    def close(self) -> None:
        for link in self.links.values():
            try:
                self._poll.unregister(link.fd)
            except (KeyError, ValueError):
                pass
            _close(link.sock)
        self.links.clear()
        self._by_fd.clear()


class _Reject(Exception):
    pass


def _recv_exact(sock, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed during set-up")
        buf += chunk
    return bytes(buf)


def _close(sock) -> None:
    if sock is None:
        return
    try:
        sock.close()
    except OSError:
        pass
