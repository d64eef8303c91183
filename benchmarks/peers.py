"""This engine against SecretFlow SPU on the same mean-shift job, side by side.

    .venv/bin/python benchmarks/peers.py --setup            # SPU's own venv (once)
    .venv/bin/python benchmarks/peers.py --quick            # 100 and 1,000 points, LAN + WAN
    .venv/bin/python benchmarks/peers.py [--repeats 3]      # the full table (100k: long)
    .venv/bin/python benchmarks/peers.py --wan --rtt-ms 40 --rate 100mbit

Both engines run as a user runs them, every party its own OS process on
127.0.0.1 TCP links:

* ours: the ``secure-meanshift simulate`` CLI of this checkout (--summary exact,
  its own --json report: s/iteration, bytes between parties, dealer bytes);
* SPU: benchmarks/peers_spu_job.py with spu==0.9.5 in benchmarks/.venv-spu
  (made by --setup, or on the first run; the project never imports spu),
  SEMI2K for 2 parties, ABY3 for 3, FM64, one brpc process per party; the same
  flat-kernel mean-shift as a jax function compiled by SPU, on the same points
  (this project's generator and 2^-16 grid) and the same dust rows, for a fixed
  number of iterations. Bytes per iteration come from SPU's link statistics
  (enable_pphlo_profile's "Link details" of each Run), summed over parties.

Settings run round-robin (every repeat: each setting, each mode, each engine);
the median over --repeats is kept. WAN mode: every run gets a fresh network
namespace (unshare -n) whose loopback has ``tc netem delay RTT/2 rate RATE``,
so every link of both engines sees the round-trip time RTT; each namespace's
delay is checked with a timed TCP round trip before the run (recorded).

Writes --out/peers.json and peers.png (ratios ours / SPU; below 1: ours is
cheaper).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SPU_VENV = os.path.join(HERE, ".venv-spu")
SPU_PY = os.path.join(SPU_VENV, "bin", "python")
SPU_JOB = os.path.join(HERE, "peers_spu_job.py")
SPU_PIN = "spu==0.9.5"

BASE_ARGS = ["--centers", "8", "--bandwidth", "0.1", "--seeding", "dust", "--dust", "8",
             "--summary", "exact", "--no-sklearn", "--quiet"]
BANDWIDTH, DUST, CENTERS = 0.1, 8, 8
SPU_ITERATIONS = 5          # fixed, no early stopping (as SPU's own k-means)


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- settings
def settings(quick: bool) -> dict:
    """name -> parties, points, extra CLI args for ours, SPU iterations (None: ours only)."""
    s = {}
    for n in (100, 1000, 10_000, 100_000):
        if quick and n > 1000:
            continue
        extra = ["--oblivious", "--max-iter", "3"] if n >= 100_000 else []
        s[f"2p_{n}"] = dict(parties=2, points=n, extra=extra,
                            spu_iterations=3 if n >= 100_000 else SPU_ITERATIONS)
    for n in (100, 1000):
        s[f"3p_{n}"] = dict(parties=3, points=n, extra=[], spu_iterations=SPU_ITERATIONS)
    s["4p_1000"] = dict(parties=4, points=1000, extra=[], spu_iterations=None)
    return s


# ---------------------------------------------------------------- SPU venv
def spu_ready() -> bool:
    if not os.path.exists(SPU_PY):
        return False
    r = subprocess.run([SPU_PY, "-c", "import spu, numpy, jax"], capture_output=True)
    return r.returncode == 0


def setup_spu() -> None:
    """benchmarks/.venv-spu with spu==0.9.5 (and numpy); it brings its own jax."""
    if not os.path.exists(SPU_PY):
        log(f"creating {SPU_VENV}")
        subprocess.run(["python3", "-m", "venv", SPU_VENV], check=True)
    log(f"installing {SPU_PIN} numpy into {SPU_VENV}")
    subprocess.run([SPU_PY, "-m", "pip", "install", "-q", SPU_PIN, "numpy"], check=True)
    if not spu_ready():
        raise SystemExit(f"{SPU_VENV}: spu does not import after the install")


def spu_version() -> str:
    r = subprocess.run([SPU_PY, "-c", "import spu, jax; print(spu.__version__, jax.__version__)"],
                       capture_output=True, text=True)
    v = r.stdout.split()
    return {"spu": v[0], "jax": v[1]} if len(v) == 2 else {"spu": "?", "error": r.stderr[-300:]}


# ---------------------------------------------------------------- processes
def run_group(cmd: list, timeout: float, env: dict = None, cwd: str = None,
              stdout=subprocess.PIPE, stderr=subprocess.PIPE) -> subprocess.CompletedProcess:
    """Run cmd in its own session; on timeout kill that process group (ours only)."""
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=stdout, stderr=stderr,
                         text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise RuntimeError(f"timed out after {timeout:.0f} s: {' '.join(cmd[:6])} ...")
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def netns_prefix(wan: dict, check_path: str) -> list:
    """Command prefix: a fresh network namespace with the WAN profile on lo."""
    return ["unshare", "-n", "--", sys.executable, os.path.abspath(__file__), "--_netns",
            json.dumps(wan), check_path, "--"]


def free_ports(k: int) -> list:
    socks = []
    for _ in range(k):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


# ---------------------------------------------------------------- WAN namespace
def _tcp_check(n_pings: int = 7, bulk_bytes: int = 8 << 20) -> dict:
    """Median TCP round trip of 1 byte and the rate of a bulk transfer on 127.0.0.1."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve():
        c, _ = srv.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(n_pings):
            c.sendall(c.recv(1))
        got = 0
        while got < bulk_bytes:
            got += len(c.recv(1 << 20))
        c.sendall(b"k")
        c.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    cl = socket.create_connection(("127.0.0.1", port))
    cl.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []
    for _ in range(n_pings):
        t = time.perf_counter()
        cl.sendall(b"x")
        cl.recv(1)
        rtts.append(time.perf_counter() - t)
    buf = b"\0" * (1 << 20)
    t = time.perf_counter()
    for _ in range(bulk_bytes >> 20):
        cl.sendall(buf)
    cl.recv(1)
    bulk = time.perf_counter() - t
    cl.close()
    th.join(5)
    srv.close()
    return {"tcp_rtt_ms_median": 1e3 * statistics.median(rtts),
            "tcp_rtt_ms_all": [round(1e3 * r, 3) for r in rtts],
            "bulk_mbit_s": 8 * bulk_bytes / bulk / 1e6, "bulk_bytes": bulk_bytes}


def parse_rate(text: str) -> float:
    """tc-style rate ('1gbit', '100mbit', '500kbit', '10mbps') -> bits per second."""
    t = text.strip().lower()
    units = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("gbps", 8e9), ("mbps", 8e6),
             ("kbps", 8e3), ("bit", 1.0), ("bps", 8.0)]
    for u, f in units:
        if t.endswith(u):
            return float(t[:-len(u)]) * f
    return float(t)


SO_ORIGINAL_DST = 80       # linux/netfilter_ipv4.h
PROXY_MARK = 0x5e7         # the proxy's own upstream connections skip the redirect


class DelayProxy:
    """Transparent TCP relay inside the namespace: iptables REDIRECTs every TCP
    connection to 127.0.0.1 here; each direction of each connection is a link
    of rate R bits/s and one-way delay D (FIFO: a chunk leaves once the link has
    sent the earlier ones, arrives D later), then goes on to the original
    destination. Used when the kernel has no netem."""

    def __init__(self, one_way_s: float, rate_bps: float):
        self.delay, self.rate = one_way_s, rate_bps
        self.connections = 0
        self.bytes = 0
        self.refused = 0          # upstream not listening yet: retried

    async def start(self):
        import asyncio

        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _pump(self, src, dst):
        import asyncio

        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()

        async def deliver():
            while True:
                due, data = await q.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    try:
                        dst.write_eof()
                    except (OSError, RuntimeError):
                        pass
                    return
                dst.write(data)
                await dst.drain()

        task = asyncio.create_task(deliver())
        free = 0.0
        try:
            while True:
                data = await src.read(1 << 20)
                now = loop.time()
                free = max(now, free) + 8.0 * len(data) / self.rate
                q.put_nowait((free + self.delay, data))
                self.bytes += len(data)
                if not data:
                    break
        except (ConnectionError, OSError):
            q.put_nowait((0.0, b""))
        try:
            await task
        except (ConnectionError, OSError):
            pass

    async def _handle(self, reader, writer):
        import asyncio

        sock = writer.get_extra_info("socket")
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        port, ip = int.from_bytes(raw[2:4], "big"), socket.inet_ntoa(raw[4:8])
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections += 1
        await asyncio.sleep(self.delay)              # the SYN crosses the link
        # The client's connect() has already succeeded (on this relay): a
        # destination not listening yet must not look like a dropped link, so
        # keep trying until it listens (as a client's own retry loop would).
        deadline = asyncio.get_running_loop().time() + 120.0
        while True:
            up = socket.socket()
            up.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, PROXY_MARK)
            up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(up, (ip, port))
                r2, w2 = await asyncio.open_connection(sock=up)
                break
            except ConnectionRefusedError:
                up.close()
                self.refused += 1
                if asyncio.get_running_loop().time() > deadline:
                    writer.close()
                    return
                await asyncio.sleep(0.02)
            except OSError:
                up.close()
                writer.close()
                return
        await asyncio.gather(self._pump(reader, w2), self._pump(r2, writer))
        for w in (w2, writer):
            try:
                w.close()
            except OSError:
                pass


def _has_netem() -> bool:
    r = subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                       capture_output=True)
    if r.returncode == 0:
        subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True)
    return r.returncode == 0


def netns_main(wan_json: str, check_path: str, cmd: list) -> int:
    """Inside `unshare -n`: lo up; netem on lo if the kernel has it (then exec
    cmd), else the DelayProxy for every TCP connection; check it; run cmd."""
    wan = json.loads(wan_json)
    half = wan["rtt_ms"] / 2.0
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    if not wan.get("force_proxy") and _has_netem():
        qdisc = ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", f"{half}ms",
                 "rate", wan["rate"], "limit", "100000"]
        subprocess.run(qdisc, check=True)
        check = {"emulation": "netem", "netem": " ".join(qdisc), **_tcp_check()}
        with open(check_path, "w") as fh:
            json.dump(check, fh)
        sys.stdout.flush()
        os.execvp(cmd[0], cmd)
    import asyncio

    async def run() -> int:
        proxy = DelayProxy(half / 1e3, parse_rate(wan["rate"]))
        port = await proxy.start()
        rule = ["iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.1",
                "-m", "mark", "!", "--mark", str(PROXY_MARK), "-j", "REDIRECT",
                "--to-ports", str(port)]
        subprocess.run(rule, check=True)
        loop = asyncio.get_running_loop()
        check = {"emulation": "delay proxy (kernel without netem): every TCP connection to "
                              "127.0.0.1 redirected (iptables nat REDIRECT) to a relay that "
                              "delays each direction by RTT/2 at the given rate per link",
                 "iptables": " ".join(rule),
                 **await loop.run_in_executor(None, _tcp_check)}
        base = (proxy.connections, proxy.bytes)
        proc = await asyncio.create_subprocess_exec(*cmd)
        rc = await proc.wait()
        check["connections_relayed"] = proxy.connections - base[0]
        check["bytes_relayed"] = proxy.bytes - base[1]
        check["upstream_refused_then_retried"] = proxy.refused
        with open(check_path, "w") as fh:
            json.dump(check, fh)
        return rc

    return asyncio.run(run())


# ---------------------------------------------------------------- data
def make_job_dir(root: str, name: str, parties: int, points: int, iterations: int) -> dict:
    """The points ours generates (same generator, seed, split and 2^-16 grid),
    one .npy per party, the public dust indices; and the numpy twin of the SPU job."""
    import numpy as np

    sys.path.insert(0, ROOT)
    from secure_meanshift.data import split_even, synthetic_blobs
    from secure_meanshift.params import dust_indices
    from secure_meanshift.data import quantise_points

    pts, _ = synthetic_blobs(points, CENTERS, 2, 0.03, 0)        # simulate's defaults
    parts = [quantise_points(p) for p in split_even(pts, parties, 0)]
    job = os.path.join(root, name)
    os.makedirs(job, exist_ok=True)
    for r, p in enumerate(parts):
        np.save(os.path.join(job, f"party{r}.npy"), p)
    idx = dust_indices(0, points, DUST)
    meta = {"world": parties, "dim": 2, "counts": [len(p) for p in parts],
            "dust_indices": idx.tolist(), "bandwidth": BANDWIDTH, "iterations": iterations}
    with open(os.path.join(job, "meta.json"), "w") as fh:
        json.dump(meta, fh)
    x = np.concatenate(parts)
    c = x[idx].copy()
    for _ in range(iterations):
        sq = (c * c).sum(1)[:, None] - 2.0 * c @ x.T + (x * x).sum(1)[None, :]
        w = (sq <= BANDWIDTH**2).astype(np.float64)
        den = w.sum(1, keepdims=True)
        c = np.where(den > 0.5, (w @ x) / np.maximum(den, 1.0), c)
    return {"dir": job, "numpy_centroids": c}


# ---------------------------------------------------------------- SPU runs
def spu_launch_main(job: str, result: str, timeout: float) -> int:
    """One SPU job: k party processes on fresh 127.0.0.1 ports (run inside the
    namespace in WAN mode). Writes the parties' reports to `result`."""
    with open(os.path.join(job, "meta.json")) as fh:
        world = json.load(fh)["world"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("PYTHONPATH", None)
    last = ""
    for attempt in range(2):                     # a port taken in between: pick again
        for r in range(world):
            try:
                os.unlink(os.path.join(job, f"spu_rank{r}.json"))
            except FileNotFoundError:
                pass
        ports = ",".join(map(str, free_ports(world)))
        procs = []
        for r in range(world):
            fh = open(os.path.join(job, f"party{r}.out"), "w")
            procs.append((subprocess.Popen([SPU_PY, SPU_JOB, "--job", job, "--rank", str(r),
                                            "--ports", ports], env=env, stdout=fh,
                                           stderr=subprocess.STDOUT), fh))
        deadline = time.monotonic() + timeout
        failed = None
        while any(p.poll() is None for p, _ in procs):
            bad = [r for r, (p, _) in enumerate(procs) if p.poll() not in (None, 0)]
            if bad or time.monotonic() > deadline:
                failed = f"party {bad[0]} exited {procs[bad[0]][0].returncode}" if bad \
                    else f"timed out after {timeout:.0f} s"
                break
            time.sleep(0.1)
        for p, fh in procs:            # the parties this launcher started, by handle
            if p.poll() is None:
                p.kill()
            p.wait()
            fh.close()
        if failed is None and any(p.returncode != 0 for p, _ in procs):
            failed = "exit codes " + ",".join(str(p.returncode) for p, _ in procs)
        if failed is None:
            outs = []
            for r in range(world):
                with open(os.path.join(job, f"spu_rank{r}.json")) as fh:
                    outs.append(json.load(fh))
            with open(result, "w") as fh:
                json.dump({"parties": outs, "ports": ports, "attempts": attempt + 1}, fh)
            return 0
        tail = ""
        for r in range(world):
            with open(os.path.join(job, f"party{r}.out"), errors="replace") as fh:
                tail += f"[party {r}] " + fh.read()[-600:] + "\n"
        last = f"{failed}\n{tail}"
    with open(result, "w") as fh:
        json.dump({"error": last}, fh)
    return 1


def summarise_spu(report: dict, numpy_centroids) -> dict:
    import numpy as np

    parties = report["parties"]
    secs = [p["seconds_per_iteration"] for p in parties]
    per_it = [max(v) for v in zip(*secs)]            # the slowest party, per iteration
    if "link_stats_per_run" in parties[0]:
        runs = [p["link_stats_per_run"][1:] for p in parties]     # [0] is the init run
        sent = [sum(r[i][0] for r in runs) for i in range(len(runs[0]))]
        recv = [sum(r[i][1] for r in runs) for i in range(len(runs[0]))]
        actions = [max(r[i][2] for r in runs) for i in range(len(runs[0]))]
    else:
        sent, recv, actions = [float("nan")], [float("nan")], [float("nan")]
    cents = np.asarray(parties[0]["centroids"])
    return {"s_per_iteration": float(np.mean(per_it)),
            "s_per_iteration_each": per_it,
            "bytes_per_iteration": float(np.mean(sent)),
            "bytes_per_iteration_each": sent,
            "recv_bytes_per_iteration": float(np.mean(recv)),
            "send_actions_per_iteration_max_party": float(np.mean(actions)),
            "iterations": len(per_it),
            "compile_s_max": max(p.get("compile_s", 0.0) for p in parties),
            "max_abs_error": float(np.abs(cents - numpy_centroids).max()),
            "centroids": cents.tolist(),
            "protocol": parties[0].get("protocol"), "field": parties[0].get("field"),
            "spu_mode": parties[0].get("mode")}


def run_spu(job: dict, mode: str, wan: dict, timeout: float, tmp: str) -> dict:
    fd, result = tempfile.mkstemp(suffix=".json", dir=tmp)
    os.close(fd)
    cmd = [sys.executable, os.path.abspath(__file__), "--_spu-launch", job["dir"], result,
           str(timeout)]
    check = None
    if mode == "wan":
        check = result + ".netns.json"
        cmd = netns_prefix(wan, check) + cmd
    t0 = time.perf_counter()
    res = run_group(cmd, timeout + 60)
    wall = time.perf_counter() - t0
    with open(result) as fh:
        rep = json.load(fh) if os.path.getsize(result) else {"error": res.stderr[-800:]}
    if "error" in rep or res.returncode != 0:
        raise RuntimeError(f"SPU job failed: {rep.get('error', res.stderr[-800:])}")
    out = summarise_spu(rep, job["numpy_centroids"])
    out["wall_s"] = wall
    if check:
        with open(check) as fh:
            out["netns_check"] = json.load(fh)
    return out


# ---------------------------------------------------------------- our runs
LOOP_STEPS = ("distance", "kernel", "update", "division", "stop")


def run_ours(s: dict, mode: str, wan: dict, timeout: float, tmp: str) -> dict:
    fd, out = tempfile.mkstemp(suffix=".json", dir=tmp)
    os.close(fd)
    args = BASE_ARGS + ["--points", str(s["points"]), "--parties", str(s["parties"]),
                        *s["extra"], "--timeout", "600", "--json", out]
    cmd = [os.path.join(ROOT, ".venv", "bin", "python"), "-m", "meanshift_cli.simulate", *args]
    if not os.path.exists(cmd[0]):
        cmd[0] = sys.executable
    check = None
    if mode == "wan":
        check = out + ".netns.json"
        cmd = netns_prefix(wan, check) + cmd
    env = dict(os.environ, PYTHONPATH=ROOT)
    t0 = time.perf_counter()
    res = run_group(cmd, timeout, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"ours failed ({res.returncode}): {res.stderr[-800:]}")
    with open(out) as fh:
        r = json.load(fh)
    n_it = max(1, len(r["timings"]["per_iteration"]))
    comm = r["communication"]
    o = {"s_per_iteration": r["timings"]["mean_iteration_s"],
         "bytes_per_iteration_job": comm["bytes"] / n_it,
         "dealer_bytes_per_iteration_job": comm.get("dealer_bytes", 0) / n_it,
         "iterations": len(r["timings"]["per_iteration"]),
         "rounds_per_iteration_job": comm.get("rounds", 0) / n_it,
         "max_abs_error": r["max_abs_error"], "provider": r.get("provider"),
         "transport": r.get("transport"), "wall_s": wall, "command": args[:-2]}
    steps = comm.get("steps")
    if steps and all(k in steps for k in ("kernel", "update")):
        # the iteration loop only (as SPU's figures): no input sharing, merge, reveal
        loop = [steps[k] for k in LOOP_STEPS if k in steps]
        o["bytes_per_iteration"] = sum(v["bytes"] for v in loop) / n_it
        o["dealer_bytes_per_iteration"] = sum(v["dealer_bytes"] for v in loop) / n_it
        o["bytes_basis"] = "iteration steps " + "+".join(k for k in LOOP_STEPS if k in steps)
        o["steps"] = steps
    else:
        o["bytes_per_iteration"] = o["bytes_per_iteration_job"]
        o["dealer_bytes_per_iteration"] = o["dealer_bytes_per_iteration_job"]
        o["bytes_basis"] = "whole job / iterations"
    o["total_bytes_per_iteration"] = o["bytes_per_iteration"] + o["dealer_bytes_per_iteration"]
    if check:
        with open(check) as fh:
            o["netns_check"] = json.load(fh)
    os.unlink(out)
    return o


# ---------------------------------------------------------------- report
NUM_KEYS_OURS = ("s_per_iteration", "bytes_per_iteration", "dealer_bytes_per_iteration",
                 "total_bytes_per_iteration", "bytes_per_iteration_job",
                 "dealer_bytes_per_iteration_job", "max_abs_error", "iterations")
NUM_KEYS_SPU = ("s_per_iteration", "bytes_per_iteration", "recv_bytes_per_iteration",
                "max_abs_error", "iterations", "compile_s_max")


def median_of(runs: list, keys) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[-1]["error"] if runs else "not run"}
    m = {k: statistics.median(r[k] for r in ok) for k in keys if k in ok[0]}
    for k in ("bytes_basis", "provider", "transport", "protocol", "field", "spu_mode",
              "command"):
        if k in ok[0]:
            m[k] = ok[0][k]
    m["repeats_ok"] = len(ok)
    if len(ok) < len(runs):
        m["errors"] = [r["error"] for r in runs if "error" in r]
    checks = [r["netns_check"]["tcp_rtt_ms_median"] for r in ok if "netns_check" in r]
    if checks:
        m["netns_tcp_rtt_ms_median"] = statistics.median(checks)
    return m


def ratios(ours: dict, spu: dict) -> dict:
    if "error" in ours or "error" in spu:
        return {}
    return {"time": ours["s_per_iteration"] / spu["s_per_iteration"],
            "bytes_between_parties": ours["bytes_per_iteration"] / spu["bytes_per_iteration"],
            "bytes_incl_dealer": ours["total_bytes_per_iteration"] / spu["bytes_per_iteration"]}


def git_head() -> str:
    """The checkout's commit (the engine may change under a long run: start and end kept)."""
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()


def machine() -> dict:
    info = {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "when": time.strftime("%Y-%m-%d %H:%M:%S"),
            "note": "one shared, noisy machine: every party of both engines (and ours' "
                    "dealer) share its cores; compare the figures of one run only"}
    try:
        info["load_average_at_start"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def plot(table: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [n for n in table if any(table[n].get(m, {}).get("ratios") for m in ("lan", "wan"))]
    bars = [("time", "lan", "time, LAN", "tab:blue", None),
            ("time", "wan", "time, WAN", "tab:blue", "//"),
            ("bytes_between_parties", "lan", "bytes between parties, LAN", "tab:orange", None),
            ("bytes_between_parties", "wan", "bytes between parties, WAN", "tab:orange", "//"),
            ("bytes_incl_dealer", "lan", "bytes incl. dealer, LAN", "tab:red", None),
            ("bytes_incl_dealer", "wan", "bytes incl. dealer, WAN", "tab:red", "//")]
    bars = [b for b in bars if any(table[n].get(b[1], {}).get("ratios") for n in names)]
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(names) + 3), 4.8))
    x = np.arange(len(names))
    w = 0.8 / max(1, len(bars))
    for i, (key, mode, label, colour, hatch) in enumerate(bars):
        v = [table[n].get(mode, {}).get("ratios", {}).get(key, np.nan) for n in names]
        ax.bar(x + i * w, v, w, label=label, color=colour, hatch=hatch,
               edgecolor="white" if hatch else None, alpha=0.9 if hatch else 1.0)
    ax.axhline(1.0, color="black", lw=1)
    ax.set_xticks(x + 0.4 - w / 2)
    ax.set_xticklabels([f"{table[n]['parties']} parties, {table[n]['points']:,} points"
                        for n in names], fontsize=8)
    ax.set_yscale("log")
    vals = [table[n][m]["ratios"][k] for n in names for m in ("lan", "wan")
            if table[n].get(m, {}).get("ratios") for k in table[n][m]["ratios"]]
    if vals:
        ax.set_ylim(min(min(vals), 1.0) / 1.3, max(max(vals), 1.0) * 1.3)
    ax.set_ylabel("ours / SPU (below 1: ours cheaper)")
    ax.set_title("secure mean-shift: this engine vs SecretFlow SPU 0.9.5, per iteration")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_netns":              # internal: inside `unshare -n`
        return netns_main(argv[1], argv[2], argv[4:])
    if argv and argv[0] == "--_spu-launch":        # internal: one SPU job
        return spu_launch_main(argv[1], argv[2], float(argv[3]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setup", action="store_true", help="(re)create the SPU venv and exit")
    ap.add_argument("--quick", action="store_true", help="only 100 and 1,000 points")
    ap.add_argument("--repeats", type=int, default=1, help="round-robin repeats (median kept)")
    ap.add_argument("--mode", choices=["lan", "wan", "both"], default="both")
    ap.add_argument("--wan", action="store_true", help="same as --mode wan")
    ap.add_argument("--rtt-ms", type=float, default=20.0, help="WAN round-trip time (ms)")
    ap.add_argument("--rate", default="1gbit", help="WAN rate, tc syntax (default 1gbit)")
    ap.add_argument("--only", help="comma-separated setting names (e.g. 2p_1000,3p_100)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--plot-only", action="store_true",
                    help="redraw peers.png from --out/peers.json and exit")
    args = ap.parse_args(argv)

    if args.plot_only:
        with open(os.path.join(args.out, "peers.json")) as fh:
            plot(json.load(fh)["table"], os.path.join(args.out, "peers.png"))
        return 0
    if args.setup:
        setup_spu()
        log(f"SPU venv ready: {spu_version()}")
        return 0
    if not spu_ready():
        setup_spu()
    modes = ["wan"] if args.wan else (["lan", "wan"] if args.mode == "both" else [args.mode])
    wan = {"rtt_ms": args.rtt_ms, "rate": args.rate}
    if "wan" in modes:
        if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("tc")):
            raise SystemExit("--mode wan needs root, unshare and tc (a network namespace "
                             "with netem on its loopback)")
    sets = settings(args.quick)
    if args.only:
        keep = args.only.split(",")
        sets = {k: v for k, v in sets.items() if k in keep}
    tmp = tempfile.mkdtemp(prefix="peers-")
    jobs = {name: make_job_dir(tmp, name, s["parties"], s["points"], s["spu_iterations"])
            for name, s in sets.items() if s["spu_iterations"]}

    t_start = time.perf_counter()
    head_at_start = git_head()
    runs: dict = {n: {m: {"ours": [], "spu": []} for m in modes} for n in sets}
    for rep in range(args.repeats):
        for name, s in sets.items():
            for mode in modes:
                engines = ["ours", "spu"] if name in jobs else ["ours"]
                for eng in engines:
                    try:
                        r = (run_ours(s, mode, wan, args.timeout, tmp) if eng == "ours"
                             else run_spu(jobs[name], mode, wan, args.timeout, tmp))
                        extra = (f"  dealer {r['dealer_bytes_per_iteration'] / 1e6:6.3f} MB/it"
                                 if eng == "ours" else "")
                        log(f"[{rep + 1}/{args.repeats}] {name:<9} {mode} {eng:<4} "
                            f"{r['s_per_iteration']:8.4f} s/it  "
                            f"{r['bytes_per_iteration'] / 1e6:8.3f} MB/it{extra}  "
                            f"err {r['max_abs_error']:.1e}  ({r['iterations']} it, "
                            f"{r['wall_s']:.0f} s wall)")
                    except Exception as exc:  # noqa: BLE001 - record it, run the rest
                        r = {"error": f"{type(exc).__name__}: {exc}"}
                        log(f"[{rep + 1}/{args.repeats}] {name:<9} {mode} {eng:<4} "
                            f"FAILED: {r['error'][:400]}")
                    runs[name][mode][eng].append(r)

    table: dict = {}
    for name, s in sets.items():
        row = {"parties": s["parties"], "points": s["points"],
               "ours_extra_args": s["extra"], "spu_iterations": s["spu_iterations"]}
        for mode in modes:
            ours = median_of(runs[name][mode]["ours"], NUM_KEYS_OURS)
            m = {"ours": ours}
            if name in jobs:
                spu = median_of(runs[name][mode]["spu"], NUM_KEYS_SPU)
                m["spu"] = spu
                m["ratios"] = ratios(ours, spu)
            row[mode] = m
        table[name] = row
    scaling = {}
    if "4p_1000" in table and "2p_1000" in table:
        for mode in modes:
            a = table["4p_1000"][mode]["ours"]
            b = table["2p_1000"][mode]["ours"]
            if "error" not in a and "error" not in b:
                scaling[mode] = {"time": a["s_per_iteration"] / b["s_per_iteration"],
                                 "bytes_incl_dealer": a["total_bytes_per_iteration"]
                                 / b["total_bytes_per_iteration"]}
    spu_modes = {r.get("spu_mode") for n in runs for m in runs[n].values() for r in m["spu"]
                 if "error" not in r}
    checks = [r["netns_check"] for n in runs for m in runs[n].values() for rs in m.values()
              for r in rs if "netns_check" in r]
    emulations = {c["emulation"].split(" (")[0] for c in checks}
    checks_rtt = {"median": statistics.median(c["tcp_rtt_ms_median"] for c in checks),
                  "min": min(c["tcp_rtt_ms_median"] for c in checks),
                  "max": max(c["tcp_rtt_ms_median"] for c in checks),
                  "bulk_mbit_s_median": statistics.median(c["bulk_mbit_s"] for c in checks),
                  "runs": len(checks)} if checks else {}
    report = {
        "what": "secure mean-shift, this engine vs SecretFlow SPU, side by side (round-robin)",
        "command": " ".join([os.path.relpath(sys.executable, ROOT)
                             if sys.executable.startswith(ROOT) else sys.executable,
                             os.path.relpath(os.path.abspath(__file__), ROOT), *argv]),
        "git_head_at_start": head_at_start,
        "git_head": git_head(),
        "git_dirty_engine": bool(subprocess.run(
            ["git", "status", "--porcelain", "secure_meanshift"], cwd=ROOT,
            capture_output=True, text=True).stdout.strip()),
        "spu_version": spu_version(),
        "spu_mode": sorted(m for m in spu_modes if m),
        "modes": modes, "repeats": args.repeats, "quick": args.quick,
        "wan_profile": {**wan, "how": "a fresh network namespace per run (unshare -n), lo up; "
                        f"tc qdisc add dev lo root netem delay {args.rtt_ms / 2}ms rate "
                        f"{args.rate} if the kernel has netem, else a transparent relay "
                        "(iptables nat REDIRECT of every TCP connection to 127.0.0.1) that "
                        f"delays each direction of each link by {args.rtt_ms / 2} ms at "
                        f"{args.rate} per link direction",
                        "emulation_used": sorted(emulations),
                        "checks_tcp_rtt_ms": checks_rtt},
        "job": {"data": "synthetic_blobs(N, 8 centres, dim 2, spread 0.03, seed 0), "
                        "split_even(seed 0), quantised to 2^-16 (secure_meanshift)",
                "bandwidth": BANDWIDTH, "dust": DUST, "kernel": "flat",
                "dust_rows": "secure_meanshift.params.dust_indices(0, N, 8) of the "
                             "concatenated rows"},
        "ours_how": "python -m meanshift_cli.simulate " + " ".join(BASE_ARGS) +
                    " --points N --parties K [--oblivious --max-iter 3 at 100k]: default "
                    "provider (dealer) and transport (TLS); s/iteration = timings."
                    "mean_iteration_s (iterations until convergence, or 3 fixed at 100k); "
                    "bytes: communication.steps of the iteration loop (distance, kernel, "
                    "update, division, stop) / iterations when the report has steps, else "
                    "the whole job's bytes / iterations; dealer bytes separately",
        "spu_how": "benchmarks/peers_spu_job.py in benchmarks/.venv-spu: one OS process per "
                   "party, spu.libspu.link.create_brpc on 127.0.0.1, SEMI2K (2 parties) / ABY3 "
                   "(3 parties), FM64, default fxp (18 fraction bits), default beaver "
                   "(SEMI2K: trusted first party, no separate dealer traffic); jax function, "
                   "one Runtime.run per iteration, timed alone (compile and input sharing "
                   "excluded), s/iteration = mean over iterations of the slowest party; "
                   "bytes/iteration = sum over parties of 'total send bytes' from SPU's "
                   "link statistics (RuntimeConfig.enable_pphlo_profile -> 'Link details' "
                   "after each Run, yacl link Context::GetStats); error = max |SPU - numpy "
                   "twin of the same fixed-iteration job|",
        "ratio_definitions": {"time": "ours s/it / SPU s/it",
                              "bytes_between_parties": "ours bytes between parties / SPU bytes",
                              "bytes_incl_dealer": "(ours between parties + dealer) / SPU bytes"},
        "table": table,
        "ours_4p_over_2p_at_1000": scaling,
        "machine": machine(),
        "total_wall_s": time.perf_counter() - t_start,
        "runs": runs,
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "peers.json")
    with open(path, "w") as fh:
        json.dump(report, fh, indent=2)
    log(f"wrote {path}")
    try:
        plot(table, os.path.join(args.out, "peers.png"))
        log(f"wrote {os.path.join(args.out, 'peers.png')}")
    except Exception as exc:  # noqa: BLE001 - the JSON is the result; the plot a view
        log(f"no plot ({type(exc).__name__}: {exc})")
    print_table(table, modes, scaling)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def print_table(table: dict, modes: list, scaling: dict) -> None:
    log(f"\n{'setting':<9} {'mode':<4} {'ours s/it':>10} {'spu s/it':>10} {'t ratio':>8} "
        f"{'ours MB/it':>10} {'+dealer':>8} {'spu MB/it':>10} {'B ratio':>8} {'B+d ratio':>9}")
    for name, row in table.items():
        for mode in modes:
            m = row[mode]
            o, s, r = m["ours"], m.get("spu", {}), m.get("ratios", {})

            def f(d, k, scale=1.0, fmt="{:10.4f}"):
                return fmt.format(d[k] / scale) if k in d else f"{'-':>{len(fmt.format(0.0))}}"

            log(f"{name:<9} {mode:<4} {f(o, 's_per_iteration')} {f(s, 's_per_iteration')} "
                f"{f(r, 'time', fmt='{:8.2f}')} {f(o, 'bytes_per_iteration', 1e6, '{:10.3f}')} "
                f"{f(o, 'dealer_bytes_per_iteration', 1e6, '{:8.3f}')} "
                f"{f(s, 'bytes_per_iteration', 1e6, '{:10.3f}')} "
                f"{f(r, 'bytes_between_parties', fmt='{:8.2f}')} "
                f"{f(r, 'bytes_incl_dealer', fmt='{:9.2f}')}")
    for mode, v in scaling.items():
        log(f"ours 4 parties / 2 parties at 1,000 points ({mode}): time {v['time']:.2f}, "
            f"bytes incl. dealer {v['bytes_incl_dealer']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
