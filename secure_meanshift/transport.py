"""Point-to-point collectives for CrypTen's communicator (transport "gloo-p2p").

CrypTen opens every masked value with ``torch.distributed.all_reduce``. Gloo's
ring all-reduce takes 2 (k - 1) sequential hops; a secure comparison needs about
a dozen such openings, so round latency, not bandwidth, dominates mean-shift.
Here every party sends its share straight to every other party and sums what
it receives: one hop per opening (measured on loopback: 0.26 ms instead of
1.6 ms for 2 parties, 1.6 ms instead of 5.9 ms for 4). The bytes on the wire
are the same shares as before, over the same (plaintext) gloo TCP pairs.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed import ReduceOp


def _combine(tensors: list, op) -> torch.Tensor:
    out = tensors[0].clone()
    for t in tensors[1:]:
        if op == ReduceOp.BXOR:
            out ^= t
        else:
            out += t
    return out


def _flatten(parts: list) -> torch.Tensor:
    return torch.cat([t.data.reshape(-1) for t in parts]).contiguous()


def _split(total: torch.Tensor, parts: list) -> list:
    out, at = [], 0
    for t in parts:
        n = t.nelement()
        out.append(total[at:at + n].reshape(t.size()))
        at += n
    return out


def make_p2p_communicator(base_cls):
    """A subclass of CrypTen's DistributedCommunicator with one-hop collectives."""
    from crypten.communicator.communicator import _logging

    class P2PCommunicator(base_cls):
        def _exchange(self, flat: torch.Tensor, peers: list, send: bool = True,
                      recv: bool = True) -> dict:
            reqs, got = [], {}
            for p in peers:
                if send:
                    reqs.append(dist.isend(flat, p, group=self.main_group))
                if recv:
                    got[p] = torch.empty_like(flat)
                    reqs.append(dist.irecv(got[p], p, group=self.main_group))
            for r in reqs:
                r.wait()
            return got

        def _peers(self) -> list:
            me = self.get_rank()
            return [p for p in range(self.get_world_size()) if p != me]

        @_logging
        def all_reduce(self, input, op=ReduceOp.SUM, batched=False):
            if op not in (ReduceOp.SUM, ReduceOp.BXOR):
                return super().all_reduce.__wrapped__(self, input, op=op, batched=batched)
            parts = input if batched else [input]
            flat = _flatten(parts)
            got = self._exchange(flat, self._peers())
            out = _split(_combine([flat] + [got[p] for p in sorted(got)], op), parts)
            return out if batched else out[0]

        @_logging
        def reduce(self, input, dst, op=ReduceOp.SUM, batched=False):
            if op not in (ReduceOp.SUM, ReduceOp.BXOR):
                return super().reduce.__wrapped__(self, input, dst, op=op, batched=batched)
            parts = input if batched else [input]
            flat = _flatten(parts)
            if self.get_rank() != dst:
                self._exchange(flat, [dst], send=True, recv=False)
                return None
            got = self._exchange(flat, self._peers(), send=False, recv=True)
            out = _split(_combine([flat] + [got[p] for p in sorted(got)], op), parts)
            return out if batched else out[0]

        @_logging
        def gather(self, tensor, dst):
            flat = tensor.data.contiguous()
            if self.get_rank() != dst:
                self._exchange(flat, [dst], send=True, recv=False)
                return None
            got = self._exchange(flat, self._peers(), send=False, recv=True)
            got[dst] = flat
            return [got[p] for p in range(self.get_world_size())]

        @_logging
        def scatter(self, scatter_list, src, size=None, device=None):
            me = self.get_rank()
            if me == src:
                reqs = [dist.isend(scatter_list[p].data.contiguous(), p, group=self.main_group)
                        for p in self._peers()]
                for r in reqs:
                    r.wait()
                return scatter_list[me].data
            if size is None:
                size = scatter_list[me].size()
            out = torch.empty(size=size, dtype=torch.long)
            dist.irecv(out, src, group=self.main_group).wait()
            return out

    P2PCommunicator.__name__ = "P2PCommunicator"
    return P2PCommunicator


def install_p2p(comm) -> None:
    """Switch an initialised CrypTen DistributedCommunicator to one-hop collectives."""
    if comm.get_world_size() < 2 or type(comm).__name__ == "P2PCommunicator":
        return
    comm.__class__ = make_p2p_communicator(type(comm))
