"""Ring arithmetic on shares and on shapes that both sides of the dealer need
(the parties' correlations and protocols, the dealer's answers): elements of
Z_2^64 held in int64 tensors."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import MPCError


def _broadcast(s0, s1) -> torch.Size:
    n = max(len(s0), len(s1))
    a, b = [1] * (n - len(s0)) + list(s0), [1] * (n - len(s1)) + list(s1)
    if any(x != y and 1 not in (x, y) for x, y in zip(a, b)):
        raise MPCError("shapes do not broadcast")
    return torch.Size(max(x, y) if 1 in (x, y) else x for x, y in zip(a, b))


def out_size(op: str, s0, s1) -> torch.Size:
    """Shape of op(a, b), by arithmetic on shapes (no tensor is made)."""
    s0, s1 = list(s0), list(s1)
    if op != "matmul":
        return _broadcast(s0, s1)
    if len(s0) == 1 and len(s1) == 1:
        return torch.Size([])
    if len(s0) == 1:
        return torch.Size(s1[:-2] + s1[-1:])
    if len(s1) == 1:
        return torch.Size(s0[:-1])
    return torch.Size(list(_broadcast(s0[:-2], s1[:-2])) + [s0[-2], s1[-1]])


def udiv(x: torch.Tensor, y: int) -> torch.Tensor:
    """floor(x / y) with x read as an unsigned 64-bit integer."""
    u = x.contiguous().numpy().view(np.uint64) // np.uint64(y)
    return torch.from_numpy(u.view(np.int64).copy())


def xor_all(ts: list) -> torch.Tensor:
    """XOR of a list of bit tensors (a fresh tensor; the inputs are not changed).
    The first two make the result (no copy of the first: a pass less)."""
    if len(ts) == 1:
        return ts[0].clone()
    out = ts[0] ^ ts[1]
    for t in ts[2:]:
        out ^= t
    return out


def sum_ring(ts: list) -> torch.Tensor:
    """Sum in the ring of a list of tensors (a fresh tensor; the inputs are not
    changed). The first two make the result (no copy of the first)."""
    if len(ts) == 1:
        return ts[0].clone()
    out = ts[0] + ts[1]
    for t in ts[2:]:
        out += t
    return out


def minus_all(x: torch.Tensor, ts: list) -> torch.Tensor:
    """x - sum(ts) in the ring, in x's own memory (x must be a fresh tensor of
    the caller's): no temporary of the sum, a pass less than x - sum_ring(ts)."""
    for t in ts:
        x -= t
    return x


def xor_into(x: torch.Tensor, ts: list) -> torch.Tensor:
    """x ^ xor_all(ts), in x's own memory (x must be a fresh tensor of the caller's)."""
    for t in ts:
        x ^= t
    return x


NARROW = 16      # ring_matmul: right operands with at most this many columns go by columns


def ring_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b in the ring (int64, wrapping: the same values as torch.matmul).
    torch has no fast int64 matrix product; its matrix-vector product is one:
    a 2-D b with few columns (the points' d) goes column by column, 3-7x faster
    (1000 x 1000 @ 1000 x 2: 5.8 -> 0.8 ms). Anything else: torch.matmul."""
    if a.dim() != 2 or b.dim() != 2 or not 0 < b.size(1) <= NARROW or \
            a.dtype != torch.int64 or b.dtype != torch.int64:
        return torch.matmul(a, b)
    return torch.stack([torch.mv(a, b[:, j]) for j in range(b.size(1))], dim=1)
