"""Cryptographic randomness for every random value of the protocol.

A :class:`Stream` is an AES-256-CTR keystream (OpenSSL through
``cryptography``; AES-NI makes it cost about as much as copying the bytes),
read as int64 ring elements, k-bit integers or 32-bit words (values needed
modulo 2^32 or less: 4 keystream bytes each), a whole tensor per call.
Keys are 256 bits from ``os.urandom`` or from a peer over an encrypted link.

CrypTen draws its sharing masks from ``torch.Generator`` (MT19937: its state
follows from 624 outputs); crypten_patches.install_generators replaces the four
generators CrypTen keeps ("prev"/"next": shared with the neighbouring parties,
for pseudo-random zero sharings; "local"; "global") by streams, and routes
CrypTen's two random functions through them.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_BYTES = 32
WORDS32 = "words32"        # Stream.draw's bit length for 4-byte words (Stream.words32)
_ZEROS = bytes(1 << 16)


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


class Stream:
    """A deterministic cryptographic stream: equal keys give equal streams (that
    is how two parties, or a party and the dealer, draw the same values)."""

    def __init__(self, key: bytes):
        if len(key) < 16:
            raise ValueError("stream keys have at least 128 bits")
        self._key = key[:32]
        self._at = 0                           # keystream bytes used so far
        self._enc = self._cipher(0)
        self.device = torch.device("cpu")      # CrypTen asks generators for .device

    def _cipher(self, block: int):
        """The keystream from 16-byte block ``block`` on: CTR's counter block is
        the block number (big-endian), 0 for the stream's first."""
        return Cipher(algorithms.AES(self._key), modes.CTR(block.to_bytes(16, "big"))).encryptor()

    def tell(self) -> int:
        """How many keystream bytes have been used."""
        return self._at

    def seek(self, at: int) -> None:
        """Go on from keystream byte ``at`` (the dealer draws ahead, and takes
        back what party 0 did not ask for; the values are those of the stream
        read in order)."""
        self._enc, self._at = self._cipher(at // 16), at - at % 16
        if at % 16:
            self._bytes(at % 16)

    def _bytes(self, n: int) -> np.ndarray:
        global _ZEROS
        if len(_ZEROS) < n:
            _ZEROS = bytes(max(n, 2 * len(_ZEROS)))      # keystream = AES-CTR(0...)
        out = np.empty(n + 16, dtype=np.uint8)           # update_into wants a block spare
        self._enc.update_into(memoryview(_ZEROS)[:n], out)
        self._at += n
        return out[:n]

    # Tiny draws are most draws (a sign test's few-element masks), so shapes
    # and slices are handled in numpy (a tenth of a torch view's cost) and
    # sizes counted with math.prod (np.prod on a shape costs ~4 us).
    def _words(self, size: torch.Size, bitlength: int) -> np.ndarray:
        out = self._bytes(8 * math.prod(size)).view(np.int64).reshape(size)
        if bitlength < 64:
            out &= (1 << bitlength) - 1
        return out

    def ring(self, size) -> torch.Tensor:
        """Uniform int64 ring elements (all of Z_2^64) of the given size."""
        return torch.from_numpy(self._words(torch.Size(size), 64))

    def bits(self, size, bitlength: int = 64) -> torch.Tensor:
        """Uniform integers in [0, 2^bitlength) (all 64 bits for 64)."""
        return torch.from_numpy(self._words(torch.Size(size), bitlength))

    def words32(self, size) -> torch.Tensor:
        """Uniform 32-bit words (int32, wrapping) of the given size: 4 keystream
        bytes each, for values needed modulo 2^32 or less only."""
        size = torch.Size(size)
        return torch.from_numpy(self._bytes(4 * math.prod(size)).view(np.int32).reshape(size))

    def draw(self, specs: Sequence[tuple]) -> list:
        """Several draws in one keystream call: ``specs`` are (size, bitlength)
        pairs, bitlength WORDS32 for words32; the values are exactly those of
        ring/bits/words32 called in that order (CTR continues across calls at
        any byte offset), at one call's cost."""
        sizes = [torch.Size(size) for size, _ in specs]
        counts = [math.prod(size) for size in sizes]
        widths = [4 if bitlength == WORDS32 else 8 for _, bitlength in specs]
        flat = self._bytes(sum(w * n for w, n in zip(widths, counts)))
        out, at = [], 0
        for (_, bitlength), size, n, w in zip(specs, sizes, counts, widths):
            raw = flat[at:at + w * n]
            if at % w:                   # a 4-byte run before: realign (a copy)
                raw = raw.copy()
            part = raw.view(np.int32 if w == 4 else np.int64).reshape(size)
            if w == 8 and bitlength < 64:
                part &= (1 << bitlength) - 1
            out.append(torch.from_numpy(part))
            at += w * n
        return out

    def permutation(self, n: int) -> np.ndarray:
        """A uniform random permutation of range(n) (sort by 64-bit keys; ties
        have probability < n^2 / 2^64)."""
        return np.argsort(self.ring((n,)).numpy(), kind="stable")
