"""Where the bytes and rounds of one mean-shift iteration go, per protocol step,
next to SecretFlow SPU's published cost model for the same steps.

    .venv/bin/python benchmarks/cost_table.py            # about 2 minutes when quiet
    .venv/bin/python benchmarks/cost_table.py --big      # adds 10,000 points, 2 parties
    .venv/bin/python benchmarks/cost_table.py --quick --out /tmp/ct   # smoke run, ~15 s

Ours: each setting is one run of the ``meanshift_cli.simulate`` CLI, exactly as
a user runs it (its own party and dealer processes, TLS on loopback), with
``--summary exact --no-sklearn --json``. Its JSON gives, per protocol step,
bytes sent between parties and bytes received from the dealer (both summed over
parties) and rounds (of the busiest party). distance, kernel, update, division
and stop run once per pass of the loop: their totals are divided by the
reported iterations. share, merge, sizes and reveal run once per job and are
reported per job.

SPU: the per-element latency (rounds) and comm (bits) of SPU's
docs/reference/complexity.md (SEMI2K for n parties, ABY3 for 3), applied with
the operand sizes of each step; what SPU's source adds where the table is
silent is in MODEL_NOTES. The formulas are per party (what one party sends),
so they are multiplied by the number of parties to match our "bytes" (sum
over parties). They count the online phase only (no triples/correlations).

Writes cost_table.json and cost_table.png into --out (default
benchmarks/results) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

ITER_STEPS = ["distance", "kernel", "update", "division", "stop"]
JOB_STEPS = ["share", "merge", "sizes", "reveal"]

M_DUSTS = 8
DIM = 2
BASE_ARGS = ["--centers", "8", "--bandwidth", "0.1", "--seeding", "dust", "--dust", str(M_DUSTS),
             "--summary", "exact", "--no-sklearn", "--quiet"]

K = 64            # SPU FM64 ring
LOG_K = 6         # log2(K)
AND_ROUNDS = 6    # _prefix_or: bit_width(64) - 1 = 6 OR (one and_bb each) rounds
GOLDSCHMIDT_ITERS = 2   # SPU default fxp_div_goldschmidt_iters (FM64: 18 fraction bits < 30)

MODEL_NOTES = {
    "source": "SPU docs/reference/complexity.md (secretflow/spu); per element, per party; "
              "K = 64 (FM64), log(K) = 6, log(N) = ceil(log2 n) for n parties "
              "(tree reduction over parties; 1 for 2 parties, 2 for 3 and 4)",
    "sum_over_parties": "complexity.md's comm is what one party sends (SEMI2K mul_aa "
                        "K*2*(N-1): each party opens two masked K-bit values to N-1 "
                        "others; ABY3 mul_aa K: each party resends one K-bit share); "
                        "bytes = bits / 8 * n parties",
    "online_only": "SPU's formulas count the online phase only: Beaver triples / "
                   "correlated randomness (SEMI2K's TTP or TFP beaver) are not in them, "
                   "so compare SPU bytes with ours between parties; our dealer bytes "
                   "are shown beside them",
    "comparison": "msb / sign test = a2b + b2a (complexity.md). SEMI2K b2a: the table's "
                  "1 round, K*(N-1) (B2A_Randbit). ABY3 b2a is TODO in the table; SPU's "
                  "aby3 B2ASelector uses B2AByOT for <= 8-bit inputs: a 1-bit msb is "
                  "modelled as 2 rounds and 2*K*1 + K = 3K bits (the header's '2*K*K + K' "
                  "with nbits = 1 for the second K)",
    "msb_2pc": "SPU's semi2k source also has a 2PC-only msb_a2b kernel (log(K)+1 rounds, "
               "5K bits per element) not in complexity.md; with it the 2-party kernel step "
               "would cost about 4.5x fewer bytes than the table's a2b + b2a. Given as "
               "spu_model.per_iteration.kernel.alt_2pc_msb_a2b for 2 parties; the totals "
               "and ratios use the table",
    "mmul_aa": "SEMI2K table entry 'K*2*(N-1)*m*n' is ambiguous; SPU's source "
               "(libspu/mpc/semi2k/arithmetic.h MatMulAA::comm) gives K*(N-1)*(m+n)*k for "
               "(m x k) @ (k x n): each party opens both masked operands. We use the "
               "source's form. ABY3 'K*m*n': m x n = the output (each party reshares its "
               "share of the product)",
    "fixed_point": "a fixed-point product is mul/mmul + trunc_a of the output; the "
                   "update's weights are 0/1 integers, so its mmul needs no trunc",
    "division": "SPU f_div(a, b) = detail::div_goldschmidt_general "
                "(libspu/kernel/hal/fxp_base.cc), b of unknown sign, applied elementwise "
                "to the m x d numerators with the m counts broadcast (jnp num / den[:, None]). "
                "Counted per element: msb(b) = a2b + b2a (1 bit); mux for |b| = 1 mul_aa; "
                "highestOneBit = _prefix_or (ring.cc) = a2b + 6 and_bb (sequential); "
                "factor 2^-m to arithmetic = 1 b2a (multi-bit; SEMI2K table value, ABY3 "
                "B2AByPPA: 3+log(K) rounds, log(K)*K + 3K bits); "
                "reciprocal_goldschmidt_normalized_approx with 2 iterations = 5 fxp muls "
                "(c = b*factor, c*w, r*(1+e), e*e, r*(1+e)); then r*a and r*factor (2 fxp "
                "muls); final sign mux (1 mul_aa). Totals: 2 a2b, 2 b2a, 6 and_bb, "
                "9 mul_aa, 7 trunc_a. Critical path: a2b+b2a, mul, a2b, 6 and_bb, b2a, "
                "6 x (mul+trunc) (e*e runs beside r*(1+e)), mul",
    "per_iteration": "ours: step totals / reported iterations. With normal stopping the "
                     "loop makes one pass more than it reports (the last pass checks the "
                     "last update and stops), so ours is slightly over-counted "
                     "(by at most 1/iterations)",
}


# ---------------------------------------------------------------- SPU model
def _log_n(n: int) -> int:
    return max(1, math.ceil(math.log2(n)))


def kernels(protocol: str, n: int) -> dict:
    """Per element, per party: (rounds, bits) of each SPU kernel."""
    if protocol == "SEMI2K":
        ln = _log_n(n)
        return {
            "a2b": ((LOG_K + 1) * ln, (2 * LOG_K + 1) * 2 * K * (n - 1) * (n - 1)),
            "b2a": (1, K * (n - 1)),
            "b2a_multibit": (1, K * (n - 1)),
            "a2p": (1, K * (n - 1)),
            "mul_aa": (1, K * 2 * (n - 1)),
            "trunc_a": (1, K * (n - 1)),
            "and_bb": (1, K * 2 * (n - 1)),
        }
    if protocol == "ABY3":
        assert n == 3
        return {
            "a2b": (LOG_K + 2, LOG_K * K + 2 * K),
            "b2a": (2, 3 * K),                                  # B2AByOT, 1-bit input
            "b2a_multibit": (3 + LOG_K, LOG_K * K + 3 * K),     # B2AByPPA
            "a2p": (1, K),
            "mul_aa": (1, K),
            "trunc_a": (3, 4 * K),
            "and_bb": (1, K),
        }
    raise ValueError(protocol)


def mmul_bits(protocol: str, n: int, m: int, k: int, cols: int) -> int:
    """(m x k) @ (k x cols), per party."""
    if protocol == "SEMI2K":
        return K * (n - 1) * (m + cols) * k
    return K * m * cols


def spu_model(protocol: str, n: int, m: int, d: int, N: int, J: int) -> dict:
    kk = kernels(protocol, n)
    r = lambda name: kk[name][0]          # noqa: E731
    b = lambda name: kk[name][1]          # noqa: E731
    steps: dict = {}

    def put(step, bits_pp, rounds, model):
        steps[step] = {"bytes": int(round(bits_pp * n / 8)), "rounds": int(rounds),
                       "model": model}

    # distance: (m x d) @ (d x N) + trunc of m x N; |C|^2: m x d mul + trunc (in parallel)
    mm = mmul_bits(protocol, n, m, d, N)
    bits = mm + b("trunc_a") * m * N + (b("mul_aa") + b("trunc_a")) * m * d
    mm_f = ("K*(N-1)*(m+n)*k" if protocol == "SEMI2K" else "K*m*n")
    put("distance", bits, 1 + r("trunc_a"),
        f"mmul_aa[{mm_f}; (m x k)@(k x n) = ({m} x {d})@({d} x {N})] + trunc_a x {m * N} "
        f"+ (mul_aa + trunc_a) x {m * d} (|C|^2); rounds: mmul || mul, then trunc_a "
        f"= 1 + {r('trunc_a')}")

    # kernel: sign test on m x N values + 4 m d small checks
    e = m * N + 4 * m * d
    put("kernel", (b("a2b") + b("b2a")) * e, r("a2b") + r("b2a"),
        f"(a2b + b2a) x {e} (= m*N + 4*m*d = {m}*{N} + 4*{m}*{d}); rounds a2b + b2a = "
        f"{r('a2b')} + {r('b2a')}")
    if protocol == "SEMI2K" and n == 2:
        # SPU's source also has a 2PC-only msb_a2b kernel (semi2k/conversion.h:
        # log(K)+1 rounds, 5K bits) that the table does not list
        steps["kernel"]["alt_2pc_msb_a2b"] = {
            "bytes": int(round((5 * K + b("b2a")) * e * n / 8)),
            "rounds": LOG_K + 1 + r("b2a"),
            "model": f"(msb_a2b[5K] + b2a) x {e}: SPU's 2PC msb kernel instead of a2b"}

    # update: (m x N) @ (N x d) with 0/1 integer weights, no trunc; counts are local sums
    put("update", mmul_bits(protocol, n, m, N, d), 1,
        f"mmul_aa[{mm_f}; ({m} x {N})@({N} x {d})], 0/1 weights: no trunc_a; "
        f"row sums local")

    # division: SPU f_div (div_goldschmidt_general) on m x d elements
    e = m * d
    counts = {"a2b": 2, "b2a": 1, "b2a_multibit": 1, "and_bb": AND_ROUNDS,
              "mul_aa": 9, "trunc_a": 7}
    bits = sum(c * b(name) for name, c in counts.items()) * e
    rounds = (2 * r("a2b") + r("b2a") + r("b2a_multibit") + AND_ROUNDS * r("and_bb")
              + 8 * r("mul_aa") + 6 * r("trunc_a"))
    put("division", bits, rounds,
        f"SPU f_div on m*d = {e} elements: (2 a2b + 1 b2a(1 bit) + 1 b2a(multi-bit) "
        f"+ {AND_ROUNDS} and_bb + 9 mul_aa + 7 trunc_a) x {e}; rounds 2 a2b + 2 b2a + "
        f"{AND_ROUNDS} and_bb + 8 mul_aa + 6 trunc_a; Goldschmidt iters "
        f"{GOLDSCHMIDT_ITERS}")

    # stop: open 2 values
    put("stop", b("a2p") * 2, r("a2p"), "a2p x 2")

    total = {"bytes": sum(s["bytes"] for s in steps.values()),
             "rounds": sum(s["rounds"] for s in steps.values())}
    return {"protocol": protocol, "per_iteration": steps, "total_per_iteration": total,
            "per_element_kernels": {k_: {"rounds": v[0], "bits_per_party": v[1]}
                                    for k_, v in kk.items()}}


# ---------------------------------------------------------------- ours
def settings(quick: bool, big: bool) -> dict:
    if quick:
        plan = [(2, 100)]
    else:
        plan = [(2, 100), (2, 1000), (3, 100), (3, 1000), (4, 1000)]
        if big:
            plan.append((2, 10000))
    return {f"p{p}_n{n}": {"parties": p, "points": n} for p, n in plan}


def cli_args(parties: int, points: int) -> list:
    return ["--points", str(points), "--parties", str(parties), *BASE_ARGS]


def run_cli(parties: int, points: int, timeout: float) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    env = dict(os.environ, PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "meanshift_cli.simulate", *cli_args(parties, points),
           "--json", out]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr[-800:]}")
    with open(out) as fh:
        r = json.load(fh)
    os.unlink(out)
    return r


def division_J(points: int) -> int:
    """Thresholds per centroid of the division's sign tests (flat kernel: den
    is a count, so they start at 2^COUNT_EXP_LO)."""
    from secure_meanshift.mpc.division import COUNT_EXP_LO, thresholds
    return len(thresholds(float(points), COUNT_EXP_LO)) - 1


def ours_from(report: dict) -> dict:
    it = max(1, int(report["iterations"]))
    steps = report["communication"].get("steps")
    if not steps:
        raise RuntimeError("the CLI's --json report has no communication.steps "
                           "(per-step bytes and rounds): this engine predates them")
    per_it, per_job = {}, {}
    for name, v in steps.items():
        row = {k_: int(v.get(k_, 0)) for k_ in ("bytes", "dealer_bytes", "rounds")}
        if name in ITER_STEPS:
            per_it[name] = {k_: x / it for k_, x in row.items()}
        elif name in JOB_STEPS or any(row.values()):
            per_job[name] = row
    for name in ITER_STEPS:
        per_it.setdefault(name, {"bytes": 0.0, "dealer_bytes": 0.0, "rounds": 0.0})
    total = {k_: sum(per_it[s][k_] for s in ITER_STEPS)
             for k_ in ("bytes", "dealer_bytes", "rounds")}
    comm = report["communication"]
    return {"per_iteration": {s: per_it[s] for s in ITER_STEPS}, "per_job": per_job,
            "total_per_iteration": total,
            "job_totals": {"bytes": comm["bytes"], "dealer_bytes": comm.get("dealer_bytes", 0),
                           "rounds": comm["rounds"]}}


def _ratio(a: float, b: float):
    return round(a / b, 4) if b else None


def build(name: str, s: dict, report: dict, wall: float) -> dict:
    n, N = s["parties"], s["points"]
    J = division_J(N)
    ours = ours_from(report)
    protocol = "ABY3" if n == 3 else "SEMI2K"
    spu = spu_model(protocol, n, M_DUSTS, DIM, N, J)
    row = {"parties": n, "points": N, "m": M_DUSTS, "d": DIM, "J": J,
           "iterations": int(report["iterations"]), "wall_s": round(wall, 2),
           "provider": report.get("provider"), "transport": report.get("transport"),
           "ours": ours, "spu_model": spu}
    ot, st = ours["total_per_iteration"], spu["total_per_iteration"]
    row["ratio_bytes"] = _ratio(ot["bytes"], st["bytes"])
    row["ratio_bytes_incl_dealer"] = _ratio(ot["bytes"] + ot["dealer_bytes"], st["bytes"])
    row["ratio_rounds"] = _ratio(ot["rounds"], st["rounds"])
    row["ratio_bytes_per_step"] = {
        k_: _ratio(ours["per_iteration"][k_]["bytes"], spu["per_iteration"][k_]["bytes"])
        for k_ in ITER_STEPS}
    if n == 3:      # SEMI2K also runs 3 parties: its figures beside ABY3's
        alt = spu_model("SEMI2K", n, M_DUSTS, DIM, N, J)
        row["spu_model_semi2k"] = alt
        row["ratio_bytes_semi2k"] = _ratio(ot["bytes"], alt["total_per_iteration"]["bytes"])
        row["ratio_rounds_semi2k"] = _ratio(ot["rounds"],
                                            alt["total_per_iteration"]["rounds"])
    return row


# ---------------------------------------------------------------- output
def _fmt_b(x: float) -> str:
    for unit, f in (("MB", 1e6), ("kB", 1e3)):
        if x >= f:
            return f"{x / f:.1f} {unit}"
    return f"{x:.0f} B"


def print_table(data: dict) -> None:
    for name, row in data["settings"].items():
        spu = row["spu_model"]
        print(f"\n{name}: {row['parties']} parties, N = {row['points']}, m = {row['m']}, "
              f"d = {row['d']}, J = {row['J']}, {row['iterations']} iterations "
              f"(SPU model: {spu['protocol']})")
        print(f"  {'step':<9} {'ours bytes':>11} {'ours dealer':>12} {'SPU bytes':>11} "
              f"{'ours rnd':>9} {'SPU rnd':>8}")
        for s in ITER_STEPS + ["total"]:
            o = (row["ours"]["total_per_iteration"] if s == "total"
                 else row["ours"]["per_iteration"][s])
            p = spu["total_per_iteration"] if s == "total" else spu["per_iteration"][s]
            print(f"  {s:<9} {_fmt_b(o['bytes']):>11} {_fmt_b(o['dealer_bytes']):>12} "
                  f"{_fmt_b(p['bytes']):>11} {o['rounds']:>9.1f} {p['rounds']:>8d}")
        print(f"  ratio ours/SPU: bytes {row['ratio_bytes']}, "
              f"incl. dealer {row['ratio_bytes_incl_dealer']}, rounds {row['ratio_rounds']}")


def plot(data: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = list(data["settings"].items())
    fig, axes = plt.subplots(len(rows), 2, figsize=(13, 3.2 * len(rows)), squeeze=False)
    cats = ITER_STEPS + ["total"]
    x = np.arange(len(cats))
    for i, (name, row) in enumerate(rows):
        o, p = row["ours"], row["spu_model"]
        get = lambda src, s, k_: (src["total_per_iteration"][k_] if s == "total"  # noqa: E731
                                  else src["per_iteration"][s][k_])
        ax = axes[i][0]
        series = [("ours, between parties", [get(o, s, "bytes") for s in cats], "tab:blue"),
                  ("ours, from dealer", [get(o, s, "dealer_bytes") for s in cats], "tab:cyan"),
                  (f"SPU model ({p['protocol']})", [get(p, s, "bytes") for s in cats],
                   "tab:orange")]
        w = 0.27
        for j, (lab, vals, col) in enumerate(series):
            ax.bar(x + (j - 1) * w, [v if v > 0 else np.nan for v in vals], w, label=lab,
                   color=col)
        ax.set_yscale("log")
        ax.set_xticks(x, cats)
        ax.set_ylabel("bytes / iteration")
        ax.set_title(f"{name}: {row['parties']} parties, {row['points']} points, "
                     f"{row['iterations']} it. — bytes (sum over parties)", fontsize=9)
        ax.legend(fontsize=7)
        ax = axes[i][1]
        w = 0.38
        ax.bar(x - w / 2, [get(o, s, "rounds") or np.nan for s in cats], w,
               label="ours", color="tab:blue")
        ax.bar(x + w / 2, [get(p, s, "rounds") or np.nan for s in cats], w,
               label=f"SPU model ({p['protocol']})", color="tab:orange")
        ax.set_yscale("log")
        ax.set_xticks(x, cats)
        ax.set_ylabel("rounds / iteration")
        ax.set_title(f"{name}: rounds (busiest party)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 parties, 100 points only")
    ap.add_argument("--big", action="store_true", help="also 10,000 points, 2 parties")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--timeout", type=float, default=1800.0)
    args = ap.parse_args(argv)

    os.makedirs(args.out, exist_ok=True)
    data = {"settings": {},
            "command": ("PYTHONPATH=<repo> python -m meanshift_cli.simulate --points N "
                        "--parties P " + " ".join(BASE_ARGS) + " --json OUT.json"),
            "notes": MODEL_NOTES}
    for name, s in settings(args.quick, args.big).items():
        print(f"running {name} ...", flush=True)
        t0 = time.perf_counter()
        report = run_cli(s["parties"], s["points"], args.timeout)
        data["settings"][name] = build(name, s, report, time.perf_counter() - t0)
    with open(os.path.join(args.out, "cost_table.json"), "w") as fh:
        json.dump(data, fh, indent=1)
    plot(data, os.path.join(args.out, "cost_table.png"))
    print_table(data)
    print(f"\nwrote {os.path.join(args.out, 'cost_table.json')} and cost_table.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
