"""What one round of a small job costs at 2, 3 and 4 parties: the wall time
and each party's CPU time of one opening and of one narrow sign test
(fixedpoint.ge_zero, the comparison of every small step of the dust job),
over real TLS links with the dealer, as the simulator runs them.

    .venv/bin/python benchmarks/round_cost.py                  # ~1 minute when quiet
    .venv/bin/python benchmarks/round_cost.py --parties 2 --parties 4 --ops 400
    .venv/bin/python benchmarks/round_cost.py --quick          # 2 and 3 parties, a few s

Why: issue 19 asks 4 parties for at most 1.5x the 2-party time of the dust
job at 1,000 points; that job's iterations are about 23 rounds of small
tensors each, so their cost is the rounds'. Each rank process runs --ops
operations back to back after a warm-up (run_mpc_function: the fork
server's ranks, TLS on loopback, the dealer a separate process); reported
per operation: rank 0's wall time, the median party's CPU time
(time.process_time), the rounds (the communicator's count), and "cpu_bound":
parties x CPU / cores, the wall time a round would take if the cores were
the only limit (the dealer's CPU not counted).

Writes --out/round_cost.json and round_cost.png.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (HERE, ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)


def _timed(fn, n: int, comm) -> tuple:
    """(wall s, CPU s, rounds) per call of fn, over n calls."""
    r0 = comm.get_communication_stats()["rounds"]
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall / n, cpu / n, (comm.get_communication_stats()["rounds"] - r0) / n


def rank_job(rank: int, ops: int, size: int, bits: int) -> dict:
    """In each rank: ops openings of size int64 values, then ops sign tests of
    size values on bits bits (after a few of each as a warm-up)."""
    import torch

    from secure_meanshift.mpc._compat import import_crypten
    from secure_meanshift.mpc.fixedpoint import ge_zero

    crypten = import_crypten()
    comm = crypten.comm.get()
    x = torch.ones(size, dtype=torch.int64)
    a = crypten.cryptensor(torch.rand(size, 1) - 0.5)
    out = {}
    for name, fn in (("opening", lambda: comm.all_reduce(x)),
                     ("sign_test", lambda: ge_zero(a, bits=[bits]))):
        _timed(fn, 10, comm)
        wall, cpu, rounds = _timed(fn, ops, comm)
        out[name] = {"wall_ms": wall * 1e3, "cpu_ms": cpu * 1e3, "rounds": rounds}
    return out


def measure(parties: int, ops: int, size: int, bits: int) -> dict:
    from round_cost import rank_job      # by module name: the fork server imports it
    from secure_meanshift.simulate import run_mpc_function

    per_rank = run_mpc_function(rank_job, parties, (ops, size, bits), timeout_s=600.0)
    cores = os.cpu_count() or 1
    row = {"parties": parties}
    for name in ("opening", "sign_test"):
        cpu = statistics.median(r[name]["cpu_ms"] for r in per_rank)
        rounds = per_rank[0][name]["rounds"]
        row[name] = {"wall_ms": per_rank[0][name]["wall_ms"], "cpu_ms_per_party": cpu,
                     "rounds": rounds,
                     "cpu_ms_per_party_and_round": cpu / rounds if rounds else None,
                     "cpu_bound_ms": parties * cpu / min(cores, parties)}
    return row


def plot(data: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, name in zip(axes, ("opening", "sign_test")):
        xs = [r["parties"] for r in rows]
        ax.plot(xs, [r[name]["wall_ms"] for r in rows], marker="o", label="wall (rank 0)")
        ax.plot(xs, [r[name]["cpu_ms_per_party"] for r in rows], marker="s",
                label="CPU per party")
        ax.plot(xs, [r[name]["cpu_bound_ms"] for r in rows], ls="--",
                label="parties x CPU / cores")
        ax.set_xticks(xs)
        ax.set_xlabel("parties")
        ax.set_ylabel("ms per operation")
        ax.set_title(f"{name.replace('_', ' ')} ({data['size']} values)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    from _bench_common import machine, write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parties", type=int, action="append")
    ap.add_argument("--ops", type=int, default=300, help="operations timed per rank")
    ap.add_argument("--size", type=int, default=1000, help="values per operation")
    ap.add_argument("--bits", type=int, default=20, help="the sign test's width")
    ap.add_argument("--quick", action="store_true", help="2 and 3 parties, 30 operations")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args()
    if a.quick:
        a.ops, a.parties = 30, a.parties or [2, 3]
    if a.ops < 1 or a.size < 1 or not 2 <= a.bits <= 64:
        ap.error("--ops and --size at least 1, --bits in [2, 64]")
    rows = []
    for n in a.parties or [2, 3, 4]:
        row = measure(n, a.ops, a.size, a.bits)
        rows.append(row)
        o, s = row["opening"], row["sign_test"]
        print(f"{n} parties: opening {o['wall_ms']:.3f} ms wall, {o['cpu_ms_per_party']:.3f} "
              f"ms CPU a party; sign test {s['wall_ms']:.2f} ms wall, "
              f"{s['cpu_ms_per_party']:.2f} ms CPU a party, {s['rounds']:.0f} rounds",
              flush=True)
    data = {"what": __doc__.split("\n\n")[0], "command": " ".join(sys.argv),
            "size": a.size, "bits": a.bits, "ops": a.ops, "machine": machine(), "rows": rows}
    os.makedirs(a.out, exist_ok=True)
    write_json(os.path.join(a.out, "round_cost.json"), data)
    plot(data, os.path.join(a.out, "round_cost.png"))
    print(f"wrote {a.out}/round_cost.json and round_cost.png")


if __name__ == "__main__":
    main()
