"""One opening (MeshCommunicator.all_reduce) between 3 and 4 parties over real
TLS links on loopback, all-to-all against slice kings (communicator.py), per
size: what the threshold KING_MIN_BYTES is chosen from.

    .venv/bin/python benchmarks/king_opening.py              # ~1 minute when quiet
    .venv/bin/python benchmarks/king_opening.py --parties 3 --repeats 5

Each party is a process (forked) with its own TLS links (throw-away CA, as the
simulator's); per size and party count, the two ways run alternately
(round-robin, --repeats times, each a burst of --burst back-to-back openings
after a barrier) in the same processes, so the figures are side by side.
Reported: the median over repeats of rank 0's wall time per opening, and the
bytes every party sent per opening (summed over parties, from the
communicator's own count).

Writes --out/king_opening.json and king_opening.png.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _bench_common import machine, write_json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from secure_meanshift.mpc import communicator as cm  # noqa: E402
from secure_meanshift.mpc.mesh import Mesh  # noqa: E402
from secure_meanshift.runtime import TORCH_THREADS  # noqa: E402
from secure_meanshift.simulate import local_configs  # noqa: E402

SIZES = (1024, 4096, 8192, 16384, 32768, 65536, 262144, 1048576)   # elements (8 bytes)
WAYS = {"all-to-all": 1 << 62, "kings": 0}                       # KING_MIN_BYTES per way


def _party(cfg, sizes, repeats, burst, out) -> None:
    torch.set_num_threads(TORCH_THREADS)     # as the engine's ranks (no OpenMP spinning)
    mesh = Mesh(cfg.rank, cfg.peers[:cfg.world_size], cfg.digest(), cfg.security, 120.0)
    comm = cm.MeshCommunicator(mesh, cfg.world_size)
    rng = np.random.default_rng(cfg.rank)
    res = {}
    for n in sizes:
        x = torch.from_numpy(rng.integers(-2**62, 2**62, size=n, dtype=np.int64))
        for way in WAYS:                       # warm both ways once
            cm.KING_MIN_BYTES = WAYS[way]
            comm.all_reduce(x)
        for _ in range(repeats):
            for way, threshold in WAYS.items():
                cm.KING_MIN_BYTES = threshold
                comm.barrier()
                b0, t0 = comm.get_communication_stats()["bytes"], time.perf_counter()
                for _ in range(burst):
                    comm.all_reduce(x)
                dt = (time.perf_counter() - t0) / burst
                db = (comm.get_communication_stats()["bytes"] - b0) // burst
                res.setdefault((n, way), []).append((dt, db))
    mesh.close()
    out.put((cfg.rank, res))


def run(parties: int, sizes, repeats: int, burst: int, transport: str = "tls") -> dict:
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="king-") as d:
        cfgs = local_configs(parties, provider="first-party", transport=transport,
                             directory=d)
        procs = [ctx.Process(target=_party, args=(c, sizes, repeats, burst, out))
                 for c in cfgs[:parties]]
        for p in procs:
            p.start()
        got = dict(out.get(timeout=1800) for _ in procs)
        for p in procs:
            p.join()
    rows = []
    for n in sizes:
        row = {"elements": n, "bytes_per_peer_all_to_all": 8 * n}
        for way in WAYS:
            row[way] = {"s_per_opening": statistics.median(t for t, _ in got[0][(n, way)]),
                        "bytes_all_parties": sum(got[r][(n, way)][0][1] for r in got)}
        row["time_ratio_kings"] = row["kings"]["s_per_opening"] / \
            row["all-to-all"]["s_per_opening"]
        rows.append(row)
        a2a, kings = (row[w]["s_per_opening"] * 1e3 for w in WAYS)
        print(f"{parties}p {n:>8} elements: all-to-all {a2a:8.3f} ms, kings {kings:8.3f} ms, "
              f"ratio {row['time_ratio_kings']:.2f}", flush=True)
    return {"parties": parties, "transport": transport, "rows": rows}


def plot(data: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for res in data["results"]:
        xs = [r["bytes_per_peer_all_to_all"] for r in res["rows"]]
        ax.plot(xs, [r["time_ratio_kings"] for r in res["rows"]], marker="o",
                label=f"{res['parties']} parties")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.axvline(data["king_min_bytes"], color="red", ls="--", lw=0.8,
               label="KING_MIN_BYTES")
    ax.set_xscale("log")
    ax.set_xlabel("bytes per party and peer (all-to-all)")
    ax.set_ylabel("time per opening, kings / all-to-all")
    ax.set_title("one opening over TLS on loopback (rank 0, median)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parties", type=int, action="append")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--burst", type=int, default=5)
    ap.add_argument("--transport", default="tls", choices=("tls", "trusted-network"))
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args()
    threshold = cm.KING_MIN_BYTES
    data = {"what": __doc__.split("\n\n")[0], "command": " ".join(sys.argv),
            "machine": machine(), "king_min_bytes": threshold,
            "load_at_start": os.getloadavg(),
            "results": [run(p, a.sizes, a.repeats, a.burst, a.transport)
                        for p in a.parties or [3, 4]]}
    data["load_at_end"] = os.getloadavg()
    os.makedirs(a.out, exist_ok=True)
    write_json(os.path.join(a.out, "king_opening.json"), data)
    plot(data, os.path.join(a.out, "king_opening.png"))


if __name__ == "__main__":
    main()
