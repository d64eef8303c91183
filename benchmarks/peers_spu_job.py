"""One party of the SecretFlow SPU side of benchmarks/peers.py.

Runs with the SPU venv's python (benchmarks/.venv-spu), never with the
project's: this file is the only place that imports spu, and the project does
not depend on it.

    .venv-spu/bin/python peers_spu_job.py --job DIR --rank R --ports P0,P1[,P2]

Every party is its own OS process; the parties talk over brpc links on
127.0.0.1 (spu.libspu.link.create_brpc), so the bytes and a netem WAN profile
on loopback are real. DIR holds meta.json (public: party sizes, dust indices,
bandwidth, iterations, protocol) and party<R>.npy (this party's private
points); rank R reads only its own file. With --simulator, one process runs
every party as a thread on in-memory links (SPU's simulator): a fallback only.

The job is the flat-kernel mean-shift of this project, written for SPU as a
jax function: x = the parties' rows, concatenated in rank order; the initial
centroids are x[dust indices] (public indices); one iteration is

    w_ij  = [ |c_i|^2 - 2 c_i.x_j + |x_j|^2 <= h^2 ]
    c_i' = sum_j w_ij x_j / sum_j w_ij            (c_i kept if the sum is 0)

run a fixed number of times (no early stopping, as SPU's own k-means). Each
iteration is one SPU executable run, timed alone; the bytes of that run come
from SPU's own link statistics: with RuntimeConfig.enable_pphlo_profile each
Run() ends with "Link details: total send bytes B, recv bytes ..., send
actions ..." (yacl link Context::GetStats, taken before and after the run),
which this job parses from its own log. spu 0.9.5's Python link.Context does
not expose the statistics directly.

Writes DIR/spu_rank<R>.json: per-iteration seconds and sent bytes of this
party; rank 0 also writes the revealed centroids.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import sys
import threading
import time

import numpy as np

LINK_RE = re.compile(r"Link details: total send bytes (\d+), recv bytes (\d+), "
                     r"send actions (\d+), recv actions (\d+)")


def _config(world: int, profile: bool = True):
    from spu import libspu

    prot = {2: libspu.ProtocolKind.SEMI2K, 3: libspu.ProtocolKind.ABY3}[world]
    cfg = libspu.RuntimeConfig(protocol=prot, field=libspu.FieldType.FM64)
    cfg.enable_pphlo_profile = profile     # prints the link statistics after each Run
    return cfg


def _functions(meta: dict):
    import jax.numpy as jnp

    idx = np.asarray(meta["dust_indices"], dtype=np.int64)
    h2 = float(meta["bandwidth"]) ** 2

    def init(*parts):
        x = jnp.concatenate(parts, axis=0)
        return x[idx]                       # public row indices of secret rows

    def step(c, *parts):
        x = jnp.concatenate(parts, axis=0)
        sq = (jnp.sum(c * c, axis=1)[:, None] - 2.0 * c @ x.T
              + jnp.sum(x * x, axis=1)[None, :])
        w = (sq <= h2).astype(x.dtype)      # flat kernel, one comparison per pair
        den = jnp.sum(w, axis=1, keepdims=True)
        num = w @ x
        return jnp.where(den > 0.5, num / jnp.maximum(den, 1.0), c)

    return init, step


def _compile(meta: dict):
    """Executables for init and for one step (every party compiles the same code)."""
    from spu import libspu
    from spu.utils import frontend as fe

    world, d = meta["world"], meta["dim"]
    parts = [np.zeros((n, d), np.float32) for n in meta["counts"]]
    c = np.zeros((len(meta["dust_indices"]), d), np.float32)
    init, step = _functions(meta)
    sec = libspu.Visibility.VIS_SECRET
    xin = [f"x{r}" for r in range(world)]
    e_init, _ = fe.compile(fe.Kind.JAX, init, parts, {}, xin, [sec] * world,
                           lambda outs: ["c0"])
    e_step, _ = fe.compile(fe.Kind.JAX, step, [c, *parts], {}, ["c_in", *xin],
                           [sec] * (world + 1), lambda outs: ["c_out"])
    return e_init, e_step


def _renamed(exe, inputs, outputs):
    from spu import libspu

    return libspu.Executable(name=exe.name, input_names=list(inputs),
                             output_names=list(outputs), code=exe.code)


def _pack(share) -> bytes:
    return pickle.dumps((bytes(share.meta), [bytes(c) for c in share.share_chunks]))


def _unpack(data: bytes):
    from spu import libspu

    meta, chunks = pickle.loads(data)
    s = libspu.Share()
    s.meta = meta
    s.share_chunks = chunks
    return s


class _FdCapture:
    """Copies everything written to fd 1 and 2 (SPU logs from C++) into a file
    while still echoing nothing; the file is parsed for the link statistics."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        sys.stdout.flush()
        sys.stderr.flush()
        self.fh = open(self.path, "w+b")
        self.saved = (os.dup(1), os.dup(2))
        os.dup2(self.fh.fileno(), 1)
        os.dup2(self.fh.fileno(), 2)
        return self

    def __exit__(self, *exc):
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        os.close(self.saved[0])
        os.close(self.saved[1])
        self.fh.close()

    def link_stats(self) -> list:
        with open(self.path, "rb") as fh:
            text = fh.read().decode("utf-8", "replace")
        return [tuple(int(v) for v in m.groups()) for m in LINK_RE.finditer(text)]


def run_party(job: str, rank: int, ports: list, log_path: str) -> dict:
    from spu import api as spu_api
    from spu import libspu

    with open(os.path.join(job, "meta.json")) as fh:
        meta = json.load(fh)
    world, iters = meta["world"], meta["iterations"]
    mine = np.load(os.path.join(job, f"party{rank}.npy")).astype(np.float32)
    cfg = _config(world)

    t0 = time.perf_counter()
    e_init, e_step = _compile(meta)
    compile_s = time.perf_counter() - t0

    desc = libspu.link.Desc()
    desc.recv_timeout_ms = 600_000
    desc.connect_retry_times = 120
    desc.connect_retry_interval_ms = 500
    for r, p in enumerate(ports):
        desc.add_party(f"p{r}", f"127.0.0.1:{p}")
    lctx = libspu.link.create_brpc(desc, rank)
    rt = spu_api.Runtime(lctx, cfg)
    io = spu_api.Io(world, cfg)

    # secret-share this party's rows; send share j to party j (input sharing, untimed)
    shares = io.make_shares(mine, libspu.Visibility.VIS_SECRET)
    for j in range(world):
        if j != rank:
            lctx.send(j, _pack(shares[j]))
    for j in range(world):
        data = shares[rank] if j == rank else _unpack(lctx.recv(j))
        rt.set_var(f"x{j}", data)

    cap = _FdCapture(log_path)
    seconds = []
    with cap:
        lctx.barrier()
        t = time.perf_counter()
        rt.run(e_init)
        init_s = time.perf_counter() - t
        cur = "c0"
        for it in range(1, iters + 1):
            nxt = f"c{it}"
            exe = _renamed(e_step, [cur, *[f"x{r}" for r in range(world)]], [nxt])
            lctx.barrier()                 # every party starts the iteration together
            t = time.perf_counter()
            rt.run(exe)
            seconds.append(time.perf_counter() - t)
            rt.del_var(cur)
            cur = nxt
    stats = cap.link_stats()
    # reveal the centroids to rank 0 (untimed)
    out = {"rank": rank, "world": world, "compile_s": compile_s, "init_s": init_s,
           "seconds_per_iteration": seconds, "link_stats_per_run": stats,
           "protocol": str(cfg.protocol), "field": str(cfg.field),
           "fxp_fraction_bits": int(cfg.fxp_fraction_bits), "mode": "multi-process brpc"}
    mine_c = rt.get_var(cur)
    if rank != 0:
        lctx.send(0, _pack(mine_c))
    else:
        got = [mine_c] + [_unpack(lctx.recv(j)) for j in range(1, world)]
        cents = io.reconstruct(got)
        out["centroids"] = np.asarray(cents, dtype=np.float64).tolist()
    lctx.barrier()
    lctx.stop_link()
    return out


def run_simulator(job: str, log_path: str) -> list:
    """Fallback: SPU's in-process simulator (threads, in-memory links)."""
    from spu import api as spu_api
    from spu import libspu

    with open(os.path.join(job, "meta.json")) as fh:
        meta = json.load(fh)
    world, iters = meta["world"], meta["iterations"]
    parts = [np.load(os.path.join(job, f"party{r}.npy")).astype(np.float32)
             for r in range(world)]
    cfg = _config(world)
    e_init, e_step = _compile(meta)
    io = spu_api.Io(world, cfg)
    shares = [io.make_shares(p, libspu.Visibility.VIS_SECRET) for p in parts]
    desc = libspu.link.Desc()
    for r in range(world):
        desc.add_party(f"p{r}", f"thread_{r}")
    results: list = [None] * world
    barrier = threading.Barrier(world)

    def party(rank):
        lctx = libspu.link.create_mem(desc, rank)
        rt = spu_api.Runtime(lctx, cfg)
        for j in range(world):
            rt.set_var(f"x{j}", shares[j][rank])
        rt.run(e_init)
        cur, secs = "c0", []
        for it in range(1, iters + 1):
            exe = _renamed(e_step, [cur, *[f"x{r}" for r in range(world)]], [f"c{it}"])
            barrier.wait()
            t = time.perf_counter()
            rt.run(exe)
            secs.append(time.perf_counter() - t)
            cur = f"c{it}"
        results[rank] = (secs, rt.get_var(cur))

    cap = _FdCapture(log_path)
    with cap:
        ths = [threading.Thread(target=party, args=(r,)) for r in range(world)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
    stats = cap.link_stats()          # every party's runs, interleaved
    cents = io.reconstruct([res[1] for res in results])
    return [{"rank": r, "world": world, "seconds_per_iteration": results[r][0],
             "link_stats_all_parties": stats, "mode": "simulator (threads, in-memory links)",
             **({"centroids": np.asarray(cents, np.float64).tolist()} if r == 0 else {})}
            for r in range(world)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--job", required=True, help="folder with meta.json and party<R>.npy")
    ap.add_argument("--rank", type=int)
    ap.add_argument("--ports", help="comma-separated brpc ports, one per party")
    ap.add_argument("--simulator", action="store_true")
    args = ap.parse_args(argv)
    if args.simulator:
        outs = run_simulator(args.job, os.path.join(args.job, "spu_sim.log"))
        with open(os.path.join(args.job, "spu_sim.json"), "w") as fh:
            json.dump(outs, fh)
        return 0
    ports = [int(p) for p in args.ports.split(",")]
    out = run_party(args.job, args.rank, ports,
                    os.path.join(args.job, f"spu_rank{args.rank}.log"))
    with open(os.path.join(args.job, f"spu_rank{args.rank}.json"), "w") as fh:
        json.dump(out, fh)
    sys.stdout.flush()
    os._exit(0)              # brpc's threads may keep a normal exit waiting


if __name__ == "__main__":
    sys.exit(main())
