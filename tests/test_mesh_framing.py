"""Mesh framing (mesh._Link): frames come out whole and in order whatever the
reads cut them into: several frames in one read, a header or a body split
across reads, empty frames, bodies larger than the read buffer."""

import random
import struct

import numpy as np

from secure_meanshift.mpc import mesh


class _ScriptedSocket:
    """A non-blocking socket whose reads return the given chunks, then block."""

    def __init__(self, chunks):
        self.chunks = list(chunks)

    def fileno(self) -> int:
        return -1

    def recv_into(self, buf, n=0):
        if not self.chunks:
            raise BlockingIOError
        n = min(len(buf), n or len(buf), len(self.chunks[0]))
        buf[:n] = self.chunks[0][:n]
        self.chunks[0] = self.chunks[0][n:]
        if not self.chunks[0]:
            self.chunks.pop(0)
        return n


def _frames(rng):
    sizes = [0, 1, 7, 8, 9, 100, 5000, 0, 3, mesh._DIRECT + 17, 3 * mesh._DIRECT, 12]
    return [bytes(rng.getrandbits(8) for _ in range(min(n, 64))) * (n // 64 + 1)
            for n in sizes]


def _wire(frames) -> bytes:
    return b"".join(struct.pack("<Q", len(f)) + f for f in frames)


def test_frames_survive_any_cut():
    rng = random.Random(7)
    frames = [f[:n] for f, n in zip(_frames(rng), [0, 1, 7, 8, 9, 100, 5000, 0, 3,
                                                   mesh._DIRECT + 17, 3 * mesh._DIRECT, 12])]
    wire = _wire(frames)
    for trial in range(20):
        small = 5200                  # the first nine frames: headers cut too
        cuts = sorted(set(rng.sample(range(1, small), 30) + rng.sample(range(small, len(wire)), 10))) \
            if trial else []
        chunks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)])]
        sock = _ScriptedSocket(chunks)
        link = mesh._Link(1, sock)
        while sock.chunks:          # fill may stop at a frame's end: poll would wake it
            link.fill()
        got = [bytes(f) for f in link.frames]
        assert got == frames
        assert all(isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.flags.writeable
                   for f in link.frames)
        assert link._body is None and not link._head
